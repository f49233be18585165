// Package cpio writes and reads the "newc" (SVR4, no CRC) cpio format the
// Linux kernel unpacks as an initramfs.
//
// Write produces byte-identical output for the same entries: entries are
// sorted by name, owned by uid/gid 0, stamped with one fixed mtime, numbered
// with inodes 1..n in that order and never hard-linked (nlink is 1 for files,
// 2 for directories). Read parses what Write (or any newc writer) produced
// and exists mainly so tests can check an archive's contents.
package cpio

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strconv"
	"strings"
)

// File types, as the high bits of Entry.Mode (the st_mode values).
const (
	TypeMask    = 0o170000
	TypeDir     = 0o040000
	TypeRegular = 0o100000
	TypeSymlink = 0o120000
	TypeChar    = 0o020000
)

const (
	magic      = "070701"
	headerSize = 110
	trailer    = "TRAILER!!!"
)

// Entry is one file of an archive.
type Entry struct {
	// Name is the path inside the archive, without a leading slash
	// ("usr/bin/runc").
	Name string
	// Mode is the file type (one of the Type constants) ORed with the
	// permission bits.
	Mode uint32
	// Data is a regular file's contents or a symlink's target; empty for
	// directories and devices.
	Data []byte
	// RdevMajor and RdevMinor are a device node's numbers.
	RdevMajor, RdevMinor uint32
	// Mtime is the modification time Read returns; Write ignores it and
	// uses its own fixed mtime.
	Mtime int64
}

// Write writes entries as one newc archive, with mtime (seconds since the
// epoch) on every entry, followed by the trailer. Names are cleaned, must
// be relative and unique, and every parent directory must be an entry too.
func Write(w io.Writer, entries []Entry, mtime int64) error {
	if mtime < 0 || mtime > 0xffffffff {
		return fmt.Errorf("writing cpio: mtime %d does not fit in 32 bits", mtime)
	}
	sorted := make([]Entry, len(entries))
	copy(sorted, entries)
	for i := range sorted {
		e := &sorted[i]
		clean := path.Clean(strings.TrimPrefix(e.Name, "/"))
		if clean == "." || strings.HasPrefix(clean, "../") || clean == ".." {
			return fmt.Errorf("writing cpio: entry name %q is not a path inside the archive", e.Name)
		}
		e.Name = clean
	}
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	dirs := map[string]bool{}
	for i, e := range sorted {
		if i > 0 && sorted[i-1].Name == e.Name {
			return fmt.Errorf("writing cpio: entry %q appears twice", e.Name)
		}
		if parent := path.Dir(e.Name); parent != "." && !dirs[parent] {
			return fmt.Errorf("writing cpio: entry %q has no parent directory entry %q", e.Name, parent)
		}
		switch e.Mode & TypeMask {
		case TypeDir:
			dirs[e.Name] = true
			if len(e.Data) != 0 {
				return fmt.Errorf("writing cpio: directory %q has data", e.Name)
			}
		case TypeRegular, TypeSymlink, TypeChar:
		default:
			return fmt.Errorf("writing cpio: entry %q has unsupported mode %#o", e.Name, e.Mode)
		}
	}

	bw := bufio.NewWriter(w)
	for i, e := range sorted {
		nlink := uint32(1)
		if e.Mode&TypeMask == TypeDir {
			nlink = 2
		}
		if err := writeEntry(bw, uint32(i+1), e, nlink, uint32(mtime)); err != nil {
			return err
		}
	}
	if err := writeEntry(bw, 0, Entry{Name: trailer}, 1, 0); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("writing cpio: %w", err)
	}
	return nil
}

func writeEntry(w io.Writer, ino uint32, e Entry, nlink, mtime uint32) error {
	if uint64(len(e.Data)) > 0xffffffff {
		return fmt.Errorf("writing cpio: entry %q is larger than 4 GiB", e.Name)
	}
	var h bytes.Buffer
	h.WriteString(magic)
	for _, v := range []uint32{
		ino, e.Mode, 0 /* uid */, 0 /* gid */, nlink, mtime, uint32(len(e.Data)),
		0, 0 /* dev major, minor */, e.RdevMajor, e.RdevMinor,
		uint32(len(e.Name) + 1), 0, /* check */
	} {
		fmt.Fprintf(&h, "%08x", v)
	}
	h.WriteString(e.Name)
	h.WriteByte(0)
	pad4(&h, h.Len())
	h.Write(e.Data)
	pad4(&h, len(e.Data))
	if _, err := w.Write(h.Bytes()); err != nil {
		return fmt.Errorf("writing cpio entry %q: %w", e.Name, err)
	}
	return nil
}

func pad4(b *bytes.Buffer, n int) {
	for ; n%4 != 0; n++ {
		b.WriteByte(0)
	}
}

// Read parses a newc archive up to its trailer and returns its entries in
// archive order. Inode and link counts are not returned.
func Read(r io.Reader) ([]Entry, error) {
	br := bufio.NewReader(r)
	var entries []Entry
	var off int64
	for {
		var h [headerSize]byte
		if _, err := io.ReadFull(br, h[:]); err != nil {
			return nil, fmt.Errorf("reading cpio header at offset %d: %w", off, err)
		}
		if string(h[:6]) != magic {
			return nil, fmt.Errorf("reading cpio header at offset %d: magic %q is not newc %q", off, h[:6], magic)
		}
		var f [13]uint32
		for i := range f {
			v, err := strconv.ParseUint(string(h[6+8*i:14+8*i]), 16, 32)
			if err != nil {
				return nil, fmt.Errorf("reading cpio header at offset %d: field %d: %w", off, i, err)
			}
			f[i] = uint32(v)
		}
		mode, mtime, size, rmaj, rmin, namesize := f[1], f[5], f[6], f[9], f[10], f[11]
		if namesize == 0 {
			return nil, fmt.Errorf("reading cpio header at offset %d: empty name", off)
		}
		nameLen := align4(headerSize+int64(namesize)) - headerSize
		name := make([]byte, nameLen)
		if _, err := io.ReadFull(br, name); err != nil {
			return nil, fmt.Errorf("reading cpio name at offset %d: %w", off, err)
		}
		data := make([]byte, align4(int64(size)))
		if _, err := io.ReadFull(br, data); err != nil {
			return nil, fmt.Errorf("reading cpio data at offset %d: %w", off, err)
		}
		off += headerSize + nameLen + int64(len(data))
		n := string(name[:namesize-1])
		if n == trailer {
			return entries, nil
		}
		entries = append(entries, Entry{
			Name: n, Mode: mode, Data: data[:size],
			RdevMajor: rmaj, RdevMinor: rmin, Mtime: int64(mtime),
		})
	}
}

func align4(n int64) int64 { return (n + 3) &^ 3 }

// ErrNotFound is returned by Find when no entry has the name.
var ErrNotFound = errors.New("cpio entry not found")

// Find returns the entry named name from entries.
func Find(entries []Entry, name string) (Entry, error) {
	for _, e := range entries {
		if e.Name == name {
			return e, nil
		}
	}
	return Entry{}, fmt.Errorf("%q: %w", name, ErrNotFound)
}
