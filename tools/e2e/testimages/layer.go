// Package testimages builds the container images the end-to-end tier uses
// from files already on this machine (Debian's busybox packages, the host's
// libc and the project's own pause program) and pushes them to a registry.
//
// Builds are deterministic: entries are sorted, every timestamp is fixed and
// owners are explicit, so the same inputs always give the same digests.
package testimages

import (
	"archive/tar"
	"bytes"
	"fmt"
	"path"
	"sort"
	"strings"
	"time"
)

// Epoch is the modification time of every file in every test image.
var Epoch = time.Unix(0, 0).UTC()

// Entry is one file system object in a layer.
type Entry struct {
	Path     string // inside the image, relative (no leading slash)
	Mode     int64  // permission bits (and sticky/setuid bits)
	Dir      bool
	Data     []byte // contents of a regular file
	Symlink  string // target of a symbolic link
	Hardlink string // path (inside the image) of the file this entry links to
	UID, GID int
}

func (e Entry) kind() string {
	switch {
	case e.Dir:
		return "dir"
	case e.Symlink != "":
		return "symlink"
	case e.Hardlink != "":
		return "hardlink"
	default:
		return "file"
	}
}

// File returns a regular file entry owned by root.
func File(p string, mode int64, data []byte) Entry {
	return Entry{Path: p, Mode: mode, Data: data}
}

// Dir returns a directory entry owned by root.
func Dir(p string, mode int64) Entry { return Entry{Path: p, Mode: mode, Dir: true} }

// Normalize cleans paths, adds missing parent directories (mode 0755), drops
// duplicates (the last entry for a path wins) and orders the entries so that
// a tar reader can extract them: directories, files and symlinks by path,
// then hard links by path (a hard link's target must already exist).
func Normalize(entries []Entry) ([]Entry, error) {
	byPath := map[string]Entry{}
	for _, e := range entries {
		p := strings.TrimPrefix(path.Clean("/"+e.Path), "/")
		if p == "" {
			return nil, fmt.Errorf("normalizing layer: entry %q names the root", e.Path)
		}
		e.Path = p
		if e.Hardlink != "" {
			e.Hardlink = strings.TrimPrefix(path.Clean("/"+e.Hardlink), "/")
		}
		byPath[p] = e
	}
	for p := range byPath {
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			if _, ok := byPath[d]; !ok {
				byPath[d] = Dir(d, 0o755)
			}
		}
	}
	var out []Entry
	for _, e := range byPath {
		if e.Hardlink != "" {
			t, ok := byPath[e.Hardlink]
			if !ok || t.kind() != "file" {
				return nil, fmt.Errorf("normalizing layer: hard link %q points at %q, which is not a regular file in the layer", e.Path, e.Hardlink)
			}
		}
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool {
		li, lj := out[i].Hardlink != "", out[j].Hardlink != ""
		if li != lj {
			return lj
		}
		return out[i].Path < out[j].Path
	})
	return out, nil
}

// LayerTar returns the uncompressed tar stream of a layer holding entries.
func LayerTar(entries []Entry) ([]byte, error) {
	norm, err := Normalize(entries)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range norm {
		h := &tar.Header{
			Name:    e.Path,
			Mode:    e.Mode,
			Uid:     e.UID,
			Gid:     e.GID,
			ModTime: Epoch,
			Format:  tar.FormatPAX,
		}
		switch e.kind() {
		case "dir":
			h.Typeflag = tar.TypeDir
			h.Name += "/"
		case "symlink":
			h.Typeflag = tar.TypeSymlink
			h.Linkname = e.Symlink
		case "hardlink":
			h.Typeflag = tar.TypeLink
			h.Linkname = e.Hardlink
		default:
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(e.Data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("writing tar header for %s: %w", e.Path, err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(e.Data); err != nil {
				return nil, fmt.Errorf("writing %s into layer: %w", e.Path, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("closing layer tar: %w", err)
	}
	return buf.Bytes(), nil
}
