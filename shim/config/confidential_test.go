package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/veil-runtime/veil/hypervisor"
)

const goodInitData = "version = \"0.1.0\"\nalgorithm = \"sha256\"\n\n[broker]\nurl = \"http://127.0.0.1:8080\"\n"

func TestConfidentialDefaults(t *testing.T) {
	cfg, err := Parse(nil, "empty.toml")
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.Confidential
	if c.TEE != "none" || c.Enabled() || cfg.IsConfidential() || !c.AllowAnnotationInitData || c.InitData != "" || c.Firmware != "" {
		t.Errorf("confidential defaults: %+v", c)
	}
}

func TestConfidentialParse(t *testing.T) {
	dir := t.TempDir()
	id := filepath.Join(dir, "initdata.toml")
	if err := os.WriteFile(id, []byte(goodInitData), 0o644); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad-initdata.toml")
	if err := os.WriteFile(bad, []byte("version = \"9\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		doc  string
		want []string // error substrings; none: valid
		kind hypervisor.TEE
	}{
		{name: "sample with init-data", doc: "[confidential]\ntee = \"sample\"\ninitdata = \"" + id + "\"", kind: hypervisor.TEESample},
		{name: "snp", doc: "[confidential]\ntee = \"snp\"\nfirmware = \"/usr/share/ovmf/OVMF.amdsev.fd\"\nsnp_policy = 0x30000", kind: hypervisor.TEESNP},
		{name: "tdx with qgs", doc: "[confidential]\ntee = \"tdx\"\nfirmware = \"/fw\"\nquote_generation_socket = \"vsock:2:4050\"", kind: hypervisor.TEETDX},
		{name: "unknown tee", doc: "[confidential]\ntee = \"sgx\"", want: []string{"bad.toml", "key confidential.tee", `"sgx"`}},
		{name: "unknown key", doc: "[confidential]\ntee = \"sample\"\ninit_data = \"x\"", want: []string{"bad.toml", "confidential.init_data"}},
		{name: "snp without firmware", doc: "[confidential]\ntee = \"snp\"", want: []string{"bad.toml", "key confidential.firmware"}},
		{name: "snp debug policy", doc: "[confidential]\ntee = \"snp\"\nfirmware = \"/fw\"\nsnp_policy = 0xb0000", want: []string{"bad.toml", "key confidential", "debug bit"}},
		{name: "policy on tdx", doc: "[confidential]\ntee = \"tdx\"\nfirmware = \"/fw\"\nsnp_policy = 0x30000", want: []string{"key confidential.snp_policy"}},
		{name: "qgs on snp", doc: "[confidential]\ntee = \"snp\"\nfirmware = \"/fw\"\nquote_generation_socket = \"vsock:2:1\"", want: []string{"key confidential.quote_generation_socket"}},
		{name: "bad qgs", doc: "[confidential]\ntee = \"tdx\"\nfirmware = \"/fw\"\nquote_generation_socket = \"tcp:2\"", want: []string{"key confidential", "quote generation socket"}},
		{name: "missing init-data file", doc: "[confidential]\ntee = \"sample\"\ninitdata = \"" + filepath.Join(dir, "nope.toml") + "\"", want: []string{"bad.toml", "key confidential.initdata", "nope.toml"}},
		{name: "invalid init-data", doc: "[confidential]\ntee = \"sample\"\ninitdata = \"" + bad + "\"", want: []string{"key confidential.initdata", "bad-initdata.toml", "version"}},
		{name: "init-data without tee", doc: "[confidential]\ninitdata = \"" + id + "\"", want: []string{"key confidential.initdata", "tee is none"}},
		{name: "firmware without tee", doc: "[confidential]\nfirmware = \"/fw\"", want: []string{"key confidential.firmware", "tee is none"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse([]byte(tt.doc), "bad.toml")
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				if cfg.Confidential.Kind() != tt.kind || !cfg.IsConfidential() {
					t.Fatalf("kind %q, confidential %v", cfg.Confidential.Kind(), cfg.IsConfidential())
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestConfidentialTEEConfigAndInitData(t *testing.T) {
	dir := t.TempDir()
	id := filepath.Join(dir, "initdata.toml")
	os.WriteFile(id, []byte(goodInitData), 0o644)
	c := Confidential{TEE: "tdx", Firmware: "/fw", QuoteGenerationSocket: "unix:/q", InitData: id}
	tc := c.TEEConfig([]byte{1, 2})
	if tc.Kind != hypervisor.TEETDX || tc.Firmware != "/fw" || tc.QuoteGenerationSocket != "unix:/q" || len(tc.InitDataDigest) != 2 {
		t.Errorf("TEEConfig = %+v", tc)
	}
	doc, err := c.LoadInitData()
	if err != nil || string(doc) != goodInitData {
		t.Errorf("LoadInitData = %q, %v", doc, err)
	}
	if doc, err := (Confidential{TEE: "sample"}).LoadInitData(); doc != nil || err != nil {
		t.Errorf("no init-data configured: %q, %v", doc, err)
	}
}
