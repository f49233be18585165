package install

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/veil-runtime/veil/runtimeclass/containerdcfg"
	"github.com/veil-runtime/veil/runtimeclass/hostcheck"
)

// Source is where the files to install come from.
type Source struct {
	BinDir   string // containerd-shim-veil-v2 and veil
	GuestDir string // vmlinuz, vmlinux, initrd.img, rootfs.erofs, manifest.json (tools/guest-image output)
}

// Options configure Install and Uninstall. Paths are host paths; Root is
// where the host's root is mounted (/ on the node, /host in the DaemonSet).
type Options struct {
	Root             string
	Prefix           string
	Source           Source
	ContainerdConfig string
	DropIn           string
	// ContainerdVersion is the node's containerd (nil: unknown, then the
	// config's version decides).
	ContainerdVersion *containerdcfg.Version
	Handlers          []string
	// Restarter restarts containerd after its config changed.
	Restarter Restarter
	// Labeler, when set, labels the node on install from Check's report
	// (LabelsFor); uninstall removes the labels install set.
	Labeler Labeler
	// Check is `veil check` of the node, run once the files are in place
	// (so it sees the installed guest image); without it the node is not
	// labelled.
	Check func(ctx context.Context) hostcheck.Report
	// SnapshotterAddress is veil-snapshotter's socket, a host path, which
	// the drop-in's proxy plugin names for guest-pull handlers (default
	// containerdcfg.SnapshotterAddress). veil-snapshotter is not started
	// here: the DaemonSet runs it as a second container.
	SnapshotterAddress string
	Log                *slog.Logger
	// Force lets Uninstall go ahead while veil shims still run (their pods
	// then cannot be cleaned up by containerd).
	Force bool
	// ProcDir is the host's /proc (default Root/proc), where Uninstall
	// looks for running shims.
	ProcDir string
}

func (o *Options) defaults() {
	if o.Root == "" {
		o.Root = "/"
	}
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.ContainerdConfig == "" {
		o.ContainerdConfig = DefaultContainerdConfig
	}
	if o.DropIn == "" {
		o.DropIn = DefaultDropIn
	}
	if len(o.Handlers) == 0 {
		o.Handlers = Handlers
	}
	if o.Restarter == nil {
		o.Restarter = NoRestart{}
	}
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.SnapshotterAddress == "" {
		o.SnapshotterAddress = containerdcfg.SnapshotterAddress
	}
}

// h maps a host path into this process's view.
func (o *Options) h(p string) string {
	if o.Root == "/" {
		return p
	}
	return filepath.Join(o.Root, p)
}

// unh maps a path in this process's view back to a host path.
func (o *Options) unh(p string) string {
	if o.Root == "/" {
		return p
	}
	rel, err := filepath.Rel(o.Root, p)
	if err != nil {
		return p
	}
	return "/" + rel
}

func (o *Options) recordPath() string { return o.h(filepath.Join(o.Prefix, RecordName)) }

// backupRel is where the containerd config's original bytes are kept.
var backupRel = filepath.Join("backup", "containerd-config.toml")

// Install installs veil; run again it changes nothing (and does not restart
// containerd), and over an older install it replaces that install's files,
// keeping the containerd config backup the first install made.
func Install(ctx context.Context, o Options) (*Record, error) {
	o.defaults()
	old, err := loadRecord(o.recordPath())
	if err != nil {
		return nil, err
	}
	if old != nil && old.Config.Path != "" && old.Config.Path != o.ContainerdConfig && (old.Config.Edit != nil || old.Config.Created) {
		return nil, fmt.Errorf("veil at %s was installed into containerd config %s, not %s: uninstall it first", o.Prefix, old.Config.Path, o.ContainerdConfig)
	}
	if old != nil && old.DropIn != "" && old.DropIn != o.DropIn {
		return nil, fmt.Errorf("veil at %s was installed with drop-in %s, not %s: uninstall it first to move the drop-in", o.Prefix, old.DropIn, o.DropIn)
	}

	// Everything that can refuse, before anything changes.
	cfgFile, err := resolveLink(o.h(o.ContainerdConfig))
	if err != nil {
		return nil, err
	}
	cur, err := os.ReadFile(cfgFile)
	exists := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("reading containerd config: %w", err)
	}
	cfg := containerdcfg.Config{Version: 1}
	if exists {
		if cfg, err = containerdcfg.Parse(cur, o.ContainerdConfig); err != nil {
			return nil, err
		}
		others, err := o.importedRuntimes(cfg.Imports)
		if err != nil {
			return nil, err
		}
		cfg.Runtimes = append(cfg.Runtimes, others...)
	} else if o.ContainerdVersion != nil {
		cfg.Version = containerdcfg.MaxConfigVersion
	}
	plan, err := containerdcfg.Decide(o.ContainerdVersion, cfg, o.ContainerdConfig, o.Handlers)
	if err != nil {
		return nil, err
	}
	o.Log.Info("containerd", "config", o.ContainerdConfig, "config_version", cfg.Version, "plan", plan.Note)
	if old == nil || old.DropIn != o.DropIn {
		if _, err := os.Lstat(o.h(o.DropIn)); err == nil {
			return nil, fmt.Errorf("%s exists and this install did not write it: remove it or pick another --drop-in", o.DropIn)
		}
	}
	if g := hostcheck.CheckGuestImage(o.Source.GuestDir); !g.Matches {
		return nil, fmt.Errorf("guest image in %s: %s", o.Source.GuestDir, strings.Join(g.Problems, "; "))
	}

	rec := &Record{Format: RecordFormat, Prefix: o.Prefix, Handlers: o.Handlers, DropIn: o.DropIn}
	if old != nil {
		rec.Dirs = old.Dirs
		rec.Config = old.Config
		rec.Labels = old.Labels
	}
	addDirs := func(ds []string) {
		for _, d := range ds {
			if hd := o.unh(d); !slices.Contains(rec.Dirs, hd) {
				rec.Dirs = append(rec.Dirs, hd)
			}
		}
	}

	// 1. Files, staged in the prefix and renamed into place.
	ds, err := mkdirs(o.h(o.Prefix))
	if err != nil {
		return nil, err
	}
	addDirs(ds)
	files := layout(o.Source, o.Prefix, o.Handlers)
	for _, f := range files {
		rec.Files = append(rec.Files, f.rel)
	}
	if old != nil {
		// Until the old files are removed below, they are still ours.
		for _, rel := range old.Files {
			if !slices.Contains(rec.Files, rel) {
				rec.Files = append(rec.Files, rel)
			}
		}
	}
	// Recorded before placed: an install cut short is still uninstallable.
	if err := saveRecord(o.recordPath(), rec); err != nil {
		return nil, err
	}
	if err := o.placeFiles(files, addDirs); err != nil {
		return nil, err
	}
	rec.Files = rec.Files[:len(files)]
	if old != nil {
		for _, rel := range old.Files {
			if !slices.Contains(rec.Files, rel) {
				if err := os.Remove(o.h(filepath.Join(o.Prefix, rel))); err != nil && !errors.Is(err, fs.ErrNotExist) {
					return nil, fmt.Errorf("removing %s of the older install: %w", rel, err)
				}
				o.Log.Info("removed a file of the older install", "file", rel)
			}
		}
	}
	if err := saveRecord(o.recordPath(), rec); err != nil {
		return nil, err
	}

	// 2. The drop-in, written after the files it names are in place.
	changed := false
	hs, err := o.dropInHandlers()
	if err != nil {
		return nil, err
	}
	dropIn := containerdcfg.RenderDropIn(hs, o.SnapshotterAddress)
	if ds, err = mkdirs(filepath.Dir(o.h(o.DropIn))); err != nil {
		return nil, err
	}
	addDirs(ds)
	rec.DropInSHA256 = sum(dropIn)
	if err := saveRecord(o.recordPath(), rec); err != nil {
		return nil, err
	}
	if prev, err := os.ReadFile(o.h(o.DropIn)); err != nil || !bytes.Equal(prev, dropIn) {
		if err := writeAtomic(o.h(o.DropIn), dropIn, 0o644, nil); err != nil {
			return nil, err
		}
		changed = true
		o.Log.Info("wrote containerd drop-in", "file", o.DropIn)
	}

	// 3. The main config imports the drop-in.
	edited, err := o.importDropIn(rec, cfgFile, cur, exists, cfg, addDirs)
	if err != nil {
		return nil, err
	}
	changed = changed || edited
	if err := saveRecord(o.recordPath(), rec); err != nil {
		return nil, err
	}

	// 4. containerd reads its config only at start.
	if changed {
		if err := o.Restarter.Restart(ctx); err != nil {
			return rec, fmt.Errorf("restarting containerd (veil is installed; restart it yourself): %w", err)
		}
		o.Log.Info("containerd restarted", "how", o.Restarter.String())
	} else {
		o.Log.Info("containerd config unchanged: not restarting containerd")
	}

	// 5. Node labels, from the check of the node as installed.
	if o.Labeler != nil && o.Check != nil {
		report := o.Check(ctx)
		set, remove, notes := LabelsFor(report, o.teeProblem(report.TEE))
		for _, n := range notes {
			o.Log.Warn(n)
		}
		rec.Labels = set
		if err := saveRecord(o.recordPath(), rec); err != nil {
			return rec, err
		}
		if err := o.Labeler.SetLabels(ctx, set, remove); err != nil {
			return rec, fmt.Errorf("labelling the node: %w", err)
		}
		o.Log.Info("node labelled", "labels", set, "removed", remove)
	}
	return rec, nil
}

// importDropIn makes the containerd config import the drop-in, recording
// what it changes in rec before changing it. It reports whether it wrote.
func (o *Options) importDropIn(rec *Record, cfgFile string, cur []byte, exists bool, cfg containerdcfg.Config, addDirs func([]string)) (bool, error) {
	switch {
	case !exists:
		ds, err := mkdirs(filepath.Dir(cfgFile))
		if err != nil {
			return false, err
		}
		addDirs(ds)
		base := []byte("# Written by `veil install`: there was no containerd config. `veil uninstall` removes it.\nversion = 3\n")
		e, err := containerdcfg.AddImport(base, o.DropIn, o.ContainerdConfig)
		if err != nil {
			return false, err
		}
		data := e.Apply(base)
		rec.Config = ConfigChange{Path: o.ContainerdConfig, Created: true, Edit: &e, WrittenSHA256: sum(data)}
		if err := saveRecord(o.recordPath(), rec); err != nil {
			return false, err
		}
		if err := writeAtomic(cfgFile, data, 0o644, nil); err != nil {
			return false, err
		}
		o.Log.Info("created containerd config", "file", o.ContainerdConfig)
		return true, nil
	case containerdcfg.Covers(cfg.Imports, o.ContainerdConfig, o.DropIn):
		if rec.Config.Path != o.ContainerdConfig || (rec.Config.Edit == nil && !rec.Config.Created) {
			rec.Config = ConfigChange{Path: o.ContainerdConfig}
			o.Log.Info("containerd config already imports the drop-in: not changing it", "file", o.ContainerdConfig)
		}
		return false, nil
	}
	e, err := containerdcfg.AddImport(cur, o.DropIn, o.ContainerdConfig)
	if err != nil {
		return false, err
	}
	data := e.Apply(cur)
	st, err := os.Stat(cfgFile)
	if err != nil {
		return false, fmt.Errorf("reading containerd config: %w", err)
	}
	ds, err := mkdirs(filepath.Dir(o.h(filepath.Join(o.Prefix, backupRel))))
	if err != nil {
		return false, err
	}
	addDirs(ds)
	if err := writeAtomic(o.h(filepath.Join(o.Prefix, backupRel)), cur, 0o600, nil); err != nil {
		return false, err
	}
	rec.Config = ConfigChange{Path: o.ContainerdConfig, Edit: &e, Backup: backupRel, OriginalSHA256: sum(cur), WrittenSHA256: sum(data)}
	if err := saveRecord(o.recordPath(), rec); err != nil {
		return false, err
	}
	if err := writeAtomic(cfgFile, data, 0, ownerOf(st)); err != nil {
		return false, err
	}
	o.Log.Info("added the drop-in to containerd's imports", "file", o.ContainerdConfig, "import", o.DropIn)
	return true, nil
}

// placeFiles writes every file into a staging directory inside the prefix,
// then renames each into place: no file is ever seen half-written.
func (o *Options) placeFiles(files []file, addDirs func([]string)) error {
	staging, err := os.MkdirTemp(o.h(o.Prefix), ".staging-")
	if err != nil {
		return fmt.Errorf("staging files: %w", err)
	}
	defer os.RemoveAll(staging)
	for _, f := range files {
		dst := filepath.Join(staging, f.rel)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return fmt.Errorf("staging %s: %w", f.rel, err)
		}
		data := f.data
		if f.src != "" {
			if data, err = os.ReadFile(f.src); err != nil {
				return fmt.Errorf("reading %s to install: %w", f.src, err)
			}
		}
		if err := writeFileSync(dst, data, fs.FileMode(f.mode)); err != nil {
			return err
		}
	}
	for _, f := range files {
		dst := o.h(filepath.Join(o.Prefix, f.rel))
		ds, err := mkdirs(filepath.Dir(dst))
		if err != nil {
			return err
		}
		addDirs(ds)
		if err := os.Rename(filepath.Join(staging, f.rel), dst); err != nil {
			return fmt.Errorf("installing %s: %w", dst, err)
		}
	}
	return nil
}

func writeFileSync(path string, data []byte, mode fs.FileMode) error {
	fh, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return fmt.Errorf("staging %s: %w", path, err)
	}
	if _, err := fh.Write(data); err != nil {
		fh.Close()
		return fmt.Errorf("staging %s: %w", path, err)
	}
	if err := fh.Chmod(mode); err != nil {
		fh.Close()
		return fmt.Errorf("staging %s: %w", path, err)
	}
	if err := fh.Sync(); err != nil {
		fh.Close()
		return fmt.Errorf("staging %s: %w", path, err)
	}
	return fh.Close()
}

// resolveLink follows a symlinked config to the file it names, so an edit
// replaces that file and keeps the link.
func resolveLink(p string) (string, error) {
	r, err := filepath.EvalSymlinks(p)
	if errors.Is(err, fs.ErrNotExist) {
		return p, nil
	}
	if err != nil {
		return "", fmt.Errorf("resolving %s: %w", p, err)
	}
	return r, nil
}

// importedRuntimes lists runtimes that files the config imports (other than
// veil's drop-in) define, so a handler defined there is refused too.
func (o *Options) importedRuntimes(imports []string) ([]string, error) {
	var out []string
	for _, imp := range imports {
		p := imp
		if !filepath.IsAbs(p) {
			p = filepath.Join(filepath.Dir(o.ContainerdConfig), p)
		}
		matches, err := filepath.Glob(o.h(p))
		if err != nil {
			continue
		}
		for _, m := range matches {
			if o.unh(m) == filepath.Clean(o.DropIn) {
				continue
			}
			b, err := os.ReadFile(m)
			if err != nil {
				continue // containerd reports missing imports itself
			}
			c, err := containerdcfg.Parse(b, o.unh(m))
			if err != nil {
				return nil, fmt.Errorf("containerd config imports %s: %w", o.unh(m), err)
			}
			out = append(out, c.Runtimes...)
		}
	}
	return out, nil
}
