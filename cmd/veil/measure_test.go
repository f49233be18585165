package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/veil-runtime/veil/attestation/measure"
	"github.com/veil-runtime/veil/runtimeclass/install"
)

// installFixture writes an install of handler h under a temporary prefix
// (the rendered handler config, guest files, the SNP firmware fixture).
func installFixture(t *testing.T, h string) string {
	t.Helper()
	prefix := t.TempDir()
	share := filepath.Join(prefix, "share", "veil")
	if err := os.MkdirAll(share, 0o755); err != nil {
		t.Fatal(err)
	}
	fw, err := os.ReadFile("../../attestation/measure/snp/testdata/sev-snp-measure/ovmf_AmdSev_suffix.bin")
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"vmlinuz": []byte("k"), "vmlinux": []byte("x"), "initrd.img": []byte("i"), "OVMF-snp.fd": fw} {
		if err := os.WriteFile(filepath.Join(share, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	path := install.HandlerConfigPath(prefix, h)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, install.HandlerConfig(prefix, h), 0o644); err != nil {
		t.Fatal(err)
	}
	return prefix
}

func TestMeasureCmd(t *testing.T) {
	prefix := installFixture(t, "veil-snp")
	var help bytes.Buffer
	if err := measureCmd([]string{"--help"}, &help); err != nil || !strings.Contains(help.String(), "veil measure --handler NAME") {
		t.Fatalf("--help: %v\n%s", err, help.String())
	}

	var js bytes.Buffer
	if err := measureCmd([]string{"--handler", "veil-snp", "--prefix", prefix, "--cpu-type", "EPYC-Milan", "--json"}, &js); err != nil {
		t.Fatal(err)
	}
	var r measure.Result
	if err := json.Unmarshal(js.Bytes(), &r); err != nil {
		t.Fatalf("--json: %v\n%s", err, js.String())
	}
	if r.SNP == nil || len(r.SNP.Measurement) != 96 || r.SNP.VCPUSig != 0xA00F11 || r.Inputs.VCPUs != 1 {
		t.Fatalf("--json result %+v", r)
	}

	var kbs bytes.Buffer
	if err := measureCmd([]string{"--handler", "veil-snp", "--prefix", prefix, "--cpu-type", "EPYC-Milan", "--for-kbs"}, &kbs); err != nil {
		t.Fatal(err)
	}
	if want := "veil-kbs reference add snp.measurement " + r.SNP.Measurement + "\n"; !strings.HasPrefix(kbs.String(), want) {
		t.Errorf("--for-kbs:\n%s\nwant first line %q", kbs.String(), want)
	}

	// Explicit inputs give the same value as the handler's.
	var explicit bytes.Buffer
	share := filepath.Join(prefix, "share", "veil")
	if err := measureCmd([]string{"--tee", "snp", "--firmware", filepath.Join(share, "OVMF-snp.fd"), "--kernel", filepath.Join(share, "vmlinuz"),
		"--initrd", filepath.Join(share, "initrd.img"), "--append", r.Inputs.Append, "--vcpu-sig", "0xa00f11", "--json"}, &explicit); err != nil {
		t.Fatal(err)
	}
	var r2 measure.Result
	_ = json.Unmarshal(explicit.Bytes(), &r2)
	if r2.SNP == nil || r2.SNP.Measurement != r.SNP.Measurement {
		t.Errorf("explicit inputs: %+v, want measurement %s", r2.SNP, r.SNP.Measurement)
	}

	var text bytes.Buffer
	if err := measureCmd([]string{"--handler", "veil-snp", "--prefix", prefix, "--vcpu-sig", "a00f11"}, &text); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^snp\.measurement +`+r.SNP.Measurement+`$`).MatchString(text.String()) || !strings.Contains(text.String(), "no manifest.json") {
		t.Errorf("text output:\n%s", text.String())
	}

	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--handler", "veil-snp", "--prefix", prefix, "--vcpus", "2"}, "--vcpus comes from the handler config"},
		{[]string{"--handler", "veil-snp", "--prefix", prefix, "--cpu-type", "Skylake"}, "unknown vCPU model"},
		{[]string{"--handler", "veil-nope", "--prefix", prefix}, "veil-nope.toml"},
		{[]string{"--append", "x"}, "give --handler"},
		{[]string{"--tee", "sample", "--kernel", filepath.Join(share, "vmlinuz"), "--init-data-digest", "abc"}, "want 64 hex digits"},
	} {
		if err := measureCmd(tt.args, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("measure %q: %v, want %q", tt.args, err, tt.want)
		}
	}
}

func TestMeasureCmdSampleForKBS(t *testing.T) {
	prefix := installFixture(t, "veil-dev")
	doc := filepath.Join(prefix, "initdata.toml")
	if err := os.WriteFile(doc, []byte("version = \"0.1.0\"\nalgorithm = \"sha256\"\n\n[broker]\nurl = \"https://kbs.example\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := measureCmd([]string{"--handler", "veil-dev", "--prefix", prefix, "--initdata", doc, "--for-kbs"}, &out); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^veil-kbs reference add init-data [0-9a-f]{64}$`).MatchString(out.String()) || strings.Contains(out.String(), "snp.measurement") {
		t.Errorf("--for-kbs for veil-dev:\n%s", out.String())
	}
}
