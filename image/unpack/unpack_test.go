package unpack

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
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
		if _, err := Layer(root, bytes.NewReader(l), digestOf(l), Limits{}, nil); err != nil {
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
	if _, err := Layer(root, bytes.NewReader(l), digestOf(l), Limits{}, nil); err != nil {
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
			_, err := Layer(root, bytes.NewReader(b), digestOf(b), Limits{}, nil)
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
		if _, err := Layer(root, bytes.NewReader(l), digestOf(l), Limits{}, nil); err != nil {
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
	_, err := Layer(t.TempDir(), bytes.NewReader(b), digestOf([]byte("other")), Limits{}, nil)
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
			if _, err := Layer(root, bytes.NewReader(blob), digestOf(b), Limits{}, nil); err != nil {
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
	if _, err := Layer(root, bytes.NewReader(blob.Bytes()), diffID, Limits{}, nil); err != nil {
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

// TestApplyDirTimesNotThroughReplacedParent pins the deferred
// directory-times bug: a layer creates a/ and a/b/, then replaces a with a
// symlink to a directory outside the root that has a b of its own. The
// times of a/b, set after the last entry, used to go through the path
// root/a/b and so land on outside/b. They must not: outside/b keeps its
// times, and a/b (gone) is skipped.
func TestApplyDirTimesNotThroughReplacedParent(t *testing.T) {
	base := t.TempDir()
	root := filepath.Join(base, "root")
	outside := filepath.Join(base, "outside")
	sentinel := filepath.Join(outside, "b")
	for _, d := range []string{root, outside, sentinel} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	before := time.Unix(1600000000, 0)
	if err := os.Chtimes(sentinel, before, before); err != nil {
		t.Fatal(err)
	}
	l := tarOf(t,
		entry{name: "a/", typ: tar.TypeDir},
		entry{name: "a/b/", typ: tar.TypeDir},
		entry{name: "c/", typ: tar.TypeDir},
		entry{name: "a", typ: tar.TypeSymlink, link: outside},
	)
	if _, err := Layer(root, bytes.NewReader(l), digestOf(l), Limits{}, nil); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(sentinel)
	if err != nil {
		t.Fatal(err)
	}
	if !fi.ModTime().Equal(before) {
		t.Errorf("outside/b mtime changed to %v (want %v): directory times went through the symlink", fi.ModTime(), before)
	}
	// Directories that stayed get the layer's times.
	fi, err = os.Stat(filepath.Join(root, "c"))
	if err != nil {
		t.Fatal(err)
	}
	if !fi.ModTime().Equal(time.Unix(1700000000, 0)) {
		t.Errorf("c mtime %v, want the header's", fi.ModTime())
	}
	if target, err := os.Readlink(filepath.Join(root, "a")); err != nil || target != outside {
		t.Errorf("a -> %q (%v), want the symlink the layer made", target, err)
	}
}

// infiniteLayer writes, compressed with compress, a tar of one small file
// followed by an endless run of entries (each a 4 KiB file) when entries
// is true, or by endless zero padding after the end marker otherwise,
// until the reader goes away. It stands for a decompression bomb: nothing
// in a header says how big it is.
func infiniteLayer(t *testing.T, compress string, entries bool) io.Reader {
	t.Helper()
	pr, pw := io.Pipe()
	t.Cleanup(func() { pr.Close() })
	go func() {
		var w io.WriteCloser
		switch compress {
		case "gzip":
			w, _ = gzip.NewWriterLevel(pw, gzip.BestSpeed)
		case "zstd":
			w, _ = zstd.NewWriter(pw, zstd.WithEncoderLevel(zstd.SpeedFastest))
		default:
			w = pw
		}
		tw := tar.NewWriter(w)
		body := make([]byte, 4096)
		var err error
		for i := 0; err == nil; i++ {
			if i > 0 && !entries {
				break
			}
			if err = tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("f%d", i), Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err == nil {
				_, err = tw.Write(body)
			}
		}
		if err == nil {
			err = tw.Close()
		}
		for err == nil {
			_, err = w.Write(body)
		}
		pw.CloseWithError(err)
	}()
	return pr
}

func TestLayerCapsStopDecompressionBombs(t *testing.T) {
	const limit = 4 << 20
	for _, compress := range []string{"tar", "gzip", "zstd"} {
		for _, entries := range []bool{false, true} {
			name := compress + "/padding"
			if entries {
				name = compress + "/entries"
			}
			t.Run(name, func(t *testing.T) {
				root := t.TempDir()
				lim := Limits{Bytes: []Cap{{Name: "image.max_layer_bytes", Max: limit}}}
				st, err := Layer(root, infiniteLayer(t, compress, entries), digestOf(nil), lim, nil)
				var le *LimitError
				if !errors.As(err, &le) || !errors.Is(err, ErrLimit) {
					t.Fatalf("err = %v, want a *LimitError", err)
				}
				if le.Cap.Name != "image.max_layer_bytes" || le.Cap.Max != limit || le.Unit != "bytes uncompressed" {
					t.Errorf("refusal names %+v %q", le.Cap, le.Unit)
				}
				for _, want := range []string{"image.max_layer_bytes", "4194304"} {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q does not name %s", err, want)
					}
				}
				if st.Bytes > limit {
					t.Errorf("read %d bytes uncompressed, cap is %d", st.Bytes, limit)
				}
			})
		}
	}
}

func TestLayerEntriesCap(t *testing.T) {
	root := t.TempDir()
	lim := Limits{Entries: []Cap{{Name: "image.max_layer_entries", Max: 100}}}
	_, err := Layer(root, infiniteLayer(t, "gzip", true), digestOf(nil), lim, nil)
	var le *LimitError
	if !errors.As(err, &le) || le.Cap.Name != "image.max_layer_entries" || le.Unit != "entries" {
		t.Fatalf("err = %v, want the entries cap", err)
	}
	if !strings.Contains(err.Error(), "over the limit image.max_layer_entries = 100 entries") {
		t.Errorf("error %q", err)
	}
	ents, _ := os.ReadDir(root)
	if len(ents) != 100 {
		t.Errorf("%d entries unpacked, want the 100 the cap allows", len(ents))
	}
	// At the cap exactly is allowed.
	l := tarOf(t, entry{name: "a", body: "a"}, entry{name: "b", body: "b"})
	lim = Limits{Entries: []Cap{{Name: "e", Max: 2}}}
	if st, err := Layer(t.TempDir(), bytes.NewReader(l), digestOf(l), lim, nil); err != nil || st.Entries != 2 {
		t.Errorf("two entries under a cap of 2: %+v %v", st, err)
	}
}

// A header that claims more than the caps hold is refused before any of
// the file is written, sparse or not; an image-wide cap counts what
// earlier layers took.
func TestLayerCapsRefuseBigFileUpFront(t *testing.T) {
	// A PAX sparse file: 64 MiB of holes, one byte of data.
	buf := sparseTar(t, "sparse", 64<<20)
	root := t.TempDir()
	lim := Limits{Bytes: []Cap{{Name: "layer", Max: 1 << 20}}}
	_, err := Layer(root, bytes.NewReader(buf), digestOf(buf), lim, nil)
	if !errors.Is(err, ErrLimit) {
		t.Fatalf("sparse 64 MiB file: err = %v, want ErrLimit", err)
	}
	if exists(t, filepath.Join(root, "sparse")) {
		t.Error("the refused file was created")
	}

	l := tarOf(t, entry{name: "f", body: strings.Repeat("x", 3<<20)})
	lim = Limits{Bytes: []Cap{
		{Name: "image.max_layer_bytes", Max: 8 << 20},
		{Name: "image.max_image_bytes", Max: 10 << 20, Used: 8 << 20},
	}}
	_, err = Layer(t.TempDir(), bytes.NewReader(l), digestOf(l), lim, nil)
	var le *LimitError
	if !errors.As(err, &le) || le.Cap.Name != "image.max_image_bytes" {
		t.Fatalf("err = %v, want the image cap", err)
	}
	if !strings.Contains(err.Error(), "over the limit image.max_image_bytes = 10485760 bytes uncompressed (earlier layers took 8388608)") {
		t.Errorf("error %q", err)
	}
	lim.Bytes[1].Used = 0
	st, err := Layer(t.TempDir(), bytes.NewReader(l), digestOf(l), lim, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Bytes != int64(len(l)) || st.Entries != 1 {
		t.Errorf("stats %+v, want %d bytes, 1 entry", st, len(l))
	}
}

// paxRecord is one PAX extended header record ("<len> key=value\n").
func paxRecord(k, v string) string {
	s := " " + k + "=" + v + "\n"
	for d := 1; ; d++ {
		if n := len(s) + d; len(fmt.Sprint(n)) == d {
			return fmt.Sprint(n) + s
		}
	}
}

// rawHeader is a ustar header block of any type (archive/tar writes
// neither PAX headers by hand nor GNU sparse records).
func rawHeader(t testing.TB, name string, typ byte, size int64) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := tar.NewWriter(&b).WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: size, Typeflag: tar.TypeReg, Format: tar.FormatUSTAR}); err != nil {
		t.Fatal(err)
	}
	blk := b.Bytes()[:512]
	blk[156] = typ
	copy(blk[148:156], "        ")
	sum := 0
	for _, c := range blk {
		sum += int(c)
	}
	copy(blk[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return blk
}

// sparseTar is a tar of one PAX (GNU 1.0) sparse file of size bytes, all
// holes but its last byte.
func sparseTar(t testing.TB, name string, size int64) []byte {
	t.Helper()
	var buf bytes.Buffer
	recs := paxRecord("GNU.sparse.major", "1") + paxRecord("GNU.sparse.minor", "0") +
		paxRecord("GNU.sparse.name", name) + paxRecord("GNU.sparse.realsize", fmt.Sprint(size))
	buf.Write(rawHeader(t, "PaxHeaders/"+name, tar.TypeXHeader, int64(len(recs))))
	buf.WriteString(recs)
	buf.Write(make([]byte, 512-len(recs)%512))
	buf.Write(rawHeader(t, "GNUSparseFile.0/"+name, tar.TypeReg, 1024))
	m := make([]byte, 1024)
	copy(m, fmt.Sprintf("1\n%d\n1\n", size-1))
	m[512] = 'x'
	buf.Write(m)
	buf.Write(make([]byte, 1024))
	return buf.Bytes()
}
