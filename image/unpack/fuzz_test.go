package unpack

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// FuzzUnpack applies arbitrary bytes as a layer (plain, gzip or zstd, as
// their magic says) to a root that an earlier layer left with symlinks
// out of it (relative and absolute, to a sentinel directory beside it).
// Whatever the layer, nothing panics, nothing but the root and the
// sentinel exists beside the root, and the sentinel keeps its entries,
// content, mode, owner and times.
func FuzzUnpack(f *testing.F) {
	gz := func(b []byte) []byte {
		var buf bytes.Buffer
		w := gzip.NewWriter(&buf)
		w.Write(b)
		w.Close()
		return buf.Bytes()
	}
	zs := func(b []byte) []byte {
		var buf bytes.Buffer
		w, _ := zstd.NewWriter(&buf)
		w.Write(b)
		w.Close()
		return buf.Bytes()
	}
	seeds := [][]byte{
		tarOf(f, entry{name: "../escape", body: "x"}, entry{name: "a/../../escape", body: "x"}),
		tarOf(f, entry{name: "/abs/file", body: "x"}, entry{name: "/", typ: tar.TypeDir}),
		tarOf(f, entry{name: "s", typ: tar.TypeSymlink, link: "../../sentinel"}, entry{name: "s/keep", body: "pwned"}, entry{name: "s/new", body: "x"}),
		tarOf(f, entry{name: "out/keep", body: "pwned"}, entry{name: "abs/keep", body: "pwned"}, entry{name: "out/sub/", typ: tar.TypeDir}),
		tarOf(f, entry{name: "h", typ: tar.TypeLink, link: "../sentinel/keep"}, entry{name: "h2", typ: tar.TypeLink, link: "out/keep"}, entry{name: "h3", typ: tar.TypeLink, link: "abs/keep"}),
		tarOf(f, entry{name: "dev/sda", typ: tar.TypeBlock}, entry{name: "dev/mem", typ: tar.TypeChar}, entry{name: "p", typ: tar.TypeFifo}),
		tarOf(f, entry{name: "a/", typ: tar.TypeDir}, entry{name: "a/sub/", typ: tar.TypeDir}, entry{name: "a", typ: tar.TypeSymlink, link: "../sentinel"}),
		tarOf(f, entry{name: "out/.wh.keep"}, entry{name: "abs/.wh..wh..opq"}, entry{name: "out/.wh..wh..opq"}, entry{name: ".wh..."}),
		tarOf(f, entry{name: "d/", typ: tar.TypeDir, mode: 0o4777}, entry{name: "d/f", body: "x", mode: 0o6755, uid: 7, gid: 8}, entry{name: "d", body: "file over dir"}),
		sparseTar(f, "sparse", 1<<40),
		gz(tarOf(f, entry{name: "out", typ: tar.TypeDir}, entry{name: "out/keep", body: "pwned"})),
		zs(tarOf(f, entry{name: "abs", body: "replaced"}, entry{name: "x", typ: tar.TypeSymlink, link: "/"})),
	}
	// A header claiming far more than the stream holds.
	huge := tarOf(f, entry{name: "big", body: "x"})
	copy(huge[124:136], "77777777777\x00")
	seeds = append(seeds, huge)
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		base := t.TempDir()
		root := filepath.Join(base, "root")
		sentinel := filepath.Join(base, "sentinel")
		keep := filepath.Join(sentinel, "keep")
		sub := filepath.Join(sentinel, "sub")
		for _, d := range []string{root, sentinel, sub} {
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(keep, []byte("outside"), 0o644); err != nil {
			t.Fatal(err)
		}
		// What an earlier layer may have left: symlinks out of the root.
		if err := os.Symlink("../sentinel", filepath.Join(root, "out")); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(sentinel, filepath.Join(root, "abs")); err != nil {
			t.Fatal(err)
		}
		old := time.Unix(1500000000, 0)
		for _, p := range []string{keep, sub, sentinel} {
			if err := os.Chtimes(p, old, old); err != nil {
				t.Fatal(err)
			}
		}
		lim := Limits{Bytes: []Cap{{Name: "layer", Max: 1 << 20}}, Entries: []Cap{{Name: "entries", Max: 512}}}
		_, _ = Layer(root, bytes.NewReader(data), digestOf(data), lim, nil)

		ents, err := os.ReadDir(base)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		if strings.Join(names, ",") != "root,sentinel" {
			t.Errorf("beside the root: %v, want root and sentinel only", names)
		}
		ents, err = os.ReadDir(sentinel)
		if err != nil {
			t.Fatal(err)
		}
		names = names[:0]
		for _, e := range ents {
			names = append(names, e.Name())
		}
		if strings.Join(names, ",") != "keep,sub" {
			t.Errorf("sentinel holds %v, want keep and sub", names)
		}
		if b, err := os.ReadFile(keep); err != nil || string(b) != "outside" {
			t.Errorf("sentinel file reads %q, %v", b, err)
		}
		for _, p := range []string{keep, sub, sentinel} {
			fi, err := os.Lstat(p)
			if err != nil {
				t.Fatal(err)
			}
			st := fi.Sys().(*syscall.Stat_t)
			wantMode := os.FileMode(0o644)
			if p != keep {
				wantMode = os.ModeDir | 0o755
			}
			if !fi.ModTime().Equal(old) || fi.Mode() != wantMode || st.Uid != uint32(os.Getuid()) || (p == keep && st.Nlink != 1) {
				t.Errorf("sentinel %s changed: mode %v mtime %v uid %d links %d", p, fi.Mode(), fi.ModTime(), st.Uid, st.Nlink)
			}
		}
	})
}
