package measure

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/veil-runtime/veil/attestation/initdata"
	"github.com/veil-runtime/veil/attestation/measure/snp"
	"github.com/veil-runtime/veil/hypervisor"
	"github.com/veil-runtime/veil/hypervisor/qemu"
	"github.com/veil-runtime/veil/runtimeclass/install"
	"github.com/veil-runtime/veil/shim/config"
)

// ovmfFixture is a 4 KiB OVMF (AmdSev) tail with the kernel-hashes
// section, from the snp package's vectors.
const ovmfFixture = "snp/testdata/sev-snp-measure/ovmf_AmdSev_suffix.bin"

const testInitData = "version = \"0.1.0\"\nalgorithm = \"sha256\"\n\n[broker]\nurl = \"https://kbs.example\"\n"

// installed lays out what `veil install` writes for handler h under a
// temporary prefix: its rendered config, a kernel, an initrd, and (for
// snp) the firmware; the handler's init-data is set when withInitData.
func installed(t *testing.T, h string, withInitData bool) config.Config {
	t.Helper()
	prefix := t.TempDir()
	share := filepath.Join(prefix, "share", "veil")
	if err := os.MkdirAll(share, 0o755); err != nil {
		t.Fatal(err)
	}
	fw, err := os.ReadFile(ovmfFixture)
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"vmlinuz": []byte("kernel bytes"), "initrd.img": []byte("initrd bytes"), "OVMF-snp.fd": fw, "OVMF-tdx.fd": fw} {
		if err := os.WriteFile(filepath.Join(share, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	doc := install.HandlerConfig(prefix, h)
	if withInitData {
		id := filepath.Join(prefix, "initdata.toml")
		if err := os.WriteFile(id, []byte(testInitData), 0o644); err != nil {
			t.Fatal(err)
		}
		doc = []byte(strings.Replace(string(doc), "[confidential]\n", "[confidential]\ninitdata = \""+id+"\"\n", 1))
	}
	doc = append(doc, []byte("\n# a handler's own kernel parameter, measured like the rest\n")...)
	doc = []byte(strings.Replace(string(doc), "[hypervisor]\n", "[hypervisor]\nkernel_args = [\"veil.extra=1\"]\nvcpus = 2\n", 1))
	path := install.HandlerConfigPath(prefix, h)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, doc, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// argValue is the value after flag in QEMU's argument list.
func argValue(t *testing.T, args []string, flag string) string {
	t.Helper()
	i := slices.Index(args, flag)
	if i < 0 || i+1 >= len(args) {
		t.Fatalf("no %s in %q", flag, args)
	}
	return args[i+1]
}

// TestSameInputsAsTheDriver: the kernel, initrd, -append, firmware, vCPU
// count and -cpu that `veil measure` measures for a handler are those of
// the QEMU command line the driver builds for that handler's pods (the
// shim's config.Config.VM, the driver's LaunchFor and Args), and the SNP
// digest computed from that command line's files is the one Measure
// reports.
func TestSameInputsAsTheDriver(t *testing.T) {
	for _, h := range []string{"veil-snp", "veil-dev", "veil-tdx"} {
		t.Run(h, func(t *testing.T) {
			cfg := installed(t, h, true)
			in, err := HandlerInputs(cfg)
			if err != nil {
				t.Fatal(err)
			}
			doc := initdata.Digest([]byte(testInitData))
			// What the shim launches a pod without limits of this handler
			// with (pod.go, vmSize).
			vm := cfg.VM(doc[:], cfg.Hypervisor.VCPUs, cfg.Hypervisor.PodMemoryMiB(0))
			args := qemu.Args(qemu.LaunchFor(vm, hypervisor.AccelKVM, hypervisor.TransportVsock))
			if got := argValue(t, args, "-kernel"); got != in.Kernel {
				t.Errorf("-kernel %q, measure %q", got, in.Kernel)
			}
			if got := argValue(t, args, "-initrd"); got != in.Initrd {
				t.Errorf("-initrd %q, measure %q", got, in.Initrd)
			}
			if got := argValue(t, args, "-append"); got != in.Append {
				t.Errorf("-append %q, measure %q", got, in.Append)
			}
			if got := argValue(t, args, "-smp"); got != strconv.Itoa(int(in.VCPUs)) || got != "2" {
				t.Errorf("-smp %q, measure %d", got, in.VCPUs)
			}
			if got := argValue(t, args, "-cpu"); got != in.CPUType {
				t.Errorf("-cpu %q, measure %q", got, in.CPUType)
			}
			if !strings.Contains(in.Append, "veil.extra=1") || !strings.Contains(in.Append, "veil.tee=") {
				t.Errorf("append %q lacks the handler's and the TEE's parameters", in.Append)
			}
			if in.InitDataDigest != hex.EncodeToString(doc[:]) {
				t.Errorf("init-data digest %q, want %x", in.InitDataDigest, doc)
			}
			switch h {
			case "veil-dev":
				if !strings.Contains(in.Append, "veil.initdata_digest="+hex.EncodeToString(doc[:])) {
					t.Errorf("veil-dev append %q lacks the init-data digest", in.Append)
				}
			case "veil-snp":
				if got := argValue(t, args, "-bios"); got != in.Firmware {
					t.Errorf("-bios %q, measure %q", got, in.Firmware)
				}
				if strings.Contains(in.Append, "initdata_digest") {
					t.Errorf("snp append %q carries the init-data digest (it belongs in HOSTDATA)", in.Append)
				}
				in.CPUType = "EPYC-Milan"
				r, err := Measure(in)
				if err != nil {
					t.Fatal(err)
				}
				// The digest of the driver's command line, from its files.
				read := func(p string) []byte {
					b, err := os.ReadFile(p)
					if err != nil {
						t.Fatal(err)
					}
					return b
				}
				fw := read(argValue(t, args, "-bios"))
				m, _ := snp.ParseMetadata(fw)
				seed, _ := snp.OVMFDigest(fw)
				hashes := snp.HashKernel(read(argValue(t, args, "-kernel")), read(argValue(t, args, "-initrd")), argValue(t, args, "-append"))
				sig, _ := snp.CPUModelSig("EPYC-Milan")
				want, err := snp.Launch{Firmware: seed, Metadata: m, Kernel: &hashes, VCPUs: 2, VCPUSig: sig, GuestFeatures: 1}.Digest()
				if err != nil {
					t.Fatal(err)
				}
				if r.SNP.Measurement != hex.EncodeToString(want[:]) {
					t.Errorf("Measure %s, digest of the driver's command line %x", r.SNP.Measurement, want)
				}
			case "veil-tdx":
				if got := argValue(t, args, "-bios"); got != in.Firmware {
					t.Errorf("-bios %q, measure %q", got, in.Firmware)
				}
				if got := argValue(t, args, "-m"); got != strconv.Itoa(int(in.MemoryMiB))+"M" || in.MemoryMiB != config.DefaultPodMemoryMiB {
					t.Errorf("-m %q, measure %d MiB; want the default pod size %d MiB", got, in.MemoryMiB, config.DefaultPodMemoryMiB)
				}
				// The values themselves need a real (EFI stub) kernel: the
				// VM tier's TestMeasureHardwareCommandLines computes them
				// from the guest image; here the fake firmware is refused.
				if _, err := Measure(in); err == nil || !strings.Contains(err.Error(), "measuring the TDX launch") {
					t.Errorf("TDX with a kernel that is not a PE image: %v", err)
				}
			}
		})
	}
}

// A handler's measured value must change with every input it covers.
func TestSNPDigestCoversInputs(t *testing.T) {
	cfg := installed(t, "veil-snp", false)
	in, err := HandlerInputs(cfg)
	if err != nil {
		t.Fatal(err)
	}
	in.CPUType = "EPYC-v4"
	base, err := Measure(in)
	if err != nil {
		t.Fatal(err)
	}
	// The algorithm itself is checked against the published vectors in
	// package snp; here each input must move the value.
	if base.SNP.Measurement == "" || base.Inputs.InitDataDigest != "" {
		t.Fatalf("result %+v", base)
	}
	for name, change := range map[string]func(*Inputs){
		"vcpus":    func(in *Inputs) { in.VCPUs = 3 },
		"append":   func(in *Inputs) { in.Append += " x" },
		"cpu":      func(in *Inputs) { in.CPUType = "EPYC-Genoa" },
		"features": func(in *Inputs) { in.GuestFeatures = 0x21 },
		"initrd":   func(in *Inputs) { in.Initrd = in.Kernel },
	} {
		c := in
		change(&c)
		r, err := Measure(c)
		if err != nil {
			t.Fatal(err)
		}
		if r.SNP.Measurement == base.SNP.Measurement {
			t.Errorf("changing %s left the measurement %s", name, r.SNP.Measurement)
		}
	}
	noSig := in
	noSig.CPUType = HostCPU
	if _, err := Measure(noSig); err == nil || !strings.Contains(err.Error(), "family, model and stepping") {
		t.Errorf("cpu host without a signature: %v", err)
	}
	igvm := in
	igvm.Firmware = "/x/f.igvm"
	if _, err := SNP(igvm, nil, nil, nil); err == nil || !strings.Contains(err.Error(), "IGVM") {
		t.Errorf("IGVM firmware: %v", err)
	}
}

func TestHostVCPUSig(t *testing.T) {
	milan := "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\nmodel name\t: AMD EPYC 7763 64-Core Processor\nstepping\t: 1\n\nprocessor\t: 1\nvendor_id\t: GenuineIntel\n"
	got, err := HostVCPUSig(milan)
	if err != nil || got != 0xA00F11 {
		t.Errorf("HostVCPUSig(Milan) = %#x, %v, want 0xa00f11", got, err)
	}
	for name, info := range map[string]string{
		"intel":      "vendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 143\nstepping\t: 8\n",
		"no model":   "vendor_id\t: AuthenticAMD\ncpu family\t: 25\nstepping\t: 1\n",
		"empty file": "",
	} {
		if _, err := HostVCPUSig(info); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestManifestCheck(t *testing.T) {
	cfg := installed(t, "veil-snp", false)
	in, _ := HandlerInputs(cfg)
	in.CPUType = "EPYC-v4"
	r, err := Measure(in)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := ReadManifest(in.Kernel); ok || err != nil {
		t.Fatalf("no manifest: ok %v, %v", ok, err)
	}
	sum := func(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }
	write := func(initrdSum string) {
		doc := `{"artifacts": {"vmlinuz": {"sha256": "` + sum("kernel bytes") + `", "size": 12}, "initrd.img": {"sha256": "` + initrdSum + `", "size": 12}}}`
		if err := os.WriteFile(filepath.Join(filepath.Dir(in.Kernel), ManifestFile), []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(sum("initrd bytes"))
	m, ok, err := ReadManifest(in.Kernel)
	if !ok || err != nil {
		t.Fatalf("ReadManifest: %v %v", ok, err)
	}
	if err := m.Check(r); err != nil {
		t.Errorf("matching manifest: %v", err)
	}
	write(sum("another initrd"))
	m, _, _ = ReadManifest(in.Kernel)
	if err := m.Check(r); err == nil || !strings.Contains(err.Error(), "initrd.img") {
		t.Errorf("mismatched initrd: %v", err)
	}
}

// TestRefusesOtherDrivers: the reference values are QEMU's launch; a
// handler configured for another driver gets an error naming the key,
// not values that would never match its pods.
func TestRefusesOtherDrivers(t *testing.T) {
	cfg := installed(t, "veil-dev", true)
	cfg.Hypervisor.Driver = "cloud-hypervisor"
	_, err := HandlerInputs(cfg)
	if err == nil || !strings.Contains(err.Error(), "hypervisor.driver") || !strings.Contains(err.Error(), `"cloud-hypervisor"`) {
		t.Errorf("HandlerInputs with driver cloud-hypervisor: %v, want an error naming hypervisor.driver and the driver", err)
	}
}
