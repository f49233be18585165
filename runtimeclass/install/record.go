package install

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/veil-runtime/veil/runtimeclass/containerdcfg"
)

// RecordFormat is the version of install.json this code writes.
const RecordFormat = 1

// Record is everything an install changed on the node, written to
// <prefix>/install.json before the change it describes is made.
type Record struct {
	Format   int      `json:"format"`
	Prefix   string   `json:"prefix"`
	Handlers []string `json:"handlers"`
	// Files are the installed files, relative to Prefix. Dirs are the
	// directories install created (host paths), parents first.
	Files []string `json:"files"`
	Dirs  []string `json:"dirs"`
	// DropIn is the drop-in file's host path and the sha256 written.
	DropIn       string            `json:"drop_in"`
	DropInSHA256 string            `json:"drop_in_sha256"`
	Config       ConfigChange      `json:"containerd_config"`
	Labels       map[string]string `json:"labels,omitempty"`
}

// ConfigChange is what install did to containerd's main config.
type ConfigChange struct {
	Path string `json:"path"`
	// Created: the file did not exist and install wrote it.
	Created bool `json:"created,omitempty"`
	// Edit is the import added (nil when the config already imported the
	// drop-in, e.g. containerd 2.x's stock conf.d/*.toml).
	Edit *containerdcfg.Edit `json:"edit,omitempty"`
	// Backup holds the original bytes (relative to the prefix);
	// OriginalSHA256 and WrittenSHA256 are the file before and after.
	Backup         string `json:"backup,omitempty"`
	OriginalSHA256 string `json:"original_sha256,omitempty"`
	WrittenSHA256  string `json:"written_sha256,omitempty"`
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// loadRecord reads the record at path; a missing record is (nil, nil).
func loadRecord(path string) (*Record, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading install record: %w", err)
	}
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("decoding install record %s: %w", path, err)
	}
	if r.Format < 1 || r.Format > RecordFormat {
		return nil, fmt.Errorf("install record %s has format %d; this veil knows formats 1 to %d: uninstall with the veil that installed it", path, r.Format, RecordFormat)
	}
	return &r, nil
}

func saveRecord(path string, r *Record) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding install record: %w", err)
	}
	return writeAtomic(path, append(b, '\n'), 0o644, nil)
}

// owner is a file's mode and ownership, kept when a file is replaced.
type owner struct {
	mode     fs.FileMode
	uid, gid int
}

func ownerOf(st fs.FileInfo) *owner {
	o := &owner{mode: st.Mode().Perm(), uid: -1, gid: -1}
	if s, ok := st.Sys().(*syscall.Stat_t); ok {
		o.uid, o.gid = int(s.Uid), int(s.Gid)
	}
	return o
}

// writeAtomic writes data to path through a temp file in the same directory
// and a rename, so readers see the old or the new file, never a part. With
// keep, the new file gets that mode and owner; else mode.
func writeAtomic(path string, data []byte, mode fs.FileMode, keep *owner) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".veil-tmp-*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if keep != nil {
		mode = keep.mode
		if keep.uid >= 0 {
			if err := tmp.Chown(keep.uid, keep.gid); err != nil {
				return fmt.Errorf("keeping the owner of %s: %w", path, err)
			}
		}
	}
	if err := tmp.Chmod(mode); err != nil {
		return fmt.Errorf("setting the mode of %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("replacing %s: %w", path, err)
	}
	done = true
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("syncing directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing directory %s: %w", dir, err)
	}
	return nil
}

// mkdirs creates dir and missing parents and returns those it created,
// parents first.
func mkdirs(dir string) ([]string, error) {
	var missing []string
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("creating %s: %w", dir, err)
		}
		missing = append([]string{d}, missing...)
		if d == filepath.Dir(d) {
			break
		}
	}
	for _, d := range missing {
		if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("creating %s: %w", d, err)
		}
	}
	return missing, nil
}
