package unpack

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

type entry struct {
	name, link, body string
	typ              byte
	mode             int64
	uid, gid         int
}

func tarOf(t testing.TB, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Unix(1700000000, 0)
	for _, e := range entries {
		typ, mode := e.typ, e.mode
		if typ == 0 {
			typ = tar.TypeReg
		}
		if mode == 0 {
			mode = 0o644
			if typ == tar.TypeDir {
				mode = 0o755
			}
		}
		hdr := &tar.Header{Name: e.name, Typeflag: typ, Linkname: e.link, Mode: mode, Uid: e.uid, Gid: e.gid, ModTime: mtime, Format: tar.FormatPAX}
		if typ == tar.TypeReg {
			hdr.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if typ == tar.TypeReg {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func digestOf(b []byte) string {
	h := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(h[:])
}

func exists(t *testing.T, p string) bool {
	t.Helper()
	_, err := os.Lstat(p)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return err == nil
}

func TestApplyWhiteouts(t *testing.T) {
	root := t.TempDir()
	l1 := tarOf(t,
		entry{name: "a/", typ: tar.TypeDir},
		entry{name: "a/f1", body: "1"},
		entry{name: "a/f2", body: "2"},
		entry{name: "b/", typ: tar.TypeDir},
		entry{name: "b/old", body: "old"},
		entry{name: "b/sub/", typ: tar.TypeDir},
		entry{name: "c", body: "c"},
	)
	l2 := tarOf(t,
		entry{name: "a/.wh.f1", body: ""},
		entry{name: "b/new", body: "new"},
		entry{name: "b/.wh..wh..opq", body: ""},
		entry{name: ".wh.c", body: ""},
		entry{name: ".wh..wh.plnk", body: ""},
	)
	for i, l := range [][]byte{l1, l2} {
		if err := Layer(root, bytes.NewReader(l), digestOf(l), nil); err != nil {
			t.Fatalf("layer %d: %v", i, err)
		}
	}
	for p, want := range map[string]bool{
		"a/f1": false, "a/f2": true, "b/old": false, "b/sub": false, "b/new": true, "c": false,
		"a/.wh.f1": false, "b/.wh..wh..opq": false, ".wh.c": false, ".wh..wh.plnk": false,
	} {
		if got := exists(t, filepath.Join(root, p)); got != want {
			t.Errorf("%s exists = %v, want %v", p, got, want)
		}
	}
}

func TestApplyLinksModesOwnership(t *testing.T) {
	root := t.TempDir()
	l := tarOf(t,
		entry{name: "bin/", typ: tar.TypeDir},
		entry{name: "bin/busybox", body: "#!elf", mode: 0o4755, uid: 1000, gid: 2000},
		entry{name: "bin/sh", typ: tar.TypeLink, link: "bin/busybox"},
		entry{name: "bin/ls", typ: tar.TypeSymlink, link: "/bin/busybox"},
		entry{name: "run/fifo", typ: tar.TypeFifo},
		entry{name: "dev/null", typ: tar.TypeChar},
		entry{name: "/abs/file", body: "absolute names are rootfs-relative"},
	)
	if err := Layer(root, bytes.NewReader(l), digestOf(l), nil); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(root, "bin/busybox"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode()&os.ModeSetuid == 0 || st.Mode().Perm() != 0o755 {
		t.Errorf("busybox mode %v, want setuid 0755", st.Mode())
	}
	sys := st.Sys().(*syscall.Stat_t)
	if sys.Uid != 1000 || sys.Gid != 2000 {
		t.Errorf("busybox owner %d:%d, want 1000:2000", sys.Uid, sys.Gid)
	}
	if !st.ModTime().Equal(time.Unix(1700000000, 0)) {
		t.Errorf("busybox mtime %v", st.ModTime())
	}
	sh, err := os.Stat(filepath.Join(root, "bin/sh"))
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(st, sh) {
		t.Error("bin/sh is not a hard link of bin/busybox")
	}
	if target, err := os.Readlink(filepath.Join(root, "bin/ls")); err != nil || target != "/bin/busybox" {
		t.Errorf("bin/ls -> %q (%v), want /bin/busybox", target, err)
	}
	if fi, err := os.Lstat(filepath.Join(root, "run/fifo")); err != nil || fi.Mode()&os.ModeNamedPipe == 0 {
		t.Errorf("run/fifo: %v %v", fi, err)
	}
	if exists(t, filepath.Join(root, "dev/null")) {
		t.Error("device node was created; devices are skipped")
	}
	if !exists(t, filepath.Join(root, "abs/file")) {
		t.Error("absolute entry name not unpacked under the rootfs")
	}
}

func TestApplyRefusesEscapingNames(t *testing.T) {
	for name, l := range map[string][]entry{
		"dotdot":          {{name: "../escape", body: "x"}},
		"nested dotdot":   {{name: "a/../../escape", body: "x"}},
		"hardlink target": {{name: "passwd", typ: tar.TypeLink, link: "../escape"}},
		"whiteout dotdot": {{name: "../.wh.escape"}},
	} {
		t.Run(name, func(t *testing.T) {
			base := t.TempDir()
			root := filepath.Join(base, "root")
			if err := os.Mkdir(root, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(base, "escape"), []byte("outside"), 0o600); err != nil {
				t.Fatal(err)
			}
			b := tarOf(t, l...)
			err := Layer(root, bytes.NewReader(b), digestOf(b), nil)
			if !errors.Is(err, ErrEscape) {
				t.Fatalf("err = %v, want ErrEscape", err)
			}
			if got, _ := os.ReadFile(filepath.Join(base, "escape")); string(got) != "outside" {
				t.Errorf("file outside the rootfs changed: %q", got)
			}
		})
	}
}

// A symlink planted by a layer is resolved inside the rootfs when later
// entries go through it, whether it is absolute or climbs with "..".
func TestApplySymlinkTraversalStaysInRoot(t *testing.T) {
	base := t.TempDir()
	root := filepath.Join(base, "root")
	outside := filepath.Join(base, "outside")
	for _, d := range []string{root, outside} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	l1 := tarOf(t,
		entry{name: "abs", typ: tar.TypeSymlink, link: outside},
		entry{name: "rel", typ: tar.TypeSymlink, link: "../../../../outside"},
	)
	l2 := tarOf(t,
		entry{name: "abs/x", body: "x"},
		entry{name: "rel/y", body: "y"},
		entry{name: "abs/.wh.z"},
	)
	if err := os.WriteFile(filepath.Join(outside, "z"), []byte("z"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, l := range [][]byte{l1, l2} {
		if err := Layer(root, bytes.NewReader(l), digestOf(l), nil); err != nil {
			t.Fatal(err)
		}
	}
	ents, _ := os.ReadDir(outside)
	if len(ents) != 1 || ents[0].Name() != "z" {
		t.Errorf("outside directory was written: %v", ents)
	}
	if !exists(t, filepath.Join(root, outside, "x")) || !exists(t, filepath.Join(root, "outside", "y")) {
		t.Error("entries through symlinks did not land inside the rootfs")
	}
}

func TestLayerDiffIDMismatch(t *testing.T) {
	b := tarOf(t, entry{name: "f", body: "x"})
	err := Layer(t.TempDir(), bytes.NewReader(b), digestOf([]byte("other")), nil)
	if !errors.Is(err, ErrDiffID) {
		t.Fatalf("err = %v, want ErrDiffID", err)
	}
}

func TestLayerCompressions(t *testing.T) {
	b := tarOf(t, entry{name: "f", body: "hello"})
	var gz, zs bytes.Buffer
	gw := gzip.NewWriter(&gz)
	gw.Write(b)
	gw.Close()
	zw, _ := zstd.NewWriter(&zs)
	zw.Write(b)
	zw.Close()
	for name, blob := range map[string][]byte{"tar": b, "gzip": gz.Bytes(), "zstd": zs.Bytes()} {
		t.Run(name, func(t *testing.T) {
			root := t.TempDir()
			if err := Layer(root, bytes.NewReader(blob), digestOf(b), nil); err != nil {
				t.Fatal(err)
			}
			if got, _ := os.ReadFile(filepath.Join(root, "f")); string(got) != "hello" {
				t.Errorf("f = %q", got)
			}
		})
	}
}

// bigLayer writes a gzip layer holding one file of size zero bytes.
func bigLayer(w io.Writer, size int64) error {
	gw, _ := gzip.NewWriterLevel(w, gzip.BestSpeed)
	tw := tar.NewWriter(gw)
	if err := tw.WriteHeader(&tar.Header{Name: "big", Mode: 0o644, Size: size, Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	zero := make([]byte, 1<<20)
	for n := int64(0); n < size; n += int64(len(zero)) {
		if _, err := tw.Write(zero); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return gw.Close()
}

// TestLayerStreamsInBoundedMemory unpacks a 256 MiB layer and checks that
// the unpack allocated a small fraction of that: a layer is never held in
// memory.
func TestLayerStreamsInBoundedMemory(t *testing.T) {
	const size = 256 << 20
	var blob bytes.Buffer // compressed zeros: about 256 KiB
	if err := bigLayer(&blob, size); err != nil {
		t.Fatal(err)
	}
	zr, _ := gzip.NewReader(bytes.NewReader(blob.Bytes()))
	h := sha256.New()
	if _, err := io.Copy(h, zr); err != nil {
		t.Fatal(err)
	}
	diffID := "sha256:" + hex.EncodeToString(h.Sum(nil))

	root := t.TempDir()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	if err := Layer(root, bytes.NewReader(blob.Bytes()), diffID, nil); err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	runtime.ReadMemStats(&after)
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("unpacked %d MiB in %v (%.0f MiB/s), allocated %d KiB", size>>20, elapsed, float64(size>>20)/elapsed.Seconds(), alloc>>10)
	if alloc > 16<<20 {
		t.Errorf("unpacking a %d MiB layer allocated %d MiB; layers must stream", size>>20, alloc>>20)
	}
	if fi, err := os.Stat(filepath.Join(root, "big")); err != nil || fi.Size() != size {
		t.Errorf("big: %v %v", fi, err)
	}
}
