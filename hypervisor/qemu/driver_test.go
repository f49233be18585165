package qemu

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/veil-runtime/veil/hypervisor"
)

// TestRegistersItself: importing the package makes "qemu" a driver the
// shim can look up, and a config New refuses comes back as a nil
// Hypervisor with New's error (not a nil *QEMU in a non-nil interface).
func TestRegistersItself(t *testing.T) {
	newVM, err := hypervisor.Lookup(DriverName)
	if err != nil {
		t.Fatalf("Lookup(%q): %v", DriverName, err)
	}
	dir := t.TempDir()
	kernel := filepath.Join(dir, "vmlinuz")
	if err := os.WriteFile(kernel, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	hv, err := newVM(hypervisor.Config{ID: "x", StateDir: dir, Kernel: kernel, Binary: os.Args[0], Transport: hypervisor.TransportSerial}, nil)
	if err != nil {
		t.Fatalf("constructing through the registry: %v", err)
	}
	if _, ok := hv.(*QEMU); !ok {
		t.Errorf("registered constructor made a %T, want *QEMU", hv)
	}
	hv, err = newVM(hypervisor.Config{StateDir: dir, Kernel: kernel}, nil)
	if err == nil || hv != nil {
		t.Errorf("bad config through the registry: hypervisor %v, error %v; want nil and New's error", hv, err)
	}
}

// TestSharesMatchTheCommandLine: what the driver tells the shim about the
// shared directory (the guest mounts tag T as 9p) is what QEMU is given
// (a virtio-9p device with mount_tag T exporting that directory), and the
// console paths are the files Start creates.
func TestSharesMatchTheCommandLine(t *testing.T) {
	dir := t.TempDir()
	kernel := filepath.Join(dir, "vmlinuz")
	if err := os.WriteFile(kernel, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	share := t.TempDir()
	cfg := hypervisor.Config{ID: "x", StateDir: dir, Kernel: kernel, Binary: os.Args[0], Transport: hypervisor.TransportSerial, SharedDir: share, DebugConsole: true}
	q, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	shares := q.Shares()
	if len(shares) != 1 {
		t.Fatalf("Shares() = %+v, want the shared directory", shares)
	}
	s := shares[0]
	if s.HostPath != share || s.Kind != hypervisor.Share9P || s.Tag != hypervisor.ShareTag || s.FSType != "9p" || !slices.Equal(s.Options, ShareOptions) {
		t.Errorf("Shares()[0] = %+v, want 9p tag %q of %s with %v", s, hypervisor.ShareTag, share, ShareOptions)
	}
	args := strings.Join(Args(LaunchFor(q.cfg, q.accel, q.transport)), " ")
	for _, want := range []string{"path=" + share + ",", "virtio-9p-pci,fsdev=share,mount_tag=" + s.Tag} {
		if !strings.Contains(args, want) {
			t.Errorf("command line lacks %q: %s", want, args)
		}
	}
	if got, want := q.ConsolePath(), filepath.Join(dir, ConsoleLog); got != want {
		t.Errorf("ConsolePath() = %q, want %q", got, want)
	}
	if got, want := q.DebugConsolePath(), filepath.Join(dir, DebugConsoleSocket); got != want {
		t.Errorf("DebugConsolePath() = %q, want %q", got, want)
	}

	cfg.SharedDir, cfg.DebugConsole = "", false
	if q, err = New(cfg, nil); err != nil {
		t.Fatal(err)
	}
	if len(q.Shares()) != 0 || q.DebugConsolePath() != "" {
		t.Errorf("no share, no debug console: Shares() = %+v, DebugConsolePath() = %q; want none", q.Shares(), q.DebugConsolePath())
	}
	if strings.Contains(strings.Join(Args(LaunchFor(q.cfg, q.accel, q.transport)), " "), "virtio-9p") {
		t.Error("command line has a 9p device without a shared directory")
	}
}
