package volume

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

// held is what v counts for volume name, and its measure from disk.
func held(t *testing.T, v *Volumes, root, name string) (counted, measured usage) {
	t.Helper()
	v.mu.Lock()
	counted = v.usage[name]
	v.mu.Unlock()
	r, err := os.OpenRoot(filepath.Join(root, name))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if measured, err = measure(r, "."); err != nil {
		t.Fatal(err)
	}
	return counted, measured
}

func TestLimitsPerVolume(t *testing.T) {
	root := t.TempDir()
	v := New(root)
	v.SetLimits(Limits{VolumeBytes: 100, VolumeEntries: 5})
	put := func(e Entry) error { return v.Put("cm", e) }
	if err := put(Entry{Path: "..1/a", Kind: File, Data: make([]byte, 60), Mode: 0o644}); err != nil {
		t.Fatal(err)
	}
	// 60 + 50 > 100: refused before anything is written, naming the cap.
	err := put(Entry{Path: "..1/b", Kind: File, Data: make([]byte, 50), Mode: 0o644})
	if !errors.Is(err, ErrLimit) || !errors.Is(err, errdefs.ErrResourceExhausted) {
		t.Fatalf("err = %v, want ErrLimit, resource exhausted", err)
	}
	for _, want := range []string{"volume cm", "..1/b", "over the limit volumes.max_volume_bytes = 100 bytes", "volume cm holds 60, this adds 50"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if _, err := os.Lstat(filepath.Join(root, "cm", "..1", "b")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("refused file exists: %v", err)
	}
	// Replacing a file counts the difference: 60 -> 90 fits.
	if err := put(Entry{Path: "..1/a", Kind: File, Data: make([]byte, 90), Mode: 0o644}); err != nil {
		t.Errorf("replacing a file with a bigger one under the cap: %v", err)
	}
	// Entries: ..1, ..1/a, then ..data, key1, key2 = 5; a sixth is refused,
	// its missing parent counted too.
	for _, e := range []Entry{{Path: "..data", Kind: Symlink, Target: "..1"}, {Path: "key1", Kind: Symlink, Target: "..data/a"}, {Path: "key2", Kind: Symlink, Target: "..data/a"}} {
		if err := put(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := put(Entry{Path: "key2", Kind: Symlink, Target: "..data/a"}); err != nil {
		t.Errorf("replacing a symlink adds no entry: %v", err)
	}
	err = put(Entry{Path: "sub/x", Kind: Dir, Mode: 0o755})
	if !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), "over the limit volumes.max_volume_entries = 5 entries: volume cm holds 5, this adds 2") {
		t.Fatalf("err = %v, want the entries cap", err)
	}
	// Removing makes room again.
	if err := v.Remove("cm", "..1"); err != nil {
		t.Fatal(err)
	}
	if err := put(Entry{Path: "sub/x", Kind: Dir, Mode: 0o755}); err != nil {
		t.Errorf("after removing ..1: %v", err)
	}
	if c, m := held(t, v, root, "cm"); c != m {
		t.Errorf("counted %+v, on disk %+v", c, m)
	}
}

func TestLimitsTotal(t *testing.T) {
	root := t.TempDir()
	v := New(root)
	v.SetLimits(Limits{TotalBytes: 100, TotalEntries: 1000})
	for i, name := range []string{"a", "b"} {
		if err := v.Put(name, Entry{Path: "f", Kind: File, Data: make([]byte, 40), Mode: 0o644}); err != nil {
			t.Fatalf("volume %d: %v", i, err)
		}
	}
	err := v.Put("c", Entry{Path: "f", Kind: File, Data: make([]byte, 40), Mode: 0o644})
	if !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), "over the limit volumes.max_total_bytes = 100 bytes: all volumes hold 80, this adds 40") {
		t.Fatalf("err = %v, want the total cap", err)
	}
	if err := v.RemoveVolume("a"); err != nil {
		t.Fatal(err)
	}
	if err := v.Put("c", Entry{Path: "f", Kind: File, Data: make([]byte, 40), Mode: 0o644}); err != nil {
		t.Errorf("after removing volume a: %v", err)
	}
}

// A volume that holds files before the service first touches it (an
// agent given an existing directory) is measured, not taken as empty.
func TestLimitsMeasureExisting(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "v", "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "v", "d", "f"), make([]byte, 70), 0o644); err != nil {
		t.Fatal(err)
	}
	v := New(root)
	v.SetLimits(Limits{VolumeBytes: 100})
	err := v.Put("v", Entry{Path: "g", Kind: File, Data: make([]byte, 40), Mode: 0o644})
	if !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), "holds 70") {
		t.Fatalf("err = %v, want the bytes cap counting the 70 already there", err)
	}
}

func TestDefaultLimits(t *testing.T) {
	got := DefaultLimits(256 << 20)
	want := Limits{VolumeBytes: 16 << 20, VolumeEntries: 8192, TotalBytes: 32 << 20, TotalEntries: 32768}
	if got != want {
		t.Errorf("DefaultLimits(256 MiB) = %+v, want %+v", got, want)
	}
	v := New(t.TempDir())
	v.SetLimits(Limits{VolumeEntries: 3})
	if l := v.Limits(); l.VolumeEntries != 3 || l.VolumeBytes != 16<<20 || l.TotalBytes <= 0 || l.TotalEntries <= 0 {
		t.Errorf("limits after SetLimits %+v: zero fields must take the defaults", l)
	}
}

// TestLimitsCountNonUTF8Names pins a FuzzCopyFile find: the volume was
// measured through io/fs, whose paths must be UTF-8, so a directory the
// host named "\xb1" made every later copy into the volume fail.
func TestLimitsCountNonUTF8Names(t *testing.T) {
	root := t.TempDir()
	v := New(root)
	if err := v.Put("v", Entry{Path: "\xb1/0", Kind: Symlink, Target: "0"}); err != nil {
		t.Fatal(err)
	}
	if err := v.Put("v", Entry{Path: "\xb1/f", Kind: File, Data: []byte("abc"), Mode: 0o644}); err != nil {
		t.Fatal(err)
	}
	if err := v.Remove("v", "\xb1"); err != nil {
		t.Fatal(err)
	}
	v.forget("v") // measure again from the directory
	if err := v.Put("v", Entry{Path: "\xb2/f", Kind: File, Data: []byte("abcd"), Mode: 0o644}); err != nil {
		t.Fatal(err)
	}
	if c, m := held(t, v, root, "v"); c != m || c != (usage{bytes: 4, entries: 2}) {
		t.Errorf("counted %+v, on disk %+v, want 4 bytes in 2 entries", c, m)
	}
}
