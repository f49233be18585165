package guestimage

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestSharedLibrariesOfHostShell(t *testing.T) {
	libs, err := SharedLibraries("/", "/bin/sh", LibrarySearchPath)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, l := range libs {
		paths = append(paths, l.Path)
		if fi, err := os.Lstat(l.Source); err != nil || !fi.Mode().IsRegular() {
			t.Errorf("%s: source %s is not a regular file (%v)", l.Path, l.Source, err)
		}
	}
	want := []string{"/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"}
	if !reflect.DeepEqual(paths, want) {
		t.Errorf("libraries of /bin/sh: %q, want %q (libc's own ld-linux need is the interpreter, not a second copy)", paths, want)
	}
}

func TestSharedLibrariesMissing(t *testing.T) {
	root := t.TempDir()
	sh, err := os.ReadFile("/bin/sh")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"bin/sh"} {
		os.MkdirAll(filepath.Join(root, filepath.Dir(p)), 0o755)
		os.WriteFile(filepath.Join(root, p), sh, 0o755)
	}
	// The interpreter through a symlinked /lib64, as on merged-/usr systems.
	os.MkdirAll(filepath.Join(root, "usr/lib64"), 0o755)
	os.Symlink("usr/lib64", filepath.Join(root, "lib64"))
	os.WriteFile(filepath.Join(root, "usr/lib64/ld-linux-x86-64.so.2"), []byte("x"), 0o755)

	_, err = SharedLibraries(root, "/bin/sh", LibrarySearchPath)
	if err == nil || !strings.Contains(err.Error(), "libc.so.6") || !strings.Contains(err.Error(), "/bin/sh") {
		t.Fatalf("got %v, want an error naming libc.so.6 and /bin/sh", err)
	}
	src, err := resolveOnRoot(root, "/lib64/ld-linux-x86-64.so.2")
	if err != nil || src != filepath.Join(root, "usr/lib64/ld-linux-x86-64.so.2") {
		t.Errorf("resolveOnRoot = %q, %v", src, err)
	}
}

func TestCompressionIsDeterministicAndReversible(t *testing.T) {
	data := bytes.Repeat([]byte("veil guest initramfs "), 50000)
	decompress := map[Compression][]string{
		CompressZstd: {"zstd", "-dcq"},
		CompressXZ:   {"xz", "-dc"},
		CompressLZ4:  {"lz4", "-dc"},
		CompressGzip: {"gzip", "-dc"},
	}
	for c, dec := range decompress {
		t.Run(string(c), func(t *testing.T) {
			a, tool, err := compress(context.Background(), c, data)
			if err != nil {
				t.Fatal(err)
			}
			b, _, err := compress(context.Background(), c, data)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(a, b) {
				t.Error("two compressions differ")
			}
			if len(a) >= len(data)/10 {
				t.Errorf("compressed %d bytes to %d", len(data), len(a))
			}
			if tool == "" {
				t.Error("no compressor description")
			}
			cmd := exec.Command(dec[0], dec[1:]...)
			cmd.Stdin = bytes.NewReader(a)
			out, err := cmd.Output()
			if err != nil || !bytes.Equal(out, data) {
				t.Errorf("%s does not give the data back (%v)", dec[0], err)
			}
		})
	}
	if _, err := ParseCompression("bzip2"); err == nil {
		t.Error("bzip2 accepted")
	}
}
