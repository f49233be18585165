package qemu

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/veil-runtime/veil/hypervisor"
)

// TestResolveBIOS: qboot is found in the data directory of the QEMU the
// driver runs (through symlinks, as /usr/bin/qemu-system-x86_64 may be
// one), QEMU's default is kept when it is not there or when asked for,
// and a named file must exist.
func TestResolveBIOS(t *testing.T) {
	dir := t.TempDir()
	write := func(p string) string {
		t.Helper()
		p = filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("x"), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	withQboot := write("usr/bin/qemu-system-x86_64")
	qboot := write("usr/share/qemu/qboot.rom")
	without := write("opt/q/bin/qemu-system-x86_64")
	link := filepath.Join(dir, "bin-qemu")
	if err := os.Symlink(withQboot, link); err != nil {
		t.Fatal(err)
	}
	own := write("fw/bios.bin")

	for _, tt := range []struct {
		name, bios, binary, want string
	}{
		{"auto finds qboot beside QEMU", "", withQboot, qboot},
		{"auto follows the binary's symlink", "", link, qboot},
		{"auto without qboot keeps QEMU's default", "", without, ""},
		{"default is QEMU's own", hypervisor.BIOSDefault, withQboot, ""},
		{"a named file", own, without, own},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := resolveBIOS(tt.bios, tt.binary)
			if err != nil || got != tt.want {
				t.Errorf("resolveBIOS(%q, %q) = %q, %v; want %q", tt.bios, tt.binary, got, err, tt.want)
			}
		})
	}
	for _, bad := range []string{filepath.Join(dir, "missing.rom"), filepath.Join(dir, "fw")} {
		if got, err := resolveBIOS(bad, withQboot); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("resolveBIOS(%q) = %q, %v; want an error naming it", bad, got, err)
		}
	}
}
