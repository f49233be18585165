package storage

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

func TestResolve(t *testing.T) {
	root := t.TempDir()
	outside := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(root, "c1/rootfs/bin"), 0o755))
	must(t, os.Symlink("rootfs", filepath.Join(root, "c1/alias")))
	must(t, os.Symlink("/", filepath.Join(root, "c1/abs")))
	must(t, os.Symlink("../../..", filepath.Join(root, "c1/rootfs/up")))
	must(t, os.Symlink("../..", filepath.Join(root, "c1/rootfs/top")))
	must(t, os.Symlink(outside, filepath.Join(root, "c1/out")))

	for _, tc := range []struct {
		rel  string
		want string // relative to root; "" when an error is expected
		err  error
	}{
		{"c1/rootfs", "c1/rootfs", nil},
		{"c1/rootfs/bin/", "c1/rootfs/bin", nil},
		{"c1/alias", "c1/rootfs", nil},
		{"./c1/rootfs", "c1/rootfs", nil},
		{"", "", errdefs.ErrInvalidArgument},
		{"/etc", "", errdefs.ErrInvalidArgument},
		{"../etc", "", errdefs.ErrInvalidArgument},
		{"c1/../../etc", "", errdefs.ErrInvalidArgument},
		{"c1/abs", "", errdefs.ErrInvalidArgument},
		{"c1/abs/etc", "", errdefs.ErrInvalidArgument},
		{"c1/rootfs/up", "", errdefs.ErrInvalidArgument},
		{"c1/rootfs/top", ".", nil},
		{"c1/out", "", errdefs.ErrInvalidArgument},
		{"c2/rootfs", "", errdefs.ErrNotFound},
	} {
		got, err := Resolve(root, tc.rel)
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("Resolve(%q) = %q, %v; want %v", tc.rel, got, err, tc.err)
			}
			continue
		}
		realRoot, _ := filepath.EvalSymlinks(root)
		if err != nil || got != filepath.Join(realRoot, tc.want) {
			t.Errorf("Resolve(%q) = %q, %v; want %q", tc.rel, got, err, filepath.Join(realRoot, tc.want))
		}
	}
}

func TestParseOptions(t *testing.T) {
	for _, tc := range []struct {
		opts  []string
		flags uintptr
		data  string
	}{
		{nil, 0, ""},
		{[]string{"ro", "nosuid", "size=64m", "mode=755"}, unix.MS_RDONLY | unix.MS_NOSUID, "size=64m,mode=755"},
		{[]string{"ro", "rw"}, 0, ""},
		{[]string{"rbind", "defaults"}, unix.MS_BIND | unix.MS_REC, ""},
	} {
		flags, data := ParseOptions(tc.opts)
		if flags != tc.flags || data != tc.data {
			t.Errorf("ParseOptions(%q) = %#x, %q; want %#x, %q", tc.opts, flags, data, tc.flags, tc.data)
		}
	}
}

func TestNinePOptions(t *testing.T) {
	got := NinePOptions([]string{"msize=65536", "ro"})
	want := []string{"msize=65536", "ro", "trans=virtio", "version=9p2000.L", "cache=mmap"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestPlanMount(t *testing.T) {
	shared := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(shared, "vol"), 0o755))
	realShared, _ := filepath.EvalSymlinks(shared)

	share, err := PlanMount(Spec{Driver: "9p", Source: ShareTag}, shared)
	if err != nil {
		t.Fatal(err)
	}
	if share.Target != SharedDir || share.FSType != "9p" || share.Data != "trans=virtio,version=9p2000.L,msize=262144,cache=mmap" {
		t.Fatalf("share plan %+v", share)
	}

	bind, err := PlanMount(Spec{Driver: "shared", Source: "vol", MountPoint: "/run/veil/volumes/v", Options: []string{"ro"}}, shared)
	if err != nil {
		t.Fatal(err)
	}
	if bind.Source != filepath.Join(realShared, "vol") || bind.Flags != unix.MS_BIND || bind.Remount != unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY {
		t.Fatalf("read-only shared bind plan %+v", bind)
	}

	for _, bad := range []Spec{
		{Driver: "shared", Source: "../x", MountPoint: "/mnt"},
		{Driver: "tmpfs", MountPoint: "relative"},
		{Driver: "nfs", Source: "x", MountPoint: "/mnt"},
		{Driver: "", MountPoint: "/mnt"},
		{Driver: "9p", MountPoint: "/mnt"},
		{Driver: "bind", Source: "rel", MountPoint: "/mnt"},
	} {
		if _, err := PlanMount(bad, shared); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("PlanMount(%+v) error = %v, want InvalidArgument", bad, err)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
