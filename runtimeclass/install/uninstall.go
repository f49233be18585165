package install

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/veil-runtime/veil/runtimeclass/containerdcfg"
)

// Uninstall removes what the install at o.Prefix recorded, in the reverse
// order: the containerd config first (its original bytes back when nobody
// changed it since, else veil's import cut out), then the drop-in, then a
// containerd restart, the node labels, and the files and directories
// install created. Without a record there is nothing to do.
func Uninstall(ctx context.Context, o Options) error {
	o.defaults()
	rec, err := loadRecord(o.recordPath())
	if err != nil {
		return err
	}
	if rec == nil {
		o.Log.Info("no veil install recorded: nothing to uninstall", "record", o.recordPath())
		return nil
	}
	procDir := o.ProcDir
	if procDir == "" {
		procDir = o.h("/proc")
	}
	if pids := runningShims(procDir, filepath.Join(rec.Prefix, shimRel())); len(pids) > 0 {
		if !o.Force {
			return fmt.Errorf("%d veil shims are running (pids %v): remove the node's veil pods first (kubectl drain, or crictl rmp), or give --force; without its handler containerd cannot clean them up", len(pids), pids)
		}
		o.Log.Warn("uninstalling while veil shims run (--force)", "pids", pids)
	}

	// 1. The main config stops importing the drop-in. A failure here stops
	// everything: removing the drop-in a config still imports would keep
	// containerd from starting.
	changed, err := o.restoreConfig(rec)
	if err != nil {
		return err
	}

	// 2. The drop-in.
	if rec.DropIn != "" {
		if b, err := os.ReadFile(o.h(rec.DropIn)); err == nil {
			if sum(b) != rec.DropInSHA256 {
				o.Log.Warn("the drop-in was changed since install; removing it anyway (it is veil's file)", "file", rec.DropIn)
			}
			if err := os.Remove(o.h(rec.DropIn)); err != nil {
				return fmt.Errorf("removing the drop-in: %w", err)
			}
			changed = true
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("reading the drop-in: %w", err)
		}
	}

	// 3. containerd drops the handlers.
	if changed {
		if err := o.Restarter.Restart(ctx); err != nil {
			return fmt.Errorf("restarting containerd (veil's handlers are out of its config; restart it yourself, then run uninstall again to remove the files): %w", err)
		}
	}

	// 4. Labels.
	if o.Labeler != nil && len(rec.Labels) > 0 {
		keys := make([]string, 0, len(rec.Labels))
		for k := range rec.Labels {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		if err := o.Labeler.SetLabels(ctx, nil, keys); err != nil {
			return fmt.Errorf("removing node labels %s: %w", strings.Join(keys, ", "), err)
		}
	}

	// 5. Files, then the record, then the directories install created.
	for _, rel := range rec.Files {
		if err := os.Remove(o.h(filepath.Join(rec.Prefix, rel))); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("removing %s: %w", rel, err)
		}
	}
	if rec.Config.Backup != "" {
		if err := os.Remove(o.h(filepath.Join(rec.Prefix, rec.Config.Backup))); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("removing the config backup: %w", err)
		}
	}
	if leftovers, err := filepath.Glob(o.h(filepath.Join(rec.Prefix, ".staging-*"))); err == nil {
		for _, l := range leftovers {
			os.RemoveAll(l)
		}
	}
	if err := os.Remove(o.recordPath()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing the install record: %w", err)
	}
	// Directories under the prefix that install made for its files
	// (bin, share/veil, etc, backup) are removed when empty, deepest first,
	// with the directories install recorded creating.
	dirs := slices.Clone(rec.Dirs)
	for _, rel := range append(slices.Clone(rec.Files), rec.Config.Backup) {
		for d := filepath.Dir(filepath.Join(rec.Prefix, rel)); d != rec.Prefix && strings.HasPrefix(d, rec.Prefix+"/"); d = filepath.Dir(d) {
			if !slices.Contains(dirs, d) {
				dirs = append(dirs, d)
			}
		}
	}
	slices.SortFunc(dirs, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
	for _, d := range dirs {
		if err := os.Remove(o.h(d)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			if errors.Is(err, syscall.ENOTEMPTY) || errors.Is(err, syscall.EEXIST) {
				if slices.Contains(rec.Dirs, d) {
					o.Log.Warn("leaving a directory install created: it holds files veil did not put there", "dir", d)
				}
				continue
			}
			return fmt.Errorf("removing %s: %w", d, err)
		}
	}
	return nil
}

// restoreConfig undoes install's change to containerd's main config and
// reports whether it wrote anything.
func (o *Options) restoreConfig(rec *Record) (bool, error) {
	c := rec.Config
	if c.Edit == nil {
		o.warnExplicitImport(c.Path, rec.DropIn)
		return false, nil
	}
	cfgFile, err := resolveLink(o.h(c.Path))
	if err != nil {
		return false, err
	}
	cur, err := os.ReadFile(cfgFile)
	if errors.Is(err, fs.ErrNotExist) {
		o.Log.Warn("containerd config is gone; nothing to restore", "file", c.Path)
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading containerd config: %w", err)
	}
	st, err := os.Stat(cfgFile)
	if err != nil {
		return false, fmt.Errorf("reading containerd config: %w", err)
	}
	if sum(cur) == c.WrittenSHA256 {
		if c.Created {
			if err := os.Remove(cfgFile); err != nil {
				return false, fmt.Errorf("removing the containerd config install created: %w", err)
			}
			o.Log.Info("removed the containerd config install created", "file", c.Path)
			return true, nil
		}
		orig, err := os.ReadFile(o.h(filepath.Join(rec.Prefix, c.Backup)))
		if err != nil {
			return false, fmt.Errorf("reading the containerd config backup: %w", err)
		}
		if sum(orig) != c.OriginalSHA256 {
			return false, fmt.Errorf("the containerd config backup %s does not match the sha256 recorded at install: not restoring from it; remove %s from the imports of %s by hand", filepath.Join(rec.Prefix, c.Backup), rec.DropIn, c.Path)
		}
		if err := writeAtomic(cfgFile, orig, 0, ownerOf(st)); err != nil {
			return false, err
		}
		o.Log.Info("restored the containerd config's original bytes", "file", c.Path)
		return true, nil
	}
	// Changed since install: take out only veil's import.
	out, err := containerdcfg.RemoveImport(cur, *c.Edit, rec.DropIn, c.Path)
	if err != nil {
		if cfg, perr := containerdcfg.Parse(cur, c.Path); perr == nil && !slices.Contains(cfg.Imports, rec.DropIn) {
			o.Log.Info("containerd config no longer imports the drop-in: leaving it", "file", c.Path)
			return false, nil
		}
		return false, err
	}
	if bytes.Equal(out, cur) {
		return false, nil
	}
	if err := writeAtomic(cfgFile, out, 0, ownerOf(st)); err != nil {
		return false, err
	}
	o.Log.Info("containerd config changed since install: removed only veil's import", "file", c.Path)
	return true, nil
}

// warnExplicitImport warns when the config, which install did not edit,
// names the drop-in itself (not through a glob): containerd fails to start
// on an import of a missing file, and that line is the admin's to remove.
func (o *Options) warnExplicitImport(path, dropIn string) {
	if path == "" {
		return
	}
	cfgFile, err := resolveLink(o.h(path))
	if err != nil {
		return
	}
	b, err := os.ReadFile(cfgFile)
	if err != nil {
		return
	}
	cfg, err := containerdcfg.Parse(b, path)
	if err != nil {
		return
	}
	for _, imp := range cfg.Imports {
		if !strings.Contains(imp, "*") && containerdcfg.Covers([]string{imp}, path, dropIn) {
			o.Log.Warn("containerd's config imports the drop-in by name (a line veil install did not add): containerd will not start while that file is missing; remove the import", "file", path, "import", imp)
		}
	}
}
