package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The drop-in directory of a handler's config: its files are read after
// the config, in name order, each setting only its own keys; a bad key
// there is named with the drop-in's file; no directory is no error.
func TestLoadDropIns(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "veil-dev.toml")
	write := func(p, s string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(path, "[hypervisor]\nmemory_mib = 512\nvcpus = 2\n\n[confidential]\ntee = \"sample\"\n")

	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Hypervisor.MemoryMiB != 512 || !cfg.Confidential.GuestPullEnabled() {
		t.Fatalf("without drop-ins: memory_mib %d guest pull %v, want 512 true", cfg.Hypervisor.MemoryMiB, cfg.Confidential.GuestPullEnabled())
	}

	dd := DropInDir(path)
	if dd != filepath.Join(dir, "veil-dev.d") {
		t.Fatalf("DropInDir(%s) = %s", path, dd)
	}
	write(filepath.Join(dd, "20-later.toml"), "[hypervisor]\nmemory_mib = 2048\n")
	write(filepath.Join(dd, "10-admin.toml"), "[hypervisor]\nmemory_mib = 1024\n\n[confidential]\nguest_pull = false\n")
	write(filepath.Join(dd, "README"), "not toml: ignored")
	cfg, err = Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Hypervisor.MemoryMiB != 2048 || cfg.Hypervisor.VCPUs != 2 || cfg.Confidential.GuestPullEnabled() || cfg.Confidential.TEE != "sample" {
		t.Fatalf("with drop-ins: %+v %+v, want memory_mib 2048 (the last drop-in), vcpus 2 and tee sample (the file), guest pull off", cfg.Hypervisor, cfg.Confidential)
	}

	bad := filepath.Join(dd, "30-typo.toml")
	write(bad, "[hypervisor]\nmemroy_mib = 1\n")
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "hypervisor.memroy_mib") {
		t.Fatalf("typo in a drop-in: %v, want an error naming %s and the key", err, bad)
	}
	// A value the merged config refuses names every file read.
	write(bad, "[hypervisor]\nmax_vcpus = 1\n")
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), path+" + ") || !strings.Contains(err.Error(), "max_vcpus") {
		t.Fatalf("drop-in capping vcpus below the file's: %v, want the files and the key named", err)
	}
}
