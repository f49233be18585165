package harness

import (
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func TestOwnedState(t *testing.T) {
	dir := "/run/veil/k8s.io/abc123"
	for _, tc := range []struct {
		name    string
		cmdline string
		want    bool
	}{
		{"qemu naming the state dir", "\x00qemu-system-x86_64\x00-chardev\x00socket,path=/run/veil/k8s.io/abc123/qmp.sock", true},
		{"shim with the sandbox id", "\x00/opt/veil/bin/containerd-shim-veil-v2\x00-namespace\x00k8s.io\x00-id\x00abc123\x00-address\x00/x", true},
		{"shim delete, id last", "\x00containerd-shim-veil-v2\x00-namespace\x00k8s.io\x00-id\x00abc123", true},
		{"shim of another pod", "\x00containerd-shim-veil-v2\x00-id\x00abc1234\x00", false},
		{"runc shim with the id", "\x00containerd-shim-runc-v2\x00-id\x00abc123\x00", false},
		{"unrelated", "\x00sleep\x00100", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ownedState(dir, map[int]string{1: tc.cmdline}); got != tc.want {
				t.Errorf("ownedState = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestSweepVeilState: a state directory nobody owns is removed (with what
// is mounted in it); one a live process names is kept.
func TestSweepVeilState(t *testing.T) {
	root := t.TempDir()
	dead := filepath.Join(root, "k8s.io", "deadpod")
	live := filepath.Join(root, "k8s.io", "livepod-"+filepath.Base(root))
	for _, d := range []string{filepath.Join(dead, "shared"), live} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mount("tmpfs", filepath.Join(dead, "shared"), "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(filepath.Join(dead, "shared"), unix.MNT_DETACH) })
	// A process of this test names the live directory on its command line.
	cmd := exec.Command("sleep", "1000")
	cmd.Args = []string{live, "1000"}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	sweepVeilState(slog.New(slog.NewTextHandler(io.Discard, nil)), root)
	if _, err := os.Stat(dead); !os.IsNotExist(err) {
		t.Errorf("dead pod's state still there: %v", err)
	}
	if m, _ := mountsUnder(dead); len(m) != 0 {
		t.Errorf("still mounted: %v", m)
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("live pod's state removed: %v", err)
	}
}
