package volume

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strings"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
)

// Limits caps what the host may copy into the guest's memory through the
// Volume service (the volumes live in tmpfs). A zero field takes its
// default from DefaultLimits. They are set from the init-data's [volumes]
// table (attestation/initdata).
type Limits struct {
	// VolumeBytes caps the file bytes of one volume
	// (volumes.max_volume_bytes).
	VolumeBytes int64
	// VolumeEntries caps the files, directories and symlinks of one
	// volume (volumes.max_volume_entries).
	VolumeEntries int64
	// TotalBytes caps the file bytes of all volumes
	// (volumes.max_total_bytes).
	TotalBytes int64
	// TotalEntries caps the entries of all volumes
	// (volumes.max_total_entries).
	TotalEntries int64
}

// The init-data keys of the caps, as refusals name them.
const (
	KeyMaxVolumeBytes   = "volumes.max_volume_bytes"
	KeyMaxVolumeEntries = "volumes.max_volume_entries"
	KeyMaxTotalBytes    = "volumes.max_total_bytes"
	KeyMaxTotalEntries  = "volumes.max_total_entries"
)

// entryCost is what one empty tmpfs file costs in kernel memory, rounded
// up (752 bytes of inode and 192 of dentry, measured; see image.Limits).
const entryCost = 1 << 10

// DefaultLimits are the caps for a guest with memory bytes of RAM. A
// volume may hold 16 MiB in 8192 entries: Kubernetes keeps a configMap or
// a secret under 1 MiB (etcd's object limit), a projected volume combines
// a few, and the atomic writer holds each key twice (file and symlink),
// and an update's old and new copies at once, so that is room for
// thousands of keys. All volumes together may take an eighth of memory,
// in bytes and in entries (one per KiB): what the host copies cannot
// crowd out the images and the workload (/run is a tmpfs of half the
// memory): 26.3 MiB and 26,972 entries in the 256 MiB base guest
// (MemTotal 210.7 MiB).
func DefaultLimits(memory int64) Limits {
	if memory <= 0 {
		memory = 1 << 30
	}
	e := memory / 8
	return Limits{VolumeBytes: 16 << 20, VolumeEntries: 8192, TotalBytes: e, TotalEntries: e / entryCost}
}

func (l Limits) withDefaults(memory int64) Limits {
	d := DefaultLimits(memory)
	for _, f := range []struct{ v, def *int64 }{
		{&l.VolumeBytes, &d.VolumeBytes},
		{&l.VolumeEntries, &d.VolumeEntries},
		{&l.TotalBytes, &d.TotalBytes},
		{&l.TotalEntries, &d.TotalEntries},
	} {
		if *f.v <= 0 {
			*f.v = *f.def
		}
	}
	return l
}

// ErrLimit is wrapped by the refusal of a copy over a cap (with
// errdefs.ErrResourceExhausted).
var ErrLimit = errors.New("volume copy over a limit")

// usage is what a volume (or all of them) holds.
type usage struct {
	bytes, entries int64
}

func (u *usage) add(d usage) {
	u.bytes = max(u.bytes+d.bytes, 0)
	u.entries = max(u.entries+d.entries, 0)
}

func (u usage) neg() usage { return usage{-u.bytes, -u.entries} }

// check refuses delta d when it would take vol or total over a cap.
func (l Limits) check(name string, vol, total, d usage) error {
	for _, c := range []struct {
		key       string
		max, have int64
		add       int64
		unit      string
		scope     string
	}{
		{KeyMaxVolumeBytes, l.VolumeBytes, vol.bytes, d.bytes, "bytes", "volume " + name + " holds"},
		{KeyMaxVolumeEntries, l.VolumeEntries, vol.entries, d.entries, "entries", "volume " + name + " holds"},
		{KeyMaxTotalBytes, l.TotalBytes, total.bytes, d.bytes, "bytes", "all volumes hold"},
		{KeyMaxTotalEntries, l.TotalEntries, total.entries, d.entries, "entries", "all volumes hold"},
	} {
		if c.add > 0 && c.have+c.add > c.max {
			return fmt.Errorf("over the limit %s = %d %s: %s %d, this adds %d: %w: %w", c.key, c.max, c.unit, c.scope, c.have, c.add, ErrLimit, errdefs.ErrResourceExhausted)
		}
	}
	return nil
}

// measure walks dir in a volume (without following symlinks) and
// returns what is below it. It reads directories through the root, not
// through io/fs, whose paths must be UTF-8: a name the host chose need not
// be.
func measure(r *os.Root, dir string) (usage, error) {
	f, err := r.Open(dir)
	if err != nil {
		return usage{}, err
	}
	ents, err := f.ReadDir(-1)
	f.Close()
	if err != nil {
		return usage{}, err
	}
	var u usage
	for _, e := range ents {
		p := path.Join(dir, e.Name())
		u.entries++
		switch {
		case e.Type().IsRegular():
			fi, err := e.Info()
			if err != nil {
				return usage{}, err
			}
			u.bytes += fi.Size()
		case e.IsDir():
			sub, err := measure(r, p)
			if err != nil {
				return usage{}, err
			}
			u.add(sub)
		}
	}
	return u, nil
}

// sizeOf is what the entry at rel holds now: nothing when it is missing.
func sizeOf(r *os.Root, rel string) (usage, fs.FileInfo, error) {
	fi, err := r.Lstat(rel)
	if errors.Is(err, fs.ErrNotExist) {
		return usage{}, nil, nil
	}
	if err != nil {
		return usage{}, nil, err
	}
	switch {
	case fi.IsDir():
		u, err := measure(r, rel)
		u.entries++ // the directory itself
		return u, fi, err
	case fi.Mode().IsRegular():
		return usage{fi.Size(), 1}, fi, nil
	}
	return usage{0, 1}, fi, nil
}

// missingParents counts the directories MkdirAll would create for rel. A
// parent that is a symlink to nothing is refused: MkdirAll would create
// its target, somewhere else in the volume than the count assumes.
func missingParents(r *os.Root, rel string) (int64, error) {
	dir := path.Dir(rel)
	if dir == "." {
		return 0, nil
	}
	var n int64
	parts := strings.Split(dir, "/")
	for i := range parts {
		p := strings.Join(parts[:i+1], "/")
		fi, err := r.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			n++
			continue
		}
		if err != nil {
			break // MkdirAll fails here and says why
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			if _, err := r.Stat(p); errors.Is(err, fs.ErrNotExist) {
				return 0, fmt.Errorf("parent %s is a symlink to nothing: %w", p, errdefs.ErrInvalidArgument)
			}
		}
	}
	return n, nil
}

// totalMemory is the machine's RAM (sysinfo(2)), 0 when unknown.
func totalMemory() int64 {
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		return 0
	}
	return int64(si.Totalram) * int64(si.Unit)
}
