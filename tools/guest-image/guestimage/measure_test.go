package guestimage

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/veil-runtime/veil/attestation/measure"
)

func TestMeasurements(t *testing.T) {
	out := t.TempDir()
	for name, data := range map[string]string{KernelFile: "kernel", VmlinuxFile: "vmlinux", InitrdFile: "initrd"} {
		if err := os.WriteFile(filepath.Join(out, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	fw, err := filepath.Abs("../../../attestation/measure/snp/testdata/sev-snp-measure/ovmf_AmdSev_suffix.bin")
	if err != nil {
		t.Fatal(err)
	}

	t.Run("with an SNP firmware", func(t *testing.T) {
		m, err := measurements(out, fw, fw)
		if err != nil {
			t.Fatal(err)
		}
		// A fake kernel and an SNP firmware make no TD: recorded as such.
		if tdx := m["veil-tdx"]; tdx.TDX != nil || !strings.Contains(tdx.NotComputable, "TDX values not computable with") {
			t.Errorf("veil-tdx: %+v", tdx)
		}
		snp := m["veil-snp"]
		if snp.NotComputable != "" || len(snp.SNP) != len(SNPModels) {
			t.Fatalf("veil-snp: %+v", snp)
		}
		// The recorded value is what veil measure computes for the
		// installed handler with the same files and vCPU model.
		in := snp.Inputs
		if in.Kernel != "/opt/veil/share/veil/vmlinuz" || in.VCPUs != 1 || !strings.HasSuffix(in.Append, "veil.tee=snp") {
			t.Errorf("recorded inputs %+v", in)
		}
		in.Kernel, in.Initrd, in.Firmware, in.CPUType = filepath.Join(out, KernelFile), filepath.Join(out, InitrdFile), fw, "EPYC-Genoa"
		r, err := measure.Measure(in)
		if err != nil {
			t.Fatal(err)
		}
		if snp.SNP["EPYC-Genoa"] != r.SNP.Measurement || snp.SNP["EPYC-Genoa"] == snp.SNP["EPYC-Milan"] {
			t.Errorf("recorded %v, veil measure %s", snp.SNP, r.SNP.Measurement)
		}
		dev := m["veil-dev"]
		if dev.SNP != nil || dev.NotComputable != "" || !strings.HasSuffix(dev.Inputs.Append, "veil.tee=sample") || dev.Inputs.Kernel != "/opt/veil/share/veil/vmlinux" {
			t.Errorf("veil-dev: %+v", dev)
		}
	})

	t.Run("without one the build still succeeds and says why", func(t *testing.T) {
		savedSNP, savedTDX := SNPFirmwareCandidates, TDXFirmwareCandidates
		SNPFirmwareCandidates = []string{filepath.Join(out, "absent.fd")}
		TDXFirmwareCandidates = []string{filepath.Join(out, "absent-tdx.fd")}
		defer func() { SNPFirmwareCandidates, TDXFirmwareCandidates = savedSNP, savedTDX }()
		m, err := measurements(out, "", "")
		if err != nil {
			t.Fatal(err)
		}
		if snp := m["veil-snp"]; snp.SNP != nil || !strings.Contains(snp.NotComputable, "no SNP-capable OVMF") {
			t.Errorf("veil-snp: %+v", snp)
		}
		if tdx := m["veil-tdx"]; tdx.TDX != nil || !strings.Contains(tdx.NotComputable, "no TDVF") {
			t.Errorf("veil-tdx: %+v", tdx)
		}
	})

	t.Run("a firmware without the kernel-hashes section", func(t *testing.T) {
		x64, _ := filepath.Abs("../../../attestation/measure/snp/testdata/sev-snp-measure/ovmf_OvmfX64_suffix.bin")
		m, err := measurements(out, x64, "")
		if err != nil {
			t.Fatal(err)
		}
		if snp := m["veil-snp"]; snp.SNP != nil || !regexp.MustCompile(`not computable with .*OvmfX64.*does not measure kernel`).MatchString(snp.NotComputable) {
			t.Errorf("veil-snp: %+v", snp)
		}
	})
}
