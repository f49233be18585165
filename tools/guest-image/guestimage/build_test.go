package guestimage

import (
	"bytes"
	"testing"

	"github.com/veil-runtime/veil/tools/guest-image/cpio"
)

func TestEntriesLayout(t *testing.T) {
	c := Contents{
		Agent: []byte("agent"),
		Runc:  []byte("runc"),
		Crun:  []byte("crun"),
		Shell: []byte("busybox"),
		Libraries: []File{
			{Path: "/lib64/ld-linux-x86-64.so.2", Data: []byte("ld")},
			{Path: "/lib/x86_64-linux-gnu/libc.so.6", Data: []byte("libc")},
		},
	}
	var buf bytes.Buffer
	if err := cpio.Write(&buf, Entries(c), 0); err != nil {
		t.Fatalf("the layout is not a valid archive: %v", err)
	}
	got, err := cpio.Read(&buf)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		mode uint32
		data string
	}{
		{"init", cpio.TypeRegular | 0o755, "agent"},
		{"usr/bin/runc", cpio.TypeRegular | 0o755, "runc"},
		{"usr/bin/crun", cpio.TypeRegular | 0o755, "crun"},
		{"bin/sh", cpio.TypeRegular | 0o755, "busybox"},
		{"lib64/ld-linux-x86-64.so.2", cpio.TypeRegular | 0o755, "ld"},
		{"lib/x86_64-linux-gnu/libc.so.6", cpio.TypeRegular | 0o755, "libc"},
		{"tmp", cpio.TypeDir | 0o1777, ""},
		{"root", cpio.TypeDir | 0o700, ""},
		{"dev/console", cpio.TypeChar | 0o600, ""},
		{"dev/null", cpio.TypeChar | 0o666, ""},
	} {
		e, err := cpio.Find(got, tc.name)
		if err != nil {
			t.Error(err)
			continue
		}
		if e.Mode != tc.mode || string(e.Data) != tc.data {
			t.Errorf("%s: mode %#o data %q, want mode %#o data %q", tc.name, e.Mode, e.Data, tc.mode, tc.data)
		}
	}
	for _, gone := range []string{"etc/veil/modules", "etc/veil/modules-tee", "lib/modules"} {
		if _, err := cpio.Find(got, gone); err == nil {
			t.Errorf("%s is in the image: the kernel has no modules", gone)
		}
	}
	if e, _ := cpio.Find(got, "dev/console"); e.RdevMajor != 5 || e.RdevMinor != 1 {
		t.Errorf("/dev/console is %d:%d, want 5:1", e.RdevMajor, e.RdevMinor)
	}
	// Go's runtime opens it for a stdio the kernel could not give /init.
	if e, _ := cpio.Find(got, "dev/null"); e.RdevMajor != 1 || e.RdevMinor != 3 {
		t.Errorf("/dev/null is %d:%d, want 1:3", e.RdevMajor, e.RdevMinor)
	}
	for _, d := range Dirs {
		e, err := cpio.Find(got, d[1:])
		if err != nil || e.Mode&cpio.TypeMask != cpio.TypeDir {
			t.Errorf("directory %s missing (%v)", d, err)
		}
	}
}

func TestUnionLibraries(t *testing.T) {
	runc := []SharedFile{{Path: "/lib64/ld-linux-x86-64.so.2", Source: "/lib64/ld"}, {Path: "/lib/x86_64-linux-gnu/libseccomp.so.2", Source: "/lib/s"}}
	crun := []SharedFile{{Path: "/lib/x86_64-linux-gnu/libyajl.so.2", Source: "/lib/y"}, {Path: "/lib64/ld-linux-x86-64.so.2", Source: "/lib64/ld"}, {Path: "/lib/x86_64-linux-gnu/libseccomp.so.2", Source: "/lib/s"}}
	got := UnionLibraries(runc, crun)
	want := []string{"/lib/x86_64-linux-gnu/libseccomp.so.2", "/lib/x86_64-linux-gnu/libyajl.so.2", "/lib64/ld-linux-x86-64.so.2"}
	if len(got) != len(want) {
		t.Fatalf("UnionLibraries = %v, want paths %v", got, want)
	}
	for i, f := range got {
		if f.Path != want[i] {
			t.Errorf("UnionLibraries[%d] = %s, want %s (each path once, sorted)", i, f.Path, want[i])
		}
	}
}
