package harness

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/veil-runtime/veil/attestation/initdata"
	"github.com/veil-runtime/veil/guest-agent/policy"
	"github.com/veil-runtime/veil/hypervisor"
	"github.com/veil-runtime/veil/shim/config"
)

// TestVeilDevConfig loads the veil-dev handler config the way the shim
// does: confidential with the sample TEE (from veil install's config), this
// repository's guest image, and the default init-data, whose policy allows
// the host share and reading output and nothing else.
func TestVeilDevConfig(t *testing.T) {
	dir := t.TempDir()
	idPath := filepath.Join(dir, "initdata.toml")
	if err := os.WriteFile(idPath, []byte(VeilDevInitData()), 0o644); err != nil {
		t.Fatal(err)
	}
	text, err := VeilDevConfig("/repo", idPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse([]byte(text), "veil-dev.toml")
	if err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	if cfg.Confidential.Kind() != hypervisor.TEESample || cfg.Confidential.InitData != idPath || cfg.Confidential.GuestPullEnabled() {
		t.Errorf("confidential = %+v", cfg.Confidential)
	}
	if cfg.Hypervisor.Kernel != "/repo/build/guest/vmlinuz" || cfg.Hypervisor.Initrd != "/repo/build/guest/initrd.img" || !cfg.Debug {
		t.Errorf("hypervisor = %+v, debug %v", cfg.Hypervisor, cfg.Debug)
	}
	doc, err := initdata.Parse([]byte(VeilDevInitData()))
	if err != nil {
		t.Fatal(err)
	}
	p, err := policy.Parse(doc.Agent.Policy)
	if err != nil {
		t.Fatal(err)
	}
	if p != (policy.Policy{AllowHostShare: true, AllowReadOutput: true}) {
		t.Errorf("default veil-dev policy = %+v", p)
	}
}
