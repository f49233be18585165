package harness

import (
	"os"
	"path/filepath"
	"reflect"
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
	if cfg.Confidential.Kind() != hypervisor.TEESample || cfg.Confidential.InitData != idPath || !cfg.Confidential.GuestPullEnabled() {
		t.Errorf("confidential = %+v", cfg.Confidential)
	}
	if cfg.Hypervisor.Kernel != "/repo/build/guest/vmlinux" || cfg.Hypervisor.Initrd != "/repo/build/guest/initrd.img" || !cfg.Debug {
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
	if !reflect.DeepEqual(p, policy.Policy{AllowReadOutput: true, AllowUnboundContainers: true}) {
		t.Errorf("default veil-dev policy = %+v", p)
	}
}

// The environment's veil-dev init-data points the guest at the registry's
// guest listener: a mirror of the registry's loopback name, trusted
// through the listener's certificate.
func TestEnvVeilDevInitData(t *testing.T) {
	_, certPEM, err := selfSigned(BridgeIP)
	if err != nil {
		t.Fatal(err)
	}
	e := &Env{Registry: &Registry{Host: "127.0.0.1:40000", GuestHost: BridgeIP + ":40001", GuestRootPEM: string(certPEM)}}
	doc, err := initdata.Parse([]byte(e.VeilDevInitData(VeilDevPolicy)))
	if err != nil {
		t.Fatal(err)
	}
	if m := doc.Image.Mirrors["127.0.0.1:40000"]; len(m) != 1 || m[0] != "10.88.0.1:40001" {
		t.Errorf("mirrors = %v", doc.Image.Mirrors)
	}
	if doc.Image.TLSRoots != string(certPEM) || doc.Image.Policy != VeilDevImagePolicy {
		t.Errorf("image table = %+v", doc.Image)
	}
}

// Options.VeilDevDropIn lands in the veil-dev config's drop-in directory,
// so the shim (config.Load) reads it over the generated config.
func TestVeilDevDropIn(t *testing.T) {
	e := &Env{Dir: t.TempDir(), RepoRoot: "/repo", Registry: &Registry{Host: "127.0.0.1:40000", GuestHost: BridgeIP + ":40001"}}
	if err := e.writeConfigs(Options{VeilDevDropIn: "debug = false\n[hypervisor]\ntcg_translation_cache_mib = 32\n"}); err != nil {
		t.Fatal(err)
	}
	path := e.Handlers[VeilDev].Options["ConfigPath"]
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Debug || cfg.Hypervisor.TCGTranslationCacheMiB != 32 || cfg.Confidential.Kind() != hypervisor.TEESample {
		t.Errorf("veil-dev config with the drop-in: debug %t, TCG cache %d MiB, tee %s; want false, 32, sample",
			cfg.Debug, cfg.Hypervisor.TCGTranslationCacheMiB, cfg.Confidential.Kind())
	}
	// Without one, the generated config alone (debug on).
	e = &Env{Dir: t.TempDir(), RepoRoot: "/repo", Registry: e.Registry}
	if err := e.writeConfigs(Options{}); err != nil {
		t.Fatal(err)
	}
	if cfg, err := config.Load(e.Handlers[VeilDev].Options["ConfigPath"]); err != nil || !cfg.Debug {
		t.Errorf("veil-dev config without a drop-in: debug %t, %v; want the generated debug = true", cfg.Debug, err)
	}
}
