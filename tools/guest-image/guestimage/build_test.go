package guestimage

import (
	"bytes"
	"context"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
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

// TestStripKernel strips an ELF that has a symbol table (a program gcc,
// which builds the kernel, links here) and checks that the symbol and
// string tables are gone while every loaded segment and every note is
// still there, byte for byte: what QEMU loads from a PVH vmlinux, its
// entry note included. A program with an .init.scratch section loses it.
func TestStripKernel(t *testing.T) {
	dir := t.TempDir()
	in := gccProgram(t, dir, "prog", "int counter = 1;\nint main(void) { return counter; }\n")
	ef, err := elf.Open(in)
	if err != nil {
		t.Fatal(err)
	}
	defer ef.Close()
	if ef.Section(".symtab") == nil {
		t.Fatal("gcc's program has no .symtab to strip")
	}
	out := filepath.Join(t.TempDir(), "vmlinux")
	b, err := stripKernel(context.Background(), in, out)
	if err != nil {
		t.Fatal(err)
	}
	onDisk, err := os.ReadFile(out)
	if err != nil || !bytes.Equal(b, onDisk) {
		t.Fatalf("returned bytes differ from %s (%v)", out, err)
	}
	sf, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{".symtab", ".strtab"} {
		if sf.Section(name) != nil {
			t.Errorf("%s is still there", name)
		}
	}
	segments := func(f *elf.File) (load, notes [][]byte) {
		for _, p := range f.Progs {
			if p.Type != elf.PT_LOAD && p.Type != elf.PT_NOTE {
				continue
			}
			data, err := io.ReadAll(p.Open())
			if err != nil {
				t.Fatal(err)
			}
			if p.Off == 0 {
				// A segment from the file's start holds the ELF header,
				// whose section header fields strip rewrites (a vmlinux's
				// segments start at 2 MiB).
				data = data[64+56*len(f.Progs):]
			}
			head := fmt.Appendf(nil, "%#x %#x %#x %v:", p.Vaddr, p.Paddr, p.Memsz, p.Flags)
			if p.Type == elf.PT_LOAD {
				load = append(load, append(head, data...))
			} else {
				notes = append(notes, append(head, data...))
			}
		}
		return load, notes
	}
	wantLoad, wantNotes := segments(ef)
	gotLoad, gotNotes := segments(sf)
	if len(wantLoad) == 0 || len(wantNotes) == 0 {
		t.Fatalf("the test binary has %d loaded segments and %d notes: nothing to compare", len(wantLoad), len(wantNotes))
	}
	if !slices.EqualFunc(gotLoad, wantLoad, bytes.Equal) || !slices.EqualFunc(gotNotes, wantNotes, bytes.Equal) {
		t.Errorf("loaded segments or notes changed: %d/%d segments, %d/%d notes", len(gotLoad), len(wantLoad), len(gotNotes), len(wantNotes))
	}

	// A kernel's .init.scratch goes too (a program with such a section).
	in2 := gccProgram(t, dir, "scratch", "__attribute__((section(\".init.scratch\"))) char scratch[8192] = {1};\nint main(void) { return scratch[0]; }\n")
	raw2, err := os.ReadFile(in2)
	if err != nil {
		t.Fatal(err)
	}
	if f, err := elf.NewFile(bytes.NewReader(raw2)); err != nil || f.Section(".init.scratch") == nil {
		t.Fatalf("gcc's program has no .init.scratch to remove (%v)", err)
	}
	b2, err := stripKernel(context.Background(), in2, filepath.Join(dir, "scratch.stripped"))
	if err != nil {
		t.Fatal(err)
	}
	if f, err := elf.NewFile(bytes.NewReader(b2)); err != nil || f.Section(".init.scratch") != nil || f.Section(".symtab") != nil {
		t.Errorf(".init.scratch or .symtab is still there (%v)", err)
	}

	if _, err := stripKernel(context.Background(), filepath.Join(t.TempDir(), "missing"), out); err == nil || !strings.Contains(err.Error(), "stripping the kernel") {
		t.Errorf("a missing kernel: %v, want an error that says what failed", err)
	}
}

// gccProgram compiles the C source csrc with gcc (which builds the kernel,
// so make deps installs it) into dir/name and returns the program's path.
func gccProgram(t *testing.T, dir, name, csrc string) string {
	t.Helper()
	src := filepath.Join(dir, name+".c")
	if err := os.WriteFile(src, []byte(csrc), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, name)
	if b, err := exec.Command("gcc", "-o", out, src).CombinedOutput(); err != nil {
		t.Fatalf("gcc (make deps installs build-essential): %v: %s", err, b)
	}
	return out
}
