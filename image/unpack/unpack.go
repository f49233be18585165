// Package unpack applies OCI/Docker image layers (tar streams, optionally
// gzip or zstd compressed) to a root directory: whiteouts (.wh.<name> and
// the opaque .wh..wh..opq), hard links, symlinks, FIFOs, ownership, modes,
// extended attributes and times. Device nodes are skipped (the runtime
// creates /dev). An entry whose name leaves the root ("../x") is refused;
// symlinks met while resolving an entry's parent directories are resolved
// inside the root (github.com/cyphar/filepath-securejoin), so a layer can
// never write outside it. Directory times, set after the last entry (the
// entries inside change them), go through a file descriptor opened
// beneath the root with openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS): a
// later entry that replaced a parent with a symlink cannot carry them
// outside (the directory is then skipped; openat2 needs Linux 5.6, the
// guest has 6.12). The caller owns root
// exclusively while a layer is applied (the puller unpacks into a private
// temporary directory).
//
// Layer computes the uncompressed digest while streaming and checks it
// against the config's diffID itself, whatever the decompressor or the
// decryption below it claims; it never holds a layer in memory. Limits
// caps what a layer may take (uncompressed bytes, entries), each cap
// checked while the stream is read, so a decompression bomb stops at the
// cap rather than when memory runs out; a refusal is a *LimitError naming
// the cap and its value.
package unpack

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	securejoin "github.com/cyphar/filepath-securejoin"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"
)

const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh."
	whiteoutOpaque = ".wh..wh..opq"
	xattrPrefix    = "SCHILY.xattr."
)

var (
	gzipMagic = []byte{0x1f, 0x8b}
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
)

// ErrEscape is wrapped by the error for an entry whose name or hard-link
// target leaves the root.
var ErrEscape = errors.New("path escapes the rootfs")

// ErrDiffID is wrapped by the error for a layer whose uncompressed digest
// is not the config's diffID.
var ErrDiffID = errors.New("uncompressed layer digest does not match the image config's diffID")

// Cap is one limit on a layer. Name says which it is in a refusal (the
// caller's name for it, such as an init-data key), Max is its value (0 or
// less: no cap) and Used what earlier layers already took of it (a cap on
// a whole image spans its layers).
type Cap struct {
	Name string
	Max  int64
	Used int64
}

// left is what remains of c, or -1 when c caps nothing.
func (c Cap) left() int64 {
	if c.Max <= 0 {
		return -1
	}
	return max(c.Max-c.Used, 0)
}

// Limits are the caps a layer is unpacked under; the zero value caps
// nothing.
type Limits struct {
	// Bytes cap the uncompressed layer: the tar stream (headers, padding
	// and anything after the end marker included) and, for sparse files,
	// their full size.
	Bytes []Cap
	// Entries cap the number of tar entries (headers).
	Entries []Cap
}

// Stats is what a layer took of its caps.
type Stats struct {
	// Bytes is the uncompressed size as Limits.Bytes counts it.
	Bytes int64
	// Entries is the number of tar entries.
	Entries int64
}

// ErrLimit is wrapped by every *LimitError.
var ErrLimit = errors.New("layer over a limit")

// LimitError is the refusal of a layer that goes over one of its caps.
type LimitError struct {
	// Cap is the cap it went over.
	Cap Cap
	// Unit is what the cap counts: "bytes uncompressed" or "entries".
	Unit string
}

func (e *LimitError) Error() string {
	s := fmt.Sprintf("over the limit %s = %d %s", e.Cap.Name, e.Cap.Max, e.Unit)
	if e.Cap.Used > 0 {
		s += fmt.Sprintf(" (earlier layers took %d)", e.Cap.Used)
	}
	return s
}

func (e *LimitError) Unwrap() error { return ErrLimit }

const (
	unitBytes   = "bytes uncompressed"
	unitEntries = "entries"
)

// tightest returns the cap of caps with the least left after n more, and
// whether n more goes over it.
func tightest(caps []Cap, n int64) (Cap, bool) {
	var best Cap
	bestLeft := int64(-1)
	for _, c := range caps {
		l := c.left()
		if l < 0 {
			continue
		}
		if bestLeft < 0 || l < bestLeft {
			best, bestLeft = c, l
		}
	}
	return best, bestLeft >= 0 && n > bestLeft
}

// capReader counts the bytes read through it and fails with a
// *LimitError on the first byte past its tightest cap; it never reads
// more than one byte past it.
type capReader struct {
	r    io.Reader
	caps []Cap
	n    int64
}

func (c *capReader) Read(p []byte) (int, error) {
	if cp, _ := tightest(c.caps, 0); cp.Max > 0 {
		left := cp.left() - c.n
		if left <= 0 {
			var b [1]byte
			n, err := io.ReadFull(c.r, b[:])
			if n == 0 {
				return 0, err
			}
			return 0, &LimitError{Cap: cp, Unit: unitBytes}
		}
		if int64(len(p)) > left {
			p = p[:left]
		}
	}
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// Layer decompresses blob (gzip, zstd or plain tar, told by its magic
// bytes), applies it to root under lim and checks the sha256 of the
// uncompressed stream against diffID ("sha256:<hex>"). It reads blob to
// its end, so a verifying or authenticating reader below (digest, HMAC)
// sees EOF and reports its verdict. On error root holds a partial layer:
// the caller discards it.
func Layer(root string, blob io.Reader, diffID string, lim Limits, log *slog.Logger) (Stats, error) {
	want, ok := strings.CutPrefix(diffID, "sha256:")
	if !ok || len(want) != sha256.Size*2 {
		return Stats{}, fmt.Errorf("diffID %q is not a sha256 digest", diffID)
	}
	br := bufio.NewReaderSize(blob, 64<<10)
	magic, err := br.Peek(4)
	if err != nil && !errors.Is(err, io.EOF) {
		return Stats{}, fmt.Errorf("reading layer: %w", err)
	}
	var plain io.Reader
	switch {
	case bytes.HasPrefix(magic, gzipMagic):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return Stats{}, fmt.Errorf("opening gzip layer: %w", err)
		}
		defer zr.Close()
		plain = zr
	case bytes.HasPrefix(magic, zstdMagic):
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
		if err != nil {
			return Stats{}, fmt.Errorf("opening zstd layer: %w", err)
		}
		defer zr.Close()
		plain = zr
	default:
		plain = br
	}
	h := sha256.New()
	// The tar end marker may be followed by padding: the digest and the
	// caps cover it.
	st, err := apply(root, io.TeeReader(plain, h), lim, log, true)
	if err != nil {
		return st, err
	}
	if _, err := io.Copy(io.Discard, br); err != nil {
		return st, fmt.Errorf("reading layer: %w", err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return st, fmt.Errorf("%w: got sha256:%s, config says %s", ErrDiffID, got, diffID)
	}
	return st, nil
}

// Apply extracts the tar stream r into root, an existing directory, under
// lim. It stops reading at the tar end marker.
func Apply(root string, r io.Reader, lim Limits, log *slog.Logger) (Stats, error) {
	return apply(root, r, lim, log, false)
}

func apply(root string, r io.Reader, lim Limits, log *slog.Logger, drain bool) (Stats, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cr := &capReader{r: r, caps: lim.Bytes}
	a := &applier{root: root, log: log, lim: lim, stream: cr, created: map[string]bool{}, dirIndex: map[string]int{}, buf: make([]byte, 128<<10)}
	tr := tar.NewReader(cr)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return a.stats(), fmt.Errorf("reading layer tar: %w", err)
		}
		a.entries++
		if cp, over := tightest(lim.Entries, a.entries); over {
			return a.stats(), fmt.Errorf("unpacking %q: %w", hdr.Name, &LimitError{Cap: cp, Unit: unitEntries})
		}
		if err := a.entry(hdr, tr); err != nil {
			return a.stats(), fmt.Errorf("unpacking %q: %w", hdr.Name, err)
		}
	}
	if drain {
		if _, err := io.Copy(io.Discard, cr); err != nil {
			return a.stats(), fmt.Errorf("reading layer: %w", err)
		}
	}
	if err := a.setDirTimes(); err != nil {
		return a.stats(), err
	}
	return a.stats(), nil
}

type dirTimes struct {
	rel string
	hdr *tar.Header
}

type applier struct {
	root     string
	log      *slog.Logger
	lim      Limits
	stream   *capReader
	entries  int64
	files    int64           // full sizes of the regular files so far
	created  map[string]bool // names (cleaned) this layer wrote
	dirs     []dirTimes
	dirIndex map[string]int // rel -> index in dirs
	buf      []byte
}

func (a *applier) stats() Stats {
	return Stats{Bytes: max(a.stream.n, a.files), Entries: a.entries}
}

// setDirTimes sets the times of the directories the layer created, now
// that nothing more is created inside them. Each is opened beneath the
// root without following any symlink: a directory that a later entry
// replaced, or whose parent it replaced with a symlink, is skipped, never
// resolved through the symlink.
func (a *applier) setDirTimes() error {
	if len(a.dirs) == 0 {
		return nil
	}
	rootFD, err := unix.Open(a.root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening the rootfs %s: %w", a.root, err)
	}
	defer unix.Close(rootFD)
	how := &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	}
	for _, d := range a.dirs {
		fd, err := unix.Openat2(rootFD, d.rel, how)
		if err != nil {
			if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.EXDEV) {
				a.log.Debug("directory replaced later in the layer: times not set", "name", d.hdr.Name, "err", err)
				continue
			}
			return fmt.Errorf("opening %q to set its times: %w", d.hdr.Name, err)
		}
		err = unix.UtimesNanoAt(fd, "", headerTimes(d.hdr), unix.AT_EMPTY_PATH)
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("setting times of %q: %w", d.hdr.Name, err)
		}
	}
	return nil
}

// clean returns name relative to the root, or an error if it leaves it.
// Absolute names are taken relative to the root, as container runtimes do.
func clean(name string) (string, error) {
	c := path.Clean(strings.TrimLeft(name, "/"))
	if c == ".." || strings.HasPrefix(c, "../") {
		return "", fmt.Errorf("%w: %q", ErrEscape, name)
	}
	return c, nil
}

// resolve returns the host path of rel: its parent directories resolved
// inside the root, its last element not followed (it may be a symlink
// that is about to be replaced or hard-linked).
func (a *applier) resolve(rel string) (string, error) {
	dir, base := path.Split(rel)
	parent, err := securejoin.SecureJoin(a.root, dir)
	if err != nil {
		return "", fmt.Errorf("resolving %q in the rootfs: %w", dir, err)
	}
	return filepath.Join(parent, base), nil
}

func (a *applier) entry(hdr *tar.Header, tr io.Reader) error {
	rel, err := clean(hdr.Name)
	if err != nil {
		return err
	}
	if rel == "." {
		return nil // the root itself: its mode is the puller's
	}
	dir, base := path.Split(rel)
	if strings.HasPrefix(base, whiteoutPrefix) {
		return a.whiteout(rel, dir, base)
	}
	p, err := a.resolve(rel)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("creating parent directory: %w", err)
	}
	if fi, err := os.Lstat(p); err == nil {
		if !(fi.IsDir() && hdr.Typeflag == tar.TypeDir) {
			if err := os.RemoveAll(p); err != nil {
				return fmt.Errorf("replacing existing entry: %w", err)
			}
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}

	switch hdr.Typeflag {
	case tar.TypeDir:
		if err := os.Mkdir(p, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
	case tar.TypeReg, tar.TypeRegA: //nolint:staticcheck // old archives still use TypeRegA
		// Refuse a file the caps cannot hold before writing any of it:
		// a sparse file's holes cost no stream bytes but fill memory.
		if cp, over := tightest(a.lim.Bytes, max(a.stream.n, a.files)+hdr.Size); over {
			return &LimitError{Cap: cp, Unit: unitBytes}
		}
		a.files += hdr.Size
		f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY|unix.O_NOFOLLOW, 0o600)
		if err != nil {
			return err
		}
		_, err = io.CopyBuffer(f, tr, a.buf)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("writing file: %w", err)
		}
	case tar.TypeSymlink:
		if err := os.Symlink(hdr.Linkname, p); err != nil {
			return err
		}
	case tar.TypeLink:
		lrel, err := clean(hdr.Linkname)
		if err != nil {
			return fmt.Errorf("hard link target: %w", err)
		}
		if lrel == "." {
			return fmt.Errorf("hard link to the rootfs directory")
		}
		target, err := a.resolve(lrel)
		if err != nil {
			return err
		}
		if err := os.Link(target, p); err != nil {
			return fmt.Errorf("hard link to %q: %w", hdr.Linkname, err)
		}
		a.created[rel] = true
		return nil // a hard link shares its target's metadata
	case tar.TypeFifo:
		if err := unix.Mkfifo(p, 0o600); err != nil {
			return err
		}
	case tar.TypeChar, tar.TypeBlock:
		a.log.Debug("skipping device node in layer", "name", hdr.Name)
		return nil
	default:
		a.log.Debug("skipping tar entry of unsupported type", "name", hdr.Name, "type", string(hdr.Typeflag))
		return nil
	}
	a.created[rel] = true
	if err := a.metadata(p, hdr); err != nil {
		return err
	}
	if hdr.Typeflag == tar.TypeDir {
		// The last header of a directory gives its times.
		if i, ok := a.dirIndex[rel]; ok {
			a.dirs[i].hdr = hdr
		} else {
			a.dirIndex[rel] = len(a.dirs)
			a.dirs = append(a.dirs, dirTimes{rel: rel, hdr: hdr})
		}
	}
	return nil
}

// metadata sets owner, xattrs, mode and times; chown before chmod, since
// chown clears set-user-ID bits.
func (a *applier) metadata(p string, hdr *tar.Header) error {
	if err := os.Lchown(p, hdr.Uid, hdr.Gid); err != nil {
		return err
	}
	for k, v := range hdr.PAXRecords {
		name, ok := strings.CutPrefix(k, xattrPrefix)
		if !ok {
			continue
		}
		if err := unix.Lsetxattr(p, name, []byte(v), 0); err != nil {
			if errors.Is(err, unix.ENOTSUP) {
				a.log.Debug("filesystem does not support xattr", "name", hdr.Name, "xattr", name)
				continue
			}
			return fmt.Errorf("setting xattr %s: %w", name, err)
		}
	}
	if hdr.Typeflag == tar.TypeSymlink {
		return setTimes(p, hdr)
	}
	if err := os.Chmod(p, hdr.FileInfo().Mode()&(os.ModePerm|os.ModeSetuid|os.ModeSetgid|os.ModeSticky)); err != nil {
		return err
	}
	if hdr.Typeflag == tar.TypeDir {
		return nil // set by setDirTimes at the end
	}
	return setTimes(p, hdr)
}

// setTimes sets the times of p, just created (its parents resolved inside
// the root a moment ago); p itself is not followed.
func setTimes(p string, hdr *tar.Header) error {
	return unix.UtimesNanoAt(unix.AT_FDCWD, p, headerTimes(hdr), unix.AT_SYMLINK_NOFOLLOW)
}

func headerTimes(hdr *tar.Header) []unix.Timespec {
	atime := hdr.AccessTime
	if atime.IsZero() {
		atime = hdr.ModTime
	}
	return []unix.Timespec{timespec(atime), timespec(hdr.ModTime)}
}

func timespec(t time.Time) unix.Timespec {
	if t.IsZero() {
		return unix.Timespec{Sec: 0, Nsec: unix.UTIME_OMIT}
	}
	return unix.NsecToTimespec(t.UnixNano())
}

// whiteout removes what an earlier layer put at dir/<name> for
// ".wh.<name>", or everything an earlier layer put in dir for the opaque
// marker. Other ".wh..wh." names are aufs metadata and are skipped.
func (a *applier) whiteout(rel, dir, base string) error {
	parent, err := securejoin.SecureJoin(a.root, dir)
	if err != nil {
		return fmt.Errorf("resolving %q in the rootfs: %w", dir, err)
	}
	if base == whiteoutOpaque {
		entries, err := os.ReadDir(parent)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("opaque whiteout: %w", err)
		}
		dirRel := path.Clean(dir)
		for _, e := range entries {
			if a.created[path.Join(dirRel, e.Name())] {
				continue
			}
			if err := os.RemoveAll(filepath.Join(parent, e.Name())); err != nil {
				return fmt.Errorf("opaque whiteout: %w", err)
			}
		}
		return nil
	}
	if strings.HasPrefix(base, whiteoutMeta) {
		return nil
	}
	name := strings.TrimPrefix(base, whiteoutPrefix)
	if name == "" || name == "." || name == ".." || strings.Contains(name, "/") {
		return fmt.Errorf("whiteout %q names no entry", rel)
	}
	if err := os.RemoveAll(filepath.Join(parent, name)); err != nil {
		return fmt.Errorf("whiteout: %w", err)
	}
	return nil
}
