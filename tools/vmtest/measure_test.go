//go:build vm

package vmtest

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/veil-runtime/veil/attestation/measure"
	"github.com/veil-runtime/veil/attestation/measure/snp"
	"github.com/veil-runtime/veil/attestation/measure/tdx"
	"github.com/veil-runtime/veil/guest-agent/api"
	"github.com/veil-runtime/veil/hypervisor"
	"github.com/veil-runtime/veil/hypervisor/qemu"
	"github.com/veil-runtime/veil/runtimeclass/install"
	"github.com/veil-runtime/veil/shim/config"
)

// veilOnce builds cmd/veil once per test run.
var veilOnce struct {
	sync.Once
	path string
	err  error
	out  []byte
}

// veilBinary is the veil CLI built from this tree.
func veilBinary(t *testing.T) string {
	t.Helper()
	veilOnce.Do(func() {
		dir, err := os.MkdirTemp("", "veil-vmtest-cli-")
		if err != nil {
			veilOnce.err = err
			return
		}
		veilOnce.path = filepath.Join(dir, "veil")
		veilOnce.out, veilOnce.err = exec.Command("go", "build", "-o", veilOnce.path, "../../cmd/veil").CombinedOutput()
	})
	if veilOnce.err != nil {
		t.Fatalf("building veil: %v\n%s", veilOnce.err, veilOnce.out)
	}
	return veilOnce.path
}

// TestMeasureVeilDev runs `veil measure` on the real guest image and the
// veil-dev handler config as `veil install` writes it (with a handler
// init-data document), boots a pod VM from that same config the way the
// shim does (config.Config.VM), and checks that
//
//   - the QEMU process runs with the -kernel, -initrd and -append that
//     veil measure printed, and those files hash to what it printed;
//   - the guest's sample evidence reports the init-data digest veil measure
//     printed: the agent accepts the document only when its digest equals
//     the one its (sample) TEE reports, and returns that digest.
func TestMeasureVeilDev(t *testing.T) {
	prefix := t.TempDir()
	share := filepath.Join(prefix, "share", "veil")
	if err := os.MkdirAll(share, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, n := range install.GuestFiles {
		src, err := filepath.Abs(guestFile(n))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(src, filepath.Join(share, n)); err != nil {
			t.Fatal(err)
		}
	}
	doc := []byte(confidentialDoc)
	docPath := filepath.Join(prefix, "initdata.toml")
	if err := os.WriteFile(docPath, doc, 0o644); err != nil {
		t.Fatal(err)
	}
	cfgText := strings.Replace(string(install.HandlerConfig(prefix, "veil-dev")), "[confidential]\n", "[confidential]\ninitdata = \""+docPath+"\"\n", 1)
	cfgPath := install.HandlerConfigPath(prefix, "veil-dev")
	if err := os.MkdirAll(filepath.Dir(cfgPath), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfgPath, []byte(cfgText), 0o644); err != nil {
		t.Fatal(err)
	}

	veil := veilBinary(t)
	out, err := exec.Command(veil, "measure", "--handler", "veil-dev", "--prefix", prefix, "--json").Output()
	if err != nil {
		t.Fatalf("veil measure: %v", err)
	}
	var r measure.Result
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("veil measure --json: %v\n%s", err, out)
	}
	sum := sha256.Sum256(doc)
	if r.Inputs.InitDataDigest != hex.EncodeToString(sum[:]) {
		t.Fatalf("veil measure init-data digest %q, want sha256 of the handler's document %x", r.Inputs.InitDataDigest, sum)
	}
	text, err := exec.Command(veil, "measure", "--handler", "veil-dev", "--prefix", prefix).Output()
	if err != nil || !strings.Contains(string(text), "manifest.json lists this kernel and initrd") {
		t.Fatalf("veil measure (text): %v\n%s", err, text)
	}

	// The pod VM the shim would start for this handler.
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	root, err := os.MkdirTemp("", "veil-vmtest-measure-")
	if err != nil {
		t.Fatal(err)
	}
	v := &vm{root: root, state: filepath.Join(root, "state"), share: filepath.Join(root, "share")}
	t.Cleanup(func() { v.destroy() })
	for _, d := range []string{v.state, v.share} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	vmCfg := cfg.VM(sum[:], cfg.Hypervisor.VCPUs, cfg.Hypervisor.PodMemoryMiB(0))
	vmCfg.ID, vmCfg.StateDir, vmCfg.SharedDir = "measure", v.state, v.share
	ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
	defer cancel()
	if err := v.boot(ctx, vmCfg, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}

	// QEMU's own argv: what the driver launched.
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(v.q.PID()) + "/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	argv := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
	arg := func(flag string) string {
		i := slices.Index(argv, flag)
		if i < 0 || i+1 >= len(argv) {
			t.Fatalf("QEMU runs without %s: %q", flag, argv)
		}
		return argv[i+1]
	}
	if got := arg("-append"); got != r.Inputs.Append {
		t.Errorf("QEMU -append %q\nveil measure     %q", got, r.Inputs.Append)
	}
	for _, f := range []struct{ flag, sum string }{{"-kernel", r.KernelSHA256}, {"-initrd", r.InitrdSHA256}} {
		b, err := os.ReadFile(arg(f.flag))
		if err != nil {
			t.Fatal(err)
		}
		if h := sha256.Sum256(b); hex.EncodeToString(h[:]) != f.sum {
			t.Errorf("QEMU %s %s: sha256 %x, veil measure %s", f.flag, arg(f.flag), h, f.sum)
		}
	}

	// The sample evidence's init-data digest is the one measured.
	resp, err := v.client.Attestation.SetInitData(ctx, &api.SetInitDataRequest{Document: doc})
	if err != nil {
		t.Fatalf("SetInitData (the evidence's digest is not veil measure's %s?): %v\nconsole:\n%s", r.Inputs.InitDataDigest, err, v.console())
	}
	if resp.GetTee() != "sample" || resp.GetDigest() != r.Inputs.InitDataDigest {
		t.Errorf("guest reports tee %q, init-data digest %q; veil measure printed %q", resp.GetTee(), resp.GetDigest(), r.Inputs.InitDataDigest)
	}
	if !bytes.Contains(text, []byte(r.Inputs.InitDataDigest)) {
		t.Errorf("text output lacks the init-data digest:\n%s", text)
	}
	if err := v.shutdown(); err != nil {
		t.Fatal(err)
	}
}

// TestMeasureHardwareCommandLines: for veil-snp and veil-tdx as `veil
// install` writes them, with the real guest image and test firmware (the
// vector collection's OVMF AmdSev tail for SNP, gce-tcb-verifier's fake
// TDVF for TDX), the QEMU command line the driver builds for a pod
// (config.Config.VM, qemu.LaunchFor, qemu.Args) hashes to what `veil
// measure` prints: the digest is recomputed here from -bios, -kernel,
// -initrd, -append, -smp and -m alone. No VM boots (no SNP or TDX here).
func TestMeasureHardwareCommandLines(t *testing.T) {
	veil := veilBinary(t)
	snpFW, err := os.ReadFile("../../attestation/measure/snp/testdata/sev-snp-measure/ovmf_AmdSev_suffix.bin")
	if err != nil {
		t.Fatal(err)
	}
	gz, err := os.ReadFile("../../attestation/measure/tdx/testdata/gce-tcb-verifier/clean_example_0x200000.bin.gz")
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	tdxFW, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	prefix := t.TempDir()
	share := filepath.Join(prefix, "share", "veil")
	if err := os.MkdirAll(share, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, n := range install.GuestFiles {
		src, _ := filepath.Abs(guestFile(n))
		if err := os.Symlink(src, filepath.Join(share, n)); err != nil {
			t.Fatal(err)
		}
	}
	for name, data := range map[string][]byte{"OVMF-snp.fd": snpFW, "OVMF-tdx.fd": tdxFW} {
		if err := os.WriteFile(filepath.Join(share, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	read := func(p string) []byte {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, h := range []string{"veil-snp", "veil-tdx"} {
		t.Run(h, func(t *testing.T) {
			cfgPath := install.HandlerConfigPath(prefix, h)
			if err := os.MkdirAll(filepath.Dir(cfgPath), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(cfgPath, install.HandlerConfig(prefix, h), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(veil, "measure", "--handler", h, "--prefix", prefix, "--cpu-type", "EPYC-Milan", "--json").Output()
			if err != nil {
				var ee *exec.ExitError
				if errors.As(err, &ee) {
					t.Fatalf("veil measure: %v\n%s", err, ee.Stderr)
				}
				t.Fatal(err)
			}
			var r measure.Result
			if err := json.Unmarshal(out, &r); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			cfg, err := config.Load(cfgPath)
			if err != nil {
				t.Fatal(err)
			}
			args := qemu.Args(qemu.LaunchFor(cfg.VM(nil, cfg.Hypervisor.VCPUs, cfg.Hypervisor.PodMemoryMiB(0)), hypervisor.AccelKVM, hypervisor.TransportVsock))
			arg := func(flag string) string {
				i := slices.Index(args, flag)
				if i < 0 || i+1 >= len(args) {
					t.Fatalf("no %s in %q", flag, args)
				}
				return args[i+1]
			}
			fw, kernel, initrd, appendLine := read(arg("-bios")), read(arg("-kernel")), read(arg("-initrd")), arg("-append")
			switch h {
			case "veil-snp":
				m, err := snp.ParseMetadata(fw)
				if err != nil {
					t.Fatal(err)
				}
				seed, _ := snp.OVMFDigest(fw)
				hashes := snp.HashKernel(kernel, initrd, appendLine)
				vcpus, _ := strconv.Atoi(arg("-smp"))
				sig, _ := snp.CPUModelSig("EPYC-Milan")
				d, err := snp.Launch{Firmware: seed, Metadata: m, Kernel: &hashes, VCPUs: vcpus, VCPUSig: sig, GuestFeatures: measure.DefaultGuestFeatures}.Digest()
				if err != nil {
					t.Fatal(err)
				}
				if r.SNP == nil || r.SNP.Measurement != hex.EncodeToString(d[:]) {
					t.Errorf("veil measure %+v, the driver's command line hashes to %x", r.SNP, d)
				}
			case "veil-tdx":
				mib, err := strconv.Atoi(strings.TrimSuffix(arg("-m"), "M"))
				if err != nil {
					t.Fatal(err)
				}
				v, err := tdx.Measure(tdx.Inputs{Firmware: fw, Kernel: kernel, Initrd: initrd, Cmdline: appendLine, MemoryBytes: uint64(mib) << 20})
				if err != nil {
					t.Fatal(err)
				}
				if r.TDX == nil || r.TDX.MRTD != hex.EncodeToString(v.MRTD[:]) || r.TDX.RTMR[1] != hex.EncodeToString(v.RTMR[1][:]) || r.TDX.RTMR[2] != hex.EncodeToString(v.RTMR[2][:]) {
					t.Errorf("veil measure %+v, the driver's command line gives MRTD %x RTMR1 %x RTMR2 %x", r.TDX, v.MRTD, v.RTMR[1], v.RTMR[2])
				}
				if r.TDX.MRTD != "6e540be4917f24f74cc3292b59803d06dc7c38eb4a3c1fd6be9c735ba74bb7a23e25f98da94779d17508b243e4fb582b" {
					t.Errorf("MRTD of the CleanExample firmware %s, want gce-tcb-verifier's CleanTdxExampleMeasurement", r.TDX.MRTD)
				}
			}
		})
	}
}
