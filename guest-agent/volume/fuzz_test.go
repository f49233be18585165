package volume

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// FuzzCopyFile runs a script of Volume operations, one a line:
//
//	F<v> <path> <data>   a file in volume v0 or v1
//	D<v> <path>          a directory
//	L<v> <path> <target> a symlink
//	R<v> <path>          a removal
//	X<v>                 removal of the whole volume
//	N <name>             a file "f" in a volume of any name
//
// Whatever the script, nothing outside the volume root changes (a
// sentinel directory beside it keeps its content and times), nothing
// panics, and what the service counts for each volume is what is on disk,
// within the caps.
func FuzzCopyFile(f *testing.F) {
	for _, seed := range []string{
		"F0 a/b/c hello\nL0 link a/b/c\nR0 a\n",
		"F0 ..2026_01_01/key v1\nL0 ..data ..2026_01_01\nL0 key ..data/key\nF0 ..2026_01_02/key v2\nL0 ..data ..2026_01_02\nR0 ..2026_01_01\n",
		"F0 ../sentinel/keep pwned\nF0 /etc/passwd x\nL0 up ../sentinel\nL0 abs /tmp\nN ..\nN ../sentinel\n",
		"L0 loop loop\nF0 loop/x y\nD0 d\nL0 s d\nF0 s/f data\nR0 s\nR0 d\nX0\n",
		"D0 a\nF0 a data\nD0 a/b\nL0 a/b/c a\nF1 a/b " + strings.Repeat("z", 5000) + "\n",
		"F0 f 0123456789012345678901234567890123456789\nF1 f 0123456789012345678901234567890123456789\nF0 g xx\nX1\nF0 g xx\n",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, script string) {
		base := t.TempDir()
		root := filepath.Join(base, "volumes")
		sentinel := filepath.Join(base, "sentinel")
		if err := os.Mkdir(sentinel, 0o755); err != nil {
			t.Fatal(err)
		}
		keep := filepath.Join(sentinel, "keep")
		if err := os.WriteFile(keep, []byte("host"), 0o644); err != nil {
			t.Fatal(err)
		}
		old := time.Unix(1500000000, 0)
		for _, p := range []string{keep, sentinel} {
			if err := os.Chtimes(p, old, old); err != nil {
				t.Fatal(err)
			}
		}
		lim := Limits{VolumeBytes: 4096, VolumeEntries: 32, TotalBytes: 6000, TotalEntries: 48}
		v := New(root)
		v.SetLimits(lim)
		lines := strings.Split(script, "\n")
		if len(lines) > 64 {
			lines = lines[:64]
		}
		for _, line := range lines {
			if len(line) < 2 {
				continue
			}
			op, vol := line[0], "v"+line[1:2]
			rest := ""
			if len(line) > 3 {
				rest = line[3:]
			}
			p, arg, _ := strings.Cut(rest, " ")
			switch op {
			case 'F':
				_ = v.Put(vol, Entry{Path: p, Kind: File, Data: []byte(arg), Mode: 0o644})
			case 'D':
				_ = v.Put(vol, Entry{Path: p, Kind: Dir, Mode: 0o755})
			case 'L':
				_ = v.Put(vol, Entry{Path: p, Kind: Symlink, Target: arg})
			case 'R':
				_ = v.Remove(vol, p)
			case 'X':
				_ = v.RemoveVolume(vol)
			case 'N':
				_ = v.Put(strings.TrimPrefix(line, "N "), Entry{Path: "f", Kind: File, Data: []byte("x"), Mode: 0o644})
			}
			checkCounts(t, v, root, lim)
		}
		ents, err := os.ReadDir(base)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			if e.Name() != "volumes" && e.Name() != "sentinel" {
				t.Errorf("%s was created beside the volume root", e.Name())
			}
		}
		if ents, _ := os.ReadDir(sentinel); len(ents) != 1 {
			t.Errorf("sentinel directory holds %d entries, want 1", len(ents))
		}
		if b, err := os.ReadFile(keep); err != nil || string(b) != "host" {
			t.Errorf("sentinel file: %q %v", b, err)
		}
		for _, p := range []string{keep, sentinel} {
			if fi, err := os.Lstat(p); err != nil || !fi.ModTime().Equal(old) || (p == keep && fi.Mode() != 0o644) {
				t.Errorf("sentinel %s changed: %v %v", p, fi, err)
			}
		}
	})
}

// checkCounts asserts that every volume's count matches its directory
// and stays within the caps.
func checkCounts(t *testing.T, v *Volumes, root string, lim Limits) {
	t.Helper()
	v.mu.Lock()
	defer v.mu.Unlock()
	var sum usage
	for name, counted := range v.usage {
		r, err := os.OpenRoot(filepath.Join(root, name))
		if err != nil {
			t.Fatalf("volume %s counted but not openable: %v", name, err)
		}
		measured, err := measure(r, ".")
		r.Close()
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		if counted != measured {
			t.Fatalf("volume %s: counted %+v, on disk %+v", name, counted, measured)
		}
		if measured.bytes > lim.VolumeBytes || measured.entries > lim.VolumeEntries {
			t.Fatalf("volume %s holds %+v, over %+v", name, measured, lim)
		}
		sum.add(measured)
	}
	if sum != v.total || sum.bytes > lim.TotalBytes || sum.entries > lim.TotalEntries {
		t.Fatalf("total counted %+v, volumes sum to %+v, caps %+v", v.total, sum, lim)
	}
}
