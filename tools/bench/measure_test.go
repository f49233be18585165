package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/veil-runtime/veil/hypervisor/qemu"
	"github.com/veil-runtime/veil/shim/config"
	"github.com/veil-runtime/veil/tools/bench/report"
	"github.com/veil-runtime/veil/tools/e2e/harness"
)

// handlerConfigs are the veil and veil-dev configs as the bench's shims
// read them: veilConfig, and the harness's veil-dev config with the
// bench's drop-in over it.
func handlerConfigs(t *testing.T, tcgMiB uint, reclaim bool) (veil, dev config.Config) {
	t.Helper()
	veil, err := config.Parse([]byte(veilConfig("/repo", tcgMiB, reclaim, false)), "veil.toml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	initData := filepath.Join(dir, "initdata.toml")
	if err := os.WriteFile(initData, []byte(harness.VeilDevInitData()), 0o644); err != nil {
		t.Fatal(err)
	}
	text, err := harness.VeilDevConfig("/repo", initData)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "veil-dev.toml")
	dropIn := filepath.Join(config.DropInDir(path), "50-options.toml")
	if err := os.MkdirAll(filepath.Dir(dropIn), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dropIn, []byte(veilDevDropIn(tcgMiB, reclaim)), 0o644); err != nil {
		t.Fatal(err)
	}
	if dev, err = config.Load(path); err != nil {
		t.Fatal(err)
	}
	return veil, dev
}

// veil-dev's VM gets the run's TCG cache and free page reporting through
// the drop-in, boots the initrd (not the root image) and is split by it.
func TestVeilDevVMAndLayout(t *testing.T) {
	veil, dev := handlerConfigs(t, 16, true)
	if dev.Debug {
		t.Error("veil-dev runs with the harness's debug logging: the drop-in did not apply")
	}
	want := report.VM{VCPUs: 1, MemoryMiB: 2048, BaseMemoryMiB: 256, Boot: report.BootInitrd, TEE: "sample", TCGTranslationCacheMiB: 16, ReclaimGuestFreedMemory: true}
	if got := vmOf(dev); got != want {
		t.Errorf("veil-dev VM = %+v, want %+v", got, want)
	}
	if got := vmOf(veil); got.Boot != report.BootRootImage || got.TEE != "none" || got.TCGTranslationCacheMiB != 16 {
		t.Errorf("veil VM = %+v, want the root image, no TEE, TCG cache 16 MiB", got)
	}
	if l := layoutOf(dev, "tcg"); l != (vmLayout{guestMiB: 2048, tcgMiB: 16, initrd: "initrd.img"}) {
		t.Errorf("veil-dev layout under TCG = %+v, want 2048 MiB, TCG 16 MiB, initrd.img", l)
	}
	if l := layoutOf(veil, "kvm"); l != (vmLayout{guestMiB: 2048, rootImage: "rootfs.erofs"}) {
		t.Errorf("veil layout under KVM = %+v, want 2048 MiB, no TCG cache, rootfs.erofs", l)
	}
	// Unset, the TCG cache is the driver's default, not none.
	veil.Hypervisor.TCGTranslationCacheMiB = 0
	if l := layoutOf(veil, "tcg"); l.tcgMiB != qemu.DefaultTCGTranslationCacheMiB {
		t.Errorf("layout with the default TCG cache: %d MiB, want the driver's %d", l.tcgMiB, qemu.DefaultTCGTranslationCacheMiB)
	}
}

// veil-dev pulls in the guest and so runs after every other handler's
// pods; veil and runc (no config) do not.
func TestGuestPulls(t *testing.T) {
	veil, dev := handlerConfigs(t, 64, false)
	cfgs := map[string]config.Config{harness.Veil: veil, harness.VeilDev: dev}
	for h, want := range map[string]bool{harness.Veil: false, harness.VeilDev: true, harness.Runc: false} {
		if got := guestPulls(cfgs, h); got != want {
			t.Errorf("guestPulls(%s) = %t, want %t", h, got, want)
		}
	}
}
