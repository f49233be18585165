package boot

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestMoveTree moves a tree like the initramfs (the agent, a setuid file,
// symlinks, a device node, a FIFO, nested directories with their own
// modes) and checks every attribute arrived and nothing is left but the
// skipped directory.
func TestMoveTree(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	skip := filepath.Join(src, ".veil-root")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(src, "usr/bin"), 0o755))
	must(os.MkdirAll(filepath.Join(src, "etc/veil"), 0o750))
	must(os.Mkdir(filepath.Join(src, "tmp"), 0o755))
	must(os.Chmod(filepath.Join(src, "tmp"), os.ModeSticky|0o777))
	must(os.Mkdir(skip, 0o755))
	must(os.WriteFile(filepath.Join(skip, "keep"), []byte("skipped"), 0o644))
	must(os.WriteFile(filepath.Join(src, "init"), []byte("agent"), 0o755))
	must(os.WriteFile(filepath.Join(src, "usr/bin/runc"), []byte(strings.Repeat("r", 100_000)), 0o755))
	must(os.WriteFile(filepath.Join(src, "usr/bin/suid"), []byte("s"), 0o755))
	must(os.Chmod(filepath.Join(src, "usr/bin/suid"), os.ModeSetuid|0o755))
	must(os.WriteFile(filepath.Join(src, "etc/veil/modules"), []byte("/lib/x.ko\n"), 0o600))
	must(os.Lchown(filepath.Join(src, "etc/veil/modules"), 1000, 1001))
	must(os.Symlink("usr/bin", filepath.Join(src, "bin")))
	must(unix.Mkfifo(filepath.Join(src, "fifo"), 0o620))
	must(os.Chmod(filepath.Join(src, "fifo"), os.ModeNamedPipe|0o620))
	must(os.Mkdir(filepath.Join(src, "dev"), 0o755))
	// /dev/console, char 5:1, as the image has it (mknod needs root, which
	// the agent's tests have).
	must(unix.Mknod(filepath.Join(src, "dev/console"), unix.S_IFCHR|0o600, int(unix.Mkdev(5, 1))))
	old := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	must(os.Chtimes(filepath.Join(src, "init"), old, old))

	var root unix.Stat_t
	must(unix.Stat(src, &root))
	var st MoveStats
	must(MoveTree(src, dst, root.Dev, skip, &st))

	left, _ := os.ReadDir(src)
	if len(left) != 1 || left[0].Name() != ".veil-root" {
		t.Errorf("left in the source: %v, want only the skipped directory", left)
	}
	if b, err := os.ReadFile(filepath.Join(skip, "keep")); err != nil || string(b) != "skipped" {
		t.Errorf("skipped directory touched: %q %v", b, err)
	}
	if _, err := os.Lstat(filepath.Join(dst, ".veil-root")); err == nil {
		t.Error("skipped directory copied")
	}
	for _, tc := range []struct {
		path     string
		mode     os.FileMode
		uid, gid int
		content  string
	}{
		{"init", 0o755, 0, 0, "agent"},
		{"usr/bin/runc", 0o755, 0, 0, strings.Repeat("r", 100_000)},
		{"usr/bin/suid", 0o755 | os.ModeSetuid, 0, 0, "s"},
		{"etc/veil/modules", 0o600, 1000, 1001, "/lib/x.ko\n"},
		{"etc/veil", 0o750 | os.ModeDir, 0, 0, ""},
		{"tmp", 0o777 | os.ModeDir | os.ModeSticky, 0, 0, ""},
		{"bin", 0o777 | os.ModeSymlink, 0, 0, ""},
		{"fifo", 0o620 | os.ModeNamedPipe, 0, 0, ""},
		{"dev/console", 0o600 | os.ModeDevice | os.ModeCharDevice, 0, 0, ""},
	} {
		p := filepath.Join(dst, tc.path)
		fi, err := os.Lstat(p)
		if err != nil {
			t.Errorf("%s: %v", tc.path, err)
			continue
		}
		if fi.Mode() != tc.mode {
			t.Errorf("%s: mode %v, want %v", tc.path, fi.Mode(), tc.mode)
		}
		sys := fi.Sys().(*syscall.Stat_t)
		if int(sys.Uid) != tc.uid || int(sys.Gid) != tc.gid {
			t.Errorf("%s: owner %d:%d, want %d:%d", tc.path, sys.Uid, sys.Gid, tc.uid, tc.gid)
		}
		if tc.content != "" {
			if b, _ := os.ReadFile(p); string(b) != tc.content {
				t.Errorf("%s: content differs (%d bytes)", tc.path, len(b))
			}
		}
	}
	if target, _ := os.Readlink(filepath.Join(dst, "bin")); target != "usr/bin" {
		t.Errorf("bin -> %q, want usr/bin", target)
	}
	var con unix.Stat_t
	if err := unix.Lstat(filepath.Join(dst, "dev/console"), &con); err != nil || unix.Major(con.Rdev) != 5 || unix.Minor(con.Rdev) != 1 {
		t.Errorf("dev/console: rdev %d:%d, %v; want 5:1", unix.Major(con.Rdev), unix.Minor(con.Rdev), err)
	}
	if fi, _ := os.Stat(filepath.Join(dst, "init")); !fi.ModTime().Equal(old) {
		t.Errorf("init mtime %v, want %v", fi.ModTime(), old)
	}
	if st.Bytes != int64(len("agent")+100_000+1+len("/lib/x.ko\n")) || st.Files != 13 {
		t.Errorf("stats %+v", st)
	}
}

// TestMoveTreeLeavesMounts: a directory on another device (a mount point)
// is recreated empty and neither entered nor removed.
func TestMoveTreeLeavesMounts(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	if err := os.Mkdir(filepath.Join(src, "proc"), 0o555); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "proc", "inside"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var root unix.Stat_t
	if err := unix.Stat(src, &root); err != nil {
		t.Fatal(err)
	}
	var st MoveStats
	// Claim the tree is on another device: every entry is then a "mount".
	if err := MoveTree(src, dst, root.Dev+1, "", &st); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(src, "proc", "inside")); err != nil {
		t.Errorf("entered a mount point: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(dst, "proc")); err != nil || !fi.IsDir() {
		t.Errorf("mount point not recreated: %v", err)
	}
	if entries, _ := os.ReadDir(filepath.Join(dst, "proc")); len(entries) != 0 {
		t.Errorf("mount point contents copied: %v", entries)
	}
}

func TestEnv(t *testing.T) {
	if !EnvIsClean(Env()) {
		t.Fatal("Env() is not clean")
	}
	// What the kernel gives init for `LD_PRELOAD=/x.so GODEBUG=x=1` on its
	// command line.
	kernel := []string{"HOME=/", "TERM=linux", "LD_PRELOAD=/x.so", "GODEBUG=x=1"}
	if EnvIsClean(kernel) || EnvIsClean([]string{"HOME=/", "TERM=linux"}) || EnvIsClean(nil) {
		t.Error("the kernel's environment counts as clean")
	}
	if !slices.Contains(Env(), Path) || len(Env()) != 1 {
		t.Errorf("Env() = %q, want only %q", Env(), Path)
	}
}

// TestClearEnvReachesChildren: after ClearEnv a child (runc, started with
// the agent's environment as go-runc does) sees only Env.
func TestClearEnvReachesChildren(t *testing.T) {
	t.Setenv("LD_PRELOAD", "/nonexistent.so")
	t.Setenv("VEIL_EVIL", "1")
	t.Setenv("GODEBUG", "madvdontneed=0")
	saved := os.Environ()
	t.Cleanup(func() {
		os.Clearenv()
		for _, kv := range saved {
			k, v, _ := strings.Cut(kv, "=")
			os.Setenv(k, v)
		}
	})
	ClearEnv()
	if got := os.Environ(); !EnvIsClean(got) {
		t.Fatalf("environment after ClearEnv: %q", got)
	}
	out, err := exec.Command("/usr/bin/env").Output()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Fields(string(out)); !slices.Equal(got, Env()) {
		t.Fatalf("child's environment %q, want %q", got, Env())
	}
}
