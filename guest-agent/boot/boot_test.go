package boot

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/containerd/cgroups/v3/cgroup2"
	"golang.org/x/sys/unix"
)

func TestParseCmdline(t *testing.T) {
	for _, tc := range []struct {
		line string
		want map[string]string
	}{
		{"console=ttyS0 veil.log=debug quiet\n", map[string]string{"console": "ttyS0", "veil.log": "debug", "quiet": ""}},
		{`a="x y" b=1 a=2`, map[string]string{"a": "2", "b": "1"}},
		{`init="/init" msg="hello world"`, map[string]string{"init": "/init", "msg": "hello world"}},
		{"  ", map[string]string{}},
		{"k=v=w", map[string]string{"k": "v=w"}},
	} {
		if got := ParseCmdline(tc.line); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseCmdline(%q) = %v, want %v", tc.line, got, tc.want)
		}
	}
}

func TestLogLevel(t *testing.T) {
	for _, tc := range []struct {
		value   string
		want    slog.Level
		wantErr bool
	}{
		{"", slog.LevelInfo, false},
		{"debug", slog.LevelDebug, false},
		{"INFO", slog.LevelInfo, false},
		{"warn", slog.LevelWarn, false},
		{"error", slog.LevelError, false},
		{"loud", slog.LevelInfo, true},
	} {
		params := map[string]string{}
		if tc.value != "" {
			params[LogLevelParam] = tc.value
		}
		got, err := LogLevel(params)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("veil.log=%q: got %v, %v; want %v, error %v", tc.value, got, err, tc.want, tc.wantErr)
		}
		if err != nil && !strings.Contains(err.Error(), "debug, info, warn or error") {
			t.Errorf("error %q does not say what to use", err)
		}
	}
}

func TestSystemMountsCoverPID1Duties(t *testing.T) {
	byTarget := map[string]Mount{}
	for _, m := range SystemMounts() {
		byTarget[m.Target] = m
	}
	for target, fstype := range map[string]string{
		"/proc": "proc", "/sys": "sysfs", "/dev": "devtmpfs", "/dev/pts": "devpts",
		"/dev/shm": "tmpfs", "/sys/fs/cgroup": "cgroup2", "/tmp": "tmpfs", "/run": "tmpfs",
		"/run/veil/volumes": "tmpfs",
	} {
		if m, ok := byTarget[target]; !ok || m.FSType != fstype {
			t.Errorf("%s: got %+v, want a %s mount", target, m, fstype)
		}
	}
	if m := byTarget["/run/veil/volumes"]; m.Flags&unix.MS_NOSUID == 0 || m.Flags&unix.MS_NODEV == 0 {
		t.Errorf("guest volumes mounted with flags %#x, want nosuid,nodev", m.Flags)
	}
	if d := byTarget["/dev/pts"].Data; !strings.Contains(d, "newinstance") || !strings.Contains(d, "ptmxmode=0666") {
		t.Errorf("devpts options %q lack newinstance,ptmxmode=0666", d)
	}
	// /dev must come before /dev/pts and /sys before /sys/fs/cgroup.
	idx := map[string]int{}
	for i, m := range SystemMounts() {
		idx[m.Target] = i
	}
	if idx["/dev"] > idx["/dev/pts"] || idx["/sys"] > idx["/sys/fs/cgroup"] || idx["/run"] > idx["/run/veil/volumes"] {
		t.Error("parent mounts must precede their children")
	}
}

func TestSubtreeControl(t *testing.T) {
	for _, tc := range []struct{ avail, want string }{
		{"cpuset cpu io memory hugetlb pids rdma misc\n", "+cpuset +cpu +io +memory +hugetlb +pids +rdma +misc"},
		{"memory pids cpu", "+cpu +memory +pids"},
		{"", ""},
	} {
		if got := SubtreeControl(tc.avail); got != tc.want {
			t.Errorf("SubtreeControl(%q) = %q, want %q", tc.avail, got, tc.want)
		}
	}
}

func TestRootIsInitramfs(t *testing.T) {
	for _, tc := range []struct {
		mounts string
		want   bool
	}{
		{"none / rootfs rw 0 0\nproc /proc proc rw 0 0\n", true},
		{"rootfs / tmpfs rw 0 0\n", true},
		{"/dev/vda1 / ext4 rw 0 0\n", false},
		{"proc /proc proc rw 0 0\n", false},
	} {
		if got := RootIsInitramfs(tc.mounts); got != tc.want {
			t.Errorf("RootIsInitramfs(%q) = %v, want %v", tc.mounts, got, tc.want)
		}
	}
}

func TestUnmountOrder(t *testing.T) {
	mounts := `rootfs / rootfs rw 0 0
proc /proc proc rw 0 0
sysfs /sys sysfs rw 0 0
devtmpfs /dev devtmpfs rw 0 0
cgroup2 /sys/fs/cgroup cgroup2 rw 0 0
veilshare /run/veil/shared 9p rw 0 0
tmpfs /run/veil/vol\040a tmpfs rw 0 0
`
	want := []string{"/run/veil/vol a", "/run/veil/shared", "/sys/fs/cgroup"}
	if got := UnmountOrder(mounts); !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestResolvConf(t *testing.T) {
	got := string(ResolvConf([]string{"nameserver 10.0.0.1", " ", "search svc.cluster.local "}))
	if got != "nameserver 10.0.0.1\nsearch svc.cluster.local\n" {
		t.Fatalf("got %q", got)
	}
}

func TestPrepareCgroups(t *testing.T) {
	root := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(root, "cgroup.controllers"), []byte("cpu memory pids\n"), 0o644))
	// A real cgroupfs fills cgroup.controllers of a new child; stand in for it.
	must(os.MkdirAll(filepath.Join(root, ContainersCgroup), 0o755))
	must(os.WriteFile(filepath.Join(root, ContainersCgroup, "cgroup.controllers"), []byte("cpu memory pids\n"), 0o644))
	must(PrepareCgroups(root))
	for _, dir := range []string{root, filepath.Join(root, ContainersCgroup)} {
		b, err := os.ReadFile(filepath.Join(dir, "cgroup.subtree_control"))
		if err != nil || string(b) != "+cpu +memory +pids" {
			t.Errorf("%s subtree_control = %q, %v", dir, b, err)
		}
	}
}

// TestAllowAllDeviceFilterBuilds pins a boot panic: DeviceFilter
// dereferences major and minor, so the rule must set them.
func TestAllowAllDeviceFilterBuilds(t *testing.T) {
	insts, license, err := cgroup2.DeviceFilter(allowAllDevices())
	if err != nil || len(insts) == 0 || license == "" {
		t.Fatalf("DeviceFilter = %d instructions, %q, %v", len(insts), license, err)
	}
}

// TestWaitForDevice: the console device is waited for while it is not
// there yet (ENODEV, ENXIO: the host has not announced the virtio console
// port), not when it cannot be opened for another reason, and not beyond
// the wait.
func TestWaitForDevice(t *testing.T) {
	dev, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	t.Run("appears after two tries", func(t *testing.T) {
		tries := 0
		f, err := waitForDevice(func() (*os.File, error) {
			tries++
			switch tries {
			case 1:
				return nil, &os.PathError{Op: "open", Path: "/dev/console", Err: unix.ENODEV}
			case 2:
				return nil, &os.PathError{Op: "open", Path: "/dev/console", Err: unix.ENXIO}
			}
			return dev, nil
		}, time.Hour, time.Millisecond)
		if err != nil || f != dev || tries != 3 {
			t.Errorf("got %v, %v after %d tries; want the device after 3", f, err, tries)
		}
	})
	t.Run("another error is not waited for", func(t *testing.T) {
		tries := 0
		_, err := waitForDevice(func() (*os.File, error) {
			tries++
			return nil, &os.PathError{Op: "open", Path: "/dev/console", Err: unix.ENOENT}
		}, time.Hour, time.Millisecond)
		if !errors.Is(err, unix.ENOENT) || tries != 1 {
			t.Errorf("got %v after %d tries; want ENOENT at once", err, tries)
		}
	})
	t.Run("gives up after the wait", func(t *testing.T) {
		tries := 0
		_, err := waitForDevice(func() (*os.File, error) {
			tries++
			return nil, &os.PathError{Op: "open", Path: "/dev/console", Err: unix.ENODEV}
		}, 20*time.Millisecond, time.Millisecond)
		if !errors.Is(err, unix.ENODEV) || !strings.Contains(err.Error(), "waited 20ms for the device to appear") || tries < 2 {
			t.Errorf("got %v after %d tries; want ENODEV, the wait named, and more than one try", err, tries)
		}
	})
}
