package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// veil install and uninstall through the CLI, on a fake host root: the
// containerd config gets the import, then its original bytes back.
func TestInstallUninstallCommands(t *testing.T) {
	root := t.TempDir()
	src := t.TempDir()
	bin, guest := filepath.Join(src, "bin"), filepath.Join(src, "share", "veil")
	for _, d := range []string{bin, guest, filepath.Join(root, "etc/containerd")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(bin, "containerd-shim-veil-v2"), []byte("shim"), 0o755)
	os.WriteFile(filepath.Join(bin, "veil"), []byte("veil"), 0o755)
	arts := map[string]any{}
	for _, n := range []string{"vmlinuz", "vmlinux", "initrd.img", "rootfs.erofs"} {
		os.WriteFile(filepath.Join(guest, n), []byte(n), 0o644)
		s := sha256.Sum256([]byte(n))
		arts[n] = map[string]any{"sha256": hex.EncodeToString(s[:])}
	}
	m, _ := json.Marshal(map[string]any{"artifacts": arts})
	os.WriteFile(filepath.Join(guest, "manifest.json"), m, 0o644)
	orig := "# my containerd\nversion = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"pause:3.9\"\n"
	cfg := filepath.Join(root, "etc/containerd/config.toml")
	os.WriteFile(cfg, []byte(orig), 0o644)

	common := []string{"--root", root, "--restart=none", "--label=none"}
	var out bytes.Buffer
	err := installCmd(append(common, "--bin-dir", bin, "--containerd-version", "1.7.24"), &out)
	if err == nil || !strings.Contains(err.Error(), "too old") {
		t.Fatalf("install on containerd 1.7: %v", err)
	}
	if err := installCmd(append(common, "--bin-dir", bin, "--containerd-version", "2.4.2"), &out); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(cfg)
	if !strings.Contains(string(b), `imports = ["/etc/containerd/conf.d/veil.toml"]`) {
		t.Fatalf("config after install:\n%s", b)
	}
	if _, err := os.Stat(filepath.Join(root, "opt/veil/share/veil/initrd.img")); err != nil {
		t.Fatalf("guest image not installed from BIN-DIR/../share/veil: %v", err)
	}
	if !strings.Contains(out.String(), "veil installed in /opt/veil") {
		t.Errorf("install output %q", out.String())
	}
	if err := uninstallCmd(common, &out); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(cfg); string(b) != orig {
		t.Fatalf("config after uninstall:\n%q\nwant\n%q", b, orig)
	}
	if _, err := os.Stat(filepath.Join(root, "opt")); !os.IsNotExist(err) {
		t.Fatalf("uninstall left /opt behind: %v", err)
	}
}

func TestCheckJSON(t *testing.T) {
	var out bytes.Buffer
	err := checkCmd([]string{"--json", "--guest-dir", t.TempDir()}, &out)
	if err == nil || !strings.Contains(err.Error(), "guest image") {
		t.Fatalf("check with no guest image: %v, want an error naming it", err)
	}
	var r map[string]any
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("--json output is not JSON: %v\n%s", err, out.String())
	}
	for _, k := range []string{"kvm", "vhost_vsock", "qemu", "host_tee", "cgroups", "containerd", "guest_image", "tee", "problems"} {
		if _, ok := r[k]; !ok {
			t.Errorf("--json lacks %s", k)
		}
	}
}
