// Package unpack applies OCI/Docker image layers (tar streams, optionally
// gzip or zstd compressed) to a root directory: whiteouts (.wh.<name> and
// the opaque .wh..wh..opq), hard links, symlinks, FIFOs, ownership, modes,
// extended attributes and times. Device nodes are skipped (the runtime
// creates /dev). An entry whose name leaves the root ("../x") is refused;
// symlinks met while resolving an entry's parent directories are resolved
// inside the root (github.com/cyphar/filepath-securejoin), so a layer can
// never write outside it. The caller owns root exclusively while a layer is
// applied (the puller unpacks into a private temporary directory).
//
// Layer computes the uncompressed digest while streaming and checks it
// against the config's diffID itself, whatever the decompressor or the
// decryption below it claims; it never holds a layer in memory.
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

// Layer decompresses blob (gzip, zstd or plain tar, told by its magic
// bytes), applies it to root and checks the sha256 of the uncompressed
// stream against diffID ("sha256:<hex>"). It reads blob to its end, so a
// verifying or authenticating reader below (digest, HMAC) sees EOF and
// reports its verdict. On error root holds a partial layer: the caller
// discards it.
func Layer(root string, blob io.Reader, diffID string, log *slog.Logger) error {
	want, ok := strings.CutPrefix(diffID, "sha256:")
	if !ok || len(want) != sha256.Size*2 {
		return fmt.Errorf("diffID %q is not a sha256 digest", diffID)
	}
	br := bufio.NewReaderSize(blob, 64<<10)
	magic, err := br.Peek(4)
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("reading layer: %w", err)
	}
	var plain io.Reader
	switch {
	case bytes.HasPrefix(magic, gzipMagic):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return fmt.Errorf("opening gzip layer: %w", err)
		}
		defer zr.Close()
		plain = zr
	case bytes.HasPrefix(magic, zstdMagic):
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
		if err != nil {
			return fmt.Errorf("opening zstd layer: %w", err)
		}
		defer zr.Close()
		plain = zr
	default:
		plain = br
	}
	h := sha256.New()
	tee := io.TeeReader(plain, h)
	if err := Apply(root, tee, log); err != nil {
		return err
	}
	// The tar end marker may be followed by padding: the digest covers it.
	if _, err := io.Copy(io.Discard, tee); err != nil {
		return fmt.Errorf("reading layer: %w", err)
	}
	if _, err := io.Copy(io.Discard, br); err != nil {
		return fmt.Errorf("reading layer: %w", err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return fmt.Errorf("%w: got sha256:%s, config says %s", ErrDiffID, got, diffID)
	}
	return nil
}

// Apply extracts the tar stream r into root, an existing directory.
func Apply(root string, r io.Reader, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &applier{root: root, log: log, created: map[string]bool{}, buf: make([]byte, 128<<10)}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("reading layer tar: %w", err)
		}
		if err := a.entry(hdr, tr); err != nil {
			return fmt.Errorf("unpacking %q: %w", hdr.Name, err)
		}
	}
	// Directory times last: creating entries inside changes them.
	for i := len(a.dirs) - 1; i >= 0; i-- {
		if err := setTimes(a.dirs[i].path, a.dirs[i].hdr); err != nil {
			return fmt.Errorf("setting times of %q: %w", a.dirs[i].hdr.Name, err)
		}
	}
	return nil
}

type dirTimes struct {
	path string
	hdr  *tar.Header
}

type applier struct {
	root    string
	log     *slog.Logger
	created map[string]bool // names (cleaned) this layer wrote
	dirs    []dirTimes
	buf     []byte
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
	return a.metadata(p, hdr)
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
		a.dirs = append(a.dirs, dirTimes{path: p, hdr: hdr})
		return nil
	}
	return setTimes(p, hdr)
}

func setTimes(p string, hdr *tar.Header) error {
	atime := hdr.AccessTime
	if atime.IsZero() {
		atime = hdr.ModTime
	}
	ts := []unix.Timespec{timespec(atime), timespec(hdr.ModTime)}
	return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
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
