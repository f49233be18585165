package volume

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/containerd/errdefs"
)

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestPutFileDirSymlink(t *testing.T) {
	root := t.TempDir()
	v := New(root)
	if err := v.Put("cfg", Entry{Path: "a/b/c.txt", Kind: File, Data: []byte("one"), Mode: 0o640, UID: 1000, GID: 2000}); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(root, "cfg", "a/b/c.txt")
	if got := readFile(t, p); got != "one" {
		t.Errorf("content %q, want one", got)
	}
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode() != 0o640 || st.Uid != 1000 || st.Gid != 2000 {
		t.Errorf("mode %v owner %d:%d, want -rw-r----- 1000:2000", fi.Mode(), st.Uid, st.Gid)
	}
	// Replacing keeps no temporary file behind.
	if err := v.Put("cfg", Entry{Path: "a/b/c.txt", Kind: File, Data: []byte("two"), Mode: 0o644}); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, p); got != "two" {
		t.Errorf("after replace: %q, want two", got)
	}
	ents, _ := os.ReadDir(filepath.Join(root, "cfg", "a/b"))
	if len(ents) != 1 {
		t.Errorf("directory holds %d entries after a replace, want 1 (no temporary left)", len(ents))
	}

	if err := v.Put("cfg", Entry{Path: "d", Kind: Dir, Mode: 0o700 | fs.ModeSetgid, UID: 5, GID: 6}); err != nil {
		t.Fatal(err)
	}
	fi, err = os.Lstat(filepath.Join(root, "cfg", "d"))
	if err != nil {
		t.Fatal(err)
	}
	if !fi.IsDir() || fi.Mode().Perm() != 0o700 || fi.Mode()&fs.ModeSetgid == 0 || fi.Sys().(*syscall.Stat_t).Uid != 5 {
		t.Errorf("directory: mode %v uid %d", fi.Mode(), fi.Sys().(*syscall.Stat_t).Uid)
	}
	// Putting a directory again updates it; a file where a directory is is refused.
	if err := v.Put("cfg", Entry{Path: "d", Kind: Dir, Mode: 0o755}); err != nil {
		t.Errorf("putting an existing directory again: %v", err)
	}
	if err := v.Put("cfg", Entry{Path: "a/b/c.txt", Kind: Dir, Mode: 0o755}); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Errorf("directory over a file: %v, want already exists", err)
	}

	if err := v.Put("cfg", Entry{Path: "link", Kind: Symlink, Target: "a/b/c.txt"}); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(root, "cfg", "link")); got != "two" {
		t.Errorf("through the symlink: %q, want two", got)
	}
}

// TestAtomicWriterUpdate follows Kubernetes' configMap layout: files in a
// timestamped directory, "..data" pointing at it, and each key a link
// through "..data". An update writes a new directory and swaps ..data; a
// reader through the key sees the old or the new content, never neither.
func TestAtomicWriterUpdate(t *testing.T) {
	root := t.TempDir()
	v := New(root)
	put := func(e Entry) {
		t.Helper()
		if err := v.Put("cm", e); err != nil {
			t.Fatal(err)
		}
	}
	put(Entry{Path: "..2026_01_01/key", Kind: File, Data: []byte("v1"), Mode: 0o644})
	put(Entry{Path: "..data", Kind: Symlink, Target: "..2026_01_01"})
	put(Entry{Path: "key", Kind: Symlink, Target: "..data/key"})
	key := filepath.Join(root, "cm", "key")
	if got := readFile(t, key); got != "v1" {
		t.Fatalf("key = %q, want v1", got)
	}
	put(Entry{Path: "..2026_01_02/key", Kind: File, Data: []byte("v2"), Mode: 0o644})
	put(Entry{Path: "..data", Kind: Symlink, Target: "..2026_01_02"})
	if got := readFile(t, key); got != "v2" {
		t.Fatalf("after the swap key = %q, want v2", got)
	}
	if err := v.Remove("cm", "..2026_01_01"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "cm", "..2026_01_01")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("old directory still there: %v", err)
	}
	if got := readFile(t, key); got != "v2" {
		t.Errorf("after removing the old directory key = %q, want v2", got)
	}
}

func TestRefused(t *testing.T) {
	for _, tc := range []struct {
		name, vol string
		e         Entry
	}{
		{"absolute path", "v", Entry{Path: "/etc/passwd", Kind: File}},
		{"dot-dot path", "v", Entry{Path: "../x", Kind: File}},
		{"dot-dot inside path", "v", Entry{Path: "a/../../x", Kind: File}},
		{"empty path", "v", Entry{Path: "", Kind: File}},
		{"the volume itself", "v", Entry{Path: "./", Kind: Dir}},
		{"NUL in path", "v", Entry{Path: "a\x00b", Kind: File}},
		{"volume name with slash", "a/b", Entry{Path: "x", Kind: File}},
		{"volume name dot-dot", "..", Entry{Path: "x", Kind: File}},
		{"empty volume name", "", Entry{Path: "x", Kind: File}},
		{"absolute symlink", "v", Entry{Path: "l", Kind: Symlink, Target: "/etc"}},
		{"climbing symlink", "v", Entry{Path: "a/l", Kind: Symlink, Target: "../../etc"}},
		{"symlink with dot-dot", "v", Entry{Path: "a/l", Kind: Symlink, Target: "b/../c"}},
		{"empty symlink", "v", Entry{Path: "l", Kind: Symlink}},
		{"file type bits in mode", "v", Entry{Path: "x", Kind: File, Mode: fs.ModeDevice | 0o644}},
		{"unknown kind", "v", Entry{Path: "x", Kind: Kind(7)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			err := New(root).Put(tc.vol, tc.e)
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("Put = %v, want invalid argument", err)
			}
			// Nothing but (at most) the empty volume directory was made.
			var n int
			_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
				if p != root && !(d.IsDir() && filepath.Dir(p) == root) {
					n++
				}
				return nil
			})
			if n != 0 {
				t.Errorf("%d entries written for a refused request", n)
			}
		})
	}
}

// TestPlantedSymlinkCannotLeadOut: even a symlink that got into the volume
// some other way (not through Put) cannot carry a write or a removal out.
func TestPlantedSymlinkCannotLeadOut(t *testing.T) {
	root := t.TempDir()
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "keep"), []byte("host"), 0o644); err != nil {
		t.Fatal(err)
	}
	v := New(root)
	if err := v.Put("v", Entry{Path: "ok", Kind: File, Data: []byte("x"), Mode: 0o644}); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(root, "v", "evil")); err != nil {
		t.Fatal(err)
	}
	if err := v.Put("v", Entry{Path: "evil/new", Kind: File, Data: []byte("x"), Mode: 0o644}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("write through an escaping symlink: %v, want invalid argument", err)
	}
	if err := v.Put("v", Entry{Path: "evil/keep", Kind: File, Data: []byte("x"), Mode: 0o644}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("overwrite through an escaping symlink: %v, want invalid argument", err)
	}
	if err := v.Remove("v", "evil/keep"); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("remove through an escaping symlink: %v, want invalid argument", err)
	}
	ents, _ := os.ReadDir(outside)
	if len(ents) != 1 || readFile(t, filepath.Join(outside, "keep")) != "host" {
		t.Errorf("outside directory changed: %v", ents)
	}
	// Removing the link itself removes the link, not what it points at.
	if err := v.Remove("v", "evil"); err != nil {
		t.Fatal(err)
	}
	if readFile(t, filepath.Join(outside, "keep")) != "host" {
		t.Error("removing the symlink removed its target")
	}
}

func TestRemove(t *testing.T) {
	root := t.TempDir()
	v := New(root)
	for _, p := range []string{"d/a", "d/e/b", "top"} {
		if err := v.Put("v", Entry{Path: p, Kind: File, Mode: 0o644}); err != nil {
			t.Fatal(err)
		}
	}
	if err := v.Remove("v", "d"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "v", "d")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("d still there: %v", err)
	}
	if err := v.Remove("v", "missing/x"); err != nil {
		t.Errorf("removing a missing entry: %v", err)
	}
	if err := v.Remove("novolume", "x"); err != nil {
		t.Errorf("removing from a missing volume: %v", err)
	}
	if err := v.Remove("v", "."); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("removing the volume through Remove: %v, want invalid argument", err)
	}
	if err := v.RemoveVolume("v"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "v")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("volume still there: %v", err)
	}
}

// TestDanglingSymlinkParentRefused: a file under a symlink to nothing would
// have MkdirAll create the link's target, which the volume's count did not
// include (found by FuzzCopyFile). It is refused and nothing is created.
func TestDanglingSymlinkParentRefused(t *testing.T) {
	root := t.TempDir()
	v := New(root)
	if err := v.Put("v", Entry{Path: "loop", Kind: Symlink, Target: "0"}); err != nil {
		t.Fatal(err)
	}
	err := v.Put("v", Entry{Path: "loop/0/0", Kind: File, Data: []byte("x"), Mode: 0o644})
	if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "symlink to nothing") {
		t.Fatalf("Put under a dangling symlink = %v, want a refusal naming it", err)
	}
	ents, err := os.ReadDir(filepath.Join(root, "v"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 || ents[0].Name() != "loop" {
		t.Errorf("volume holds %v, want only the symlink", ents)
	}
	if err := v.Put("v", Entry{Path: "0", Kind: Dir, Mode: 0o755}); err != nil {
		t.Fatal(err)
	}
	if err := v.Put("v", Entry{Path: "loop/0/0", Kind: File, Data: []byte("x"), Mode: 0o644}); err != nil {
		t.Fatalf("Put under a symlink to a directory: %v", err)
	}
}
