// Package volume keeps the guest's copies of volumes that a confidential
// pod does not share with the host (configMap, secret, downward-API and
// projected volumes): the host sends each entry through the agent's Volume
// service and this package writes it under the volume's directory.
//
// Every write is confined to the volume directory: paths must be relative
// and free of "..", all file operations go through an os.Root opened on the
// volume (so no symlink, however raced, leads outside it), and a symlink
// entry's target must be relative without "..", so it can only point
// deeper into the volume. Entries are replaced
// atomically (written under a temporary name, then renamed), which is what
// Kubernetes' atomic-writer layout (..data -> ..<timestamp>) relies on for
// updates to reach a running container consistently.
//
// What the host may copy is capped (Limits): bytes and entries per volume
// and over all volumes, the defaults a share of the guest's memory, since
// the copies live in tmpfs. A copy over a cap is refused before anything
// is written, naming the init-data key ([volumes] table), its value and
// what the volume holds (ErrLimit, errdefs.ErrResourceExhausted). What a
// volume holds is measured from its directory the first time the service
// touches it and then kept up to date with each copy and removal; files a
// container writes into a volume later (an emptyDir) are its own memory,
// charged to its cgroup, and are only counted once a removal walks them.
package volume

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"

	"github.com/containerd/errdefs"
)

// DefaultRoot is where volumes live in the guest.
const DefaultRoot = "/run/veil/volumes"

// Kind is what an entry is.
type Kind int

const (
	File Kind = iota
	Dir
	Symlink
)

func (k Kind) String() string {
	switch k {
	case File:
		return "file"
	case Dir:
		return "directory"
	case Symlink:
		return "symlink"
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Entry is one file, directory or symlink of a volume.
type Entry struct {
	// Path inside the volume, slash separated and relative.
	Path string
	Kind Kind
	// Data is a file's content.
	Data []byte
	// Target is a symlink's target: relative, and inside the volume once
	// resolved from the link's directory.
	Target string
	// Mode holds permission bits (and setgid/sticky for directories).
	Mode     fs.FileMode
	UID, GID int
}

// Volumes writes entries under one root directory, one subdirectory per
// volume.
type Volumes struct {
	root   string
	memory int64

	mu     sync.Mutex // serialises writes, guards what follows
	limits Limits
	usage  map[string]usage // by volume, once measured
	total  usage            // sum of usage
}

// New returns Volumes rooted at root (DefaultRoot in the guest), capped
// by DefaultLimits of the machine's memory until SetLimits.
func New(root string) *Volumes {
	mem := totalMemory()
	return &Volumes{root: root, memory: mem, limits: DefaultLimits(mem), usage: map[string]usage{}}
}

// SetLimits replaces the caps; zero fields take DefaultLimits. What the
// volumes already hold stays, even over the new caps; further copies are
// checked against them.
func (v *Volumes) SetLimits(l Limits) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.limits = l.withDefaults(v.memory)
}

// Limits returns the caps in force.
func (v *Volumes) Limits() Limits {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.limits
}

// usageOf returns what volume name holds, measuring it on first use.
// Called with v.mu held.
func (v *Volumes) usageOf(name string, r *os.Root) (usage, error) {
	if u, ok := v.usage[name]; ok {
		return u, nil
	}
	u, err := measure(r, ".")
	if err != nil {
		return usage{}, fmt.Errorf("volume %s: measuring: %w", name, err)
	}
	v.usage[name] = u
	v.total.add(u)
	return u, nil
}

// charge records delta d for volume name; forget drops what is known of
// it (after a failed operation) so that the next use measures it again.
// Called with v.mu held.
func (v *Volumes) charge(name string, d usage) {
	u := v.usage[name]
	u.add(d)
	v.usage[name] = u
	v.total.add(d)
}

func (v *Volumes) forget(name string) {
	if u, ok := v.usage[name]; ok {
		v.total.add(u.neg())
		delete(v.usage, name)
	}
}

// Dir returns the directory of volume name (which it does not create), for
// binding into containers.
func (v *Volumes) Dir(name string) (string, error) {
	if err := checkName(name); err != nil {
		return "", err
	}
	return filepath.Join(v.root, name), nil
}

// Put creates or atomically replaces an entry of volume name, creating
// the volume and the entry's parent directories (mode 0755) when missing.
func (v *Volumes) Put(name string, e Entry) error {
	rel, err := cleanPath(e.Path)
	if err != nil {
		return err
	}
	if e.Mode&^(fs.ModePerm|fs.ModeSetgid|fs.ModeSetuid|fs.ModeSticky) != 0 {
		return fmt.Errorf("volume %s: %s: mode %v has more than permission bits: %w", name, rel, e.Mode, errdefs.ErrInvalidArgument)
	}
	if e.Kind == Symlink {
		if err := checkTarget(rel, e.Target); err != nil {
			return fmt.Errorf("volume %s: %w", name, err)
		}
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	r, err := v.open(name, true)
	if err != nil {
		return err
	}
	defer r.Close()
	held, err := v.usageOf(name, r)
	if err != nil {
		return err
	}
	d, err := delta(r, rel, e)
	if err != nil {
		return fmt.Errorf("volume %s: %s %s: %w", name, e.Kind, rel, confined(err))
	}
	if err := v.limits.check(name, held, v.total, d); err != nil {
		return fmt.Errorf("volume %s: %s %s: %w", name, e.Kind, rel, err)
	}
	ok := false
	defer func() {
		if ok {
			v.charge(name, d)
		} else {
			v.forget(name)
		}
	}()
	if dir := path.Dir(rel); dir != "." {
		if err := r.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("volume %s: creating %s: %w", name, dir, confined(err))
		}
	}
	switch e.Kind {
	case Dir:
		err = putDir(r, rel, e)
	case File:
		err = putFile(r, rel, e)
	case Symlink:
		err = putSymlink(r, rel, e)
	default:
		err = fmt.Errorf("unknown entry kind %d: %w", int(e.Kind), errdefs.ErrInvalidArgument)
	}
	if err != nil {
		return fmt.Errorf("volume %s: %s %s: %w", name, e.Kind, rel, confined(err))
	}
	ok = true
	return nil
}

// delta is what writing e at rel adds to its volume: the missing parent
// directories, the entry unless it replaces one, and its bytes less those
// of the file it replaces.
func delta(r *os.Root, rel string, e Entry) (usage, error) {
	old, fi, err := sizeOf(r, rel)
	if err != nil {
		return usage{}, err
	}
	parents, err := missingParents(r, rel)
	if err != nil {
		return usage{}, err
	}
	d := usage{entries: parents}
	switch {
	case fi == nil:
		d.entries++
	case e.Kind == Dir:
		return d, nil // an existing directory is kept (or refused)
	case fi.IsDir():
		return d, nil // a rename over a directory fails
	default:
		d.bytes -= old.bytes
	}
	if e.Kind == File {
		d.bytes += int64(len(e.Data))
	}
	return d, nil
}

// Remove removes an entry (a directory with everything in it). Removing
// what does not exist is not an error; the volume itself cannot be removed
// this way (use RemoveVolume).
func (v *Volumes) Remove(name, p string) error {
	rel, err := cleanPath(p)
	if err != nil {
		return err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	r, err := v.open(name, false)
	if errors.Is(err, errdefs.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	defer r.Close()
	if _, err := v.usageOf(name, r); err != nil {
		return err
	}
	gone, _, err := sizeOf(r, rel)
	if err != nil {
		return fmt.Errorf("volume %s: removing %s: %w", name, rel, confined(err))
	}
	if err := r.RemoveAll(rel); err != nil {
		v.forget(name)
		return fmt.Errorf("volume %s: removing %s: %w", name, rel, confined(err))
	}
	v.charge(name, gone.neg())
	return nil
}

// RemoveVolume removes volume name and everything in it.
func (v *Volumes) RemoveVolume(name string) error {
	dir, err := v.Dir(name)
	if err != nil {
		return err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.forget(name)
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("removing volume %s: %w", name, err)
	}
	return nil
}

func (v *Volumes) open(name string, create bool) (*os.Root, error) {
	dir, err := v.Dir(name)
	if err != nil {
		return nil, err
	}
	if create {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("creating volume %s: %w", name, err)
		}
	}
	r, err := os.OpenRoot(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("volume %s: %w", name, errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("opening volume %s: %w", name, err)
	}
	return r, nil
}

func putDir(r *os.Root, rel string, e Entry) error {
	err := r.Mkdir(rel, e.Mode.Perm())
	if err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	fi, err := r.Lstat(rel)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s exists and is not a directory: %w", rel, errdefs.ErrAlreadyExists)
	}
	if err := r.Chmod(rel, e.Mode); err != nil {
		return err
	}
	return r.Lchown(rel, e.UID, e.GID)
}

func putFile(r *os.Root, rel string, e Entry) (err error) {
	tmp, err := tempName(rel)
	if err != nil {
		return err
	}
	f, err := r.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = r.Remove(tmp)
		}
	}()
	_, werr := f.Write(e.Data)
	err = errors.Join(werr, f.Chown(e.UID, e.GID), f.Chmod(e.Mode), f.Sync(), f.Close())
	if err != nil {
		return err
	}
	return r.Rename(tmp, rel)
}

func putSymlink(r *os.Root, rel string, e Entry) (err error) {
	tmp, err := tempName(rel)
	if err != nil {
		return err
	}
	if err := r.Symlink(e.Target, tmp); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = r.Remove(tmp)
		}
	}()
	if err := r.Lchown(tmp, e.UID, e.GID); err != nil {
		return err
	}
	return r.Rename(tmp, rel)
}

// tempName is a fresh name beside rel for writing before the rename.
func tempName(rel string) (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return path.Join(path.Dir(rel), ".veil-tmp-"+hex.EncodeToString(b[:])), nil
}

// checkName accepts a volume name: one path element.
func checkName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("volume name %q: want one path element: %w", name, errdefs.ErrInvalidArgument)
	}
	return nil
}

// cleanPath accepts a path inside a volume and returns it cleaned.
func cleanPath(p string) (string, error) {
	switch {
	case p == "":
		return "", fmt.Errorf("empty path: %w", errdefs.ErrInvalidArgument)
	case strings.Contains(p, "\x00"):
		return "", fmt.Errorf("path %q contains a NUL byte: %w", p, errdefs.ErrInvalidArgument)
	case path.IsAbs(p):
		return "", fmt.Errorf("path %q is absolute; give it relative to the volume: %w", p, errdefs.ErrInvalidArgument)
	}
	for _, el := range strings.Split(p, "/") {
		if el == ".." {
			return "", fmt.Errorf("path %q contains \"..\": %w", p, errdefs.ErrInvalidArgument)
		}
	}
	c := path.Clean(p)
	if c == "." {
		return "", fmt.Errorf("path %q names the volume itself: %w", p, errdefs.ErrInvalidArgument)
	}
	return c, nil
}

// checkTarget accepts a symlink target that is relative and has no ".."
// element: resolved from the link's directory it can only go deeper, so a
// chain of such links never leaves the volume. (Kubernetes' layout,
// "key -> ..data/key", "..data -> ..2024_01_01...", fits.)
func checkTarget(rel, target string) error {
	switch {
	case target == "":
		return fmt.Errorf("symlink %s: empty target: %w", rel, errdefs.ErrInvalidArgument)
	case path.IsAbs(target):
		return fmt.Errorf("symlink %s: target %q is absolute: %w", rel, target, errdefs.ErrInvalidArgument)
	case strings.Contains(target, "\x00"):
		return fmt.Errorf("symlink %s: target contains a NUL byte: %w", rel, errdefs.ErrInvalidArgument)
	}
	for _, el := range strings.Split(target, "/") {
		if el == ".." {
			return fmt.Errorf("symlink %s: target %q contains \"..\": %w", rel, target, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// confined marks an os.Root refusal (a path that would leave the volume)
// as an invalid argument, so callers see a refusal, not an I/O error.
func confined(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) && strings.Contains(pe.Err.Error(), "escapes from parent") {
		return fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument)
	}
	return err
}
