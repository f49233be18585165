// Package volsync copies a host volume directory into the guest through the
// agent's Volume service and keeps the copy current, for pods that share
// nothing with the host (the confidential handlers): configMap, secret,
// downward-API and projected volumes, and the CRI-managed /etc/hosts,
// /etc/resolv.conf and /etc/hostname.
//
// A Syncer snapshots the host tree (lstat only: it never follows a symlink
// out of the volume) and sends what changed since the last sync, in an
// order that keeps a reader in the guest consistent under Kubernetes'
// atomic-writer layout (files in "..<timestamp>/", "..data" pointing at
// it, each key a link through "..data"): directories first (parents before
// children), then files, then symlinks, then removals (the outermost removed
// path only). The "..data" swap therefore happens after the new files exist
// and before the old directory goes, as on the host. Watch repeats the sync
// on an interval; kubelet itself refreshes these volumes on its sync period,
// so a one-second poll of a few small files keeps the guest within seconds of
// the host.
package volsync

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/veil-runtime/veil/guest-agent/api"
)

// MaxFileBytes bounds one copied file: the agent API carries a file in one
// message (ttrpc's limit is 4 MiB), and Kubernetes caps a configMap or
// secret at 1 MiB.
const MaxFileBytes = 3 << 20

// Copier is the agent's Volume service.
type Copier = api.VolumeService

// entry is one path of the host tree as last sent.
type entry struct {
	kind   api.CopyFileRequest_Kind
	mode   uint32
	uid    uint32
	gid    uint32
	target string   // symlink target
	sum    [32]byte // file content digest
}

// Syncer keeps one guest volume equal to one host directory (or file).
type Syncer struct {
	// Source is the host path: a directory, or a single file (sent as the
	// volume's entry Name).
	Source string
	// Volume names the guest volume (one path element).
	Volume string
	// Name is the entry name a single-file Source gets in the volume.
	Name   string
	Copier Copier
	Log    *slog.Logger

	sent map[string]entry
}

// Sync sends the changes since the last Sync (everything, the first time).
// An entry the guest would refuse (a symlink that is absolute or climbs
// with "..", a device, a socket, a file too large) fails the sync with an
// error naming it; entries sent before it stay sent.
func (s *Syncer) Sync(ctx context.Context) error {
	now, data, err := s.scan()
	if err != nil {
		return err
	}
	if s.sent == nil {
		s.sent = map[string]entry{}
	}
	var dirs, files, links, gone []string
	for p, e := range now {
		if old, ok := s.sent[p]; ok && old == e {
			continue
		}
		switch e.kind {
		case api.CopyFileRequest_DIR:
			dirs = append(dirs, p)
		case api.CopyFileRequest_FILE:
			files = append(files, p)
		case api.CopyFileRequest_SYMLINK:
			links = append(links, p)
		}
	}
	for p, old := range s.sent {
		if e, ok := now[p]; ok && e.kind == old.kind {
			continue
		}
		if _, ok := now[p]; ok {
			// Its kind changed: remove the old entry first.
			if err := s.remove(ctx, p); err != nil {
				return err
			}
			continue
		}
		gone = append(gone, p)
	}
	byDepth(dirs)
	sort.Strings(files)
	sort.Strings(links)
	for _, group := range [][]string{dirs, files, links} {
		for _, p := range group {
			if err := s.copy(ctx, p, now[p], data[p]); err != nil {
				return err
			}
		}
	}
	byDepth(gone)
	removed := map[string]bool{}
	for _, p := range gone {
		if under(p, removed) {
			delete(s.sent, p)
			continue
		}
		if err := s.remove(ctx, p); err != nil {
			return err
		}
		removed[p] = true
	}
	return nil
}

// Clear removes everything this Syncer sent from the guest volume (each
// top-level entry, which takes what is below it), for when its container
// goes. It is not safe to call while Sync or Watch runs.
func (s *Syncer) Clear(ctx context.Context) error {
	var top []string
	for p := range s.sent {
		if !strings.Contains(p, "/") {
			top = append(top, p)
		}
	}
	sort.Strings(top)
	var errs []error
	for _, p := range top {
		if err := s.remove(ctx, p); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Watch syncs every interval until ctx ends, logging (not returning) a
// failed sync: the next one retries.
func (s *Syncer) Watch(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := s.Sync(ctx); err != nil && ctx.Err() == nil {
			s.log().Warn("syncing volume into the guest", "volume", s.Volume, "source", s.Source, "err", err)
		}
	}
}

func (s *Syncer) log() *slog.Logger {
	if s.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Log
}

func (s *Syncer) copy(ctx context.Context, p string, e entry, data []byte) error {
	_, err := s.Copier.CopyFile(ctx, &api.CopyFileRequest{
		Volume: s.Volume, Path: p, Kind: e.kind, Data: data, LinkTarget: e.target,
		Mode: e.mode, Uid: e.uid, Gid: e.gid,
	})
	if err != nil {
		return fmt.Errorf("copying %s of %s into guest volume %s: %w", p, s.Source, s.Volume, err)
	}
	s.sent[p] = e
	return nil
}

func (s *Syncer) remove(ctx context.Context, p string) error {
	if _, err := s.Copier.RemovePath(ctx, &api.RemovePathRequest{Volume: s.Volume, Path: p}); err != nil {
		return fmt.Errorf("removing %s from guest volume %s: %w", p, s.Volume, err)
	}
	for q := range s.sent {
		if q == p || strings.HasPrefix(q, p+"/") {
			delete(s.sent, q)
		}
	}
	return nil
}

// scan reads the host tree: each entry's metadata, and the content of the
// files that changed since the last sync.
func (s *Syncer) scan() (map[string]entry, map[string][]byte, error) {
	now := map[string]entry{}
	data := map[string][]byte{}
	fi, err := os.Lstat(s.Source)
	if err != nil {
		return nil, nil, fmt.Errorf("reading volume source: %w", err)
	}
	if !fi.IsDir() {
		name := s.Name
		if name == "" {
			name = filepath.Base(s.Source)
		}
		if err := s.add(now, data, name, s.Source, fi); err != nil {
			return nil, nil, err
		}
		return now, data, nil
	}
	err = filepath.WalkDir(s.Source, func(hp string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if hp == s.Source {
			return nil
		}
		rel, err := filepath.Rel(s.Source, hp)
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		return s.add(now, data, filepath.ToSlash(rel), hp, fi)
	})
	if err != nil {
		return nil, nil, fmt.Errorf("reading volume source %s: %w", s.Source, err)
	}
	return now, data, nil
}

func (s *Syncer) add(now map[string]entry, data map[string][]byte, rel, hp string, fi fs.FileInfo) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("%s: no ownership information", hp)
	}
	e := entry{mode: uint32(st.Mode) & 0o7777, uid: st.Uid, gid: st.Gid}
	switch {
	case fi.IsDir():
		e.kind = api.CopyFileRequest_DIR
	case fi.Mode()&fs.ModeSymlink != 0:
		t, err := os.Readlink(hp)
		if err != nil {
			return err
		}
		if path.IsAbs(t) || slices.Contains(strings.Split(t, "/"), "..") {
			return fmt.Errorf("%s: symlink to %q leaves the volume; only relative links without \"..\" can be copied into the guest", hp, t)
		}
		e.kind, e.target, e.mode = api.CopyFileRequest_SYMLINK, t, 0
	case fi.Mode().IsRegular():
		if fi.Size() > MaxFileBytes {
			return fmt.Errorf("%s: %d bytes is over the %d-byte limit for a copied file", hp, fi.Size(), MaxFileBytes)
		}
		b, err := os.ReadFile(hp)
		if err != nil {
			return err
		}
		e.kind, e.sum = api.CopyFileRequest_FILE, sha256.Sum256(b)
		if old, ok := s.sent[rel]; !ok || old != e {
			data[rel] = bytes.Clone(b)
		}
	default:
		return fmt.Errorf("%s: %v cannot be copied into the guest (only files, directories and symlinks)", hp, fi.Mode().Type())
	}
	now[rel] = e
	return nil
}

// byDepth sorts paths parents first (fewer elements first, then by name).
func byDepth(ps []string) {
	sort.Slice(ps, func(i, j int) bool {
		di, dj := strings.Count(ps[i], "/"), strings.Count(ps[j], "/")
		if di != dj {
			return di < dj
		}
		return ps[i] < ps[j]
	})
}

// under reports whether p is below one of the removed paths.
func under(p string, removed map[string]bool) bool {
	for d := path.Dir(p); d != "." && d != "/"; d = path.Dir(d) {
		if removed[d] {
			return true
		}
	}
	return false
}
