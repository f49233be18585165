package install

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/veil-runtime/veil/runtimeclass/containerdcfg"
	"github.com/veil-runtime/veil/runtimeclass/hostcheck"
	shimconfig "github.com/veil-runtime/veil/shim/config"
)

// fakeRestarter counts restarts.
type fakeRestarter struct{ n int }

func (f *fakeRestarter) Restart(context.Context) error { f.n++; return nil }
func (f *fakeRestarter) String() string                { return "fake" }

// fakeLabeler keeps the node's labels.
type fakeLabeler struct{ labels map[string]string }

func (f *fakeLabeler) SetLabels(_ context.Context, set map[string]string, remove []string) error {
	if f.labels == nil {
		f.labels = map[string]string{}
	}
	for k, v := range set {
		f.labels[k] = v
	}
	for _, k := range remove {
		delete(f.labels, k)
	}
	return nil
}

// source writes the files an install copies: the two binaries (contents
// tagged with version) and a guest image with a matching manifest.
func source(t *testing.T, version string) Source {
	t.Helper()
	dir := t.TempDir()
	src := Source{BinDir: filepath.Join(dir, "bin"), GuestDir: filepath.Join(dir, "guest")}
	for _, d := range []string{src.BinDir, src.GuestDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(p, body string, mode fs.FileMode) {
		if err := os.WriteFile(p, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(src.BinDir, ShimBinary), "#!shim "+version, 0o755)
	write(filepath.Join(src.BinDir, CLIBinary), "#!veil "+version, 0o755)
	arts := map[string]any{}
	for _, n := range []string{"vmlinuz", "vmlinux", "initrd.img", "rootfs.erofs"} {
		body := n + " " + version
		write(filepath.Join(src.GuestDir, n), body, 0o644)
		s := sha256.Sum256([]byte(body))
		arts[n] = map[string]any{"sha256": hex.EncodeToString(s[:]), "size": len(body)}
	}
	m, _ := json.Marshal(map[string]any{"artifacts": arts})
	write(filepath.Join(src.GuestDir, "manifest.json"), string(m), 0o644)
	return src
}

// snapshot is every file, directory and link under root: path -> what.
func snapshot(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		st, err := os.Lstat(p)
		if err != nil {
			return err
		}
		switch {
		case st.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			out[rel] = "link " + target
		case st.IsDir():
			out[rel] = fmt.Sprintf("dir %v", st.Mode().Perm())
		default:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			out[rel] = fmt.Sprintf("file %v %q", st.Mode().Perm(), b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func diffSnapshots(a, b map[string]string) string {
	var d []string
	for k, v := range a {
		if w, ok := b[k]; !ok {
			d = append(d, "only before: "+k)
		} else if v != w {
			d = append(d, fmt.Sprintf("changed: %s\n  before %s\n  after  %s", k, v, w))
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			d = append(d, "only after: "+k)
		}
	}
	slices.Sort(d)
	return strings.Join(d, "\n")
}

var v242 = &containerdcfg.Version{Major: 2, Minor: 4, Patch: 2, Raw: "2.4.2"}

// node is a fake node: a host root with a containerd config.
type node struct {
	root string
	opts Options
	rs   *fakeRestarter
	lb   *fakeLabeler
}

func newNode(t *testing.T, config *string, src Source) *node {
	t.Helper()
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc/containerd"), 0o755); err != nil {
		t.Fatal(err)
	}
	if config != nil {
		if err := os.WriteFile(filepath.Join(root, DefaultContainerdConfig), []byte(*config), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	n := &node{root: root, rs: &fakeRestarter{}, lb: &fakeLabeler{labels: map[string]string{"kubernetes.io/os": "linux"}}}
	n.opts = Options{
		Root: root, Source: src, ContainerdVersion: v242,
		Restarter: n.rs, Labeler: n.lb, Check: passingCheck,
	}
	return n
}

func (n *node) read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(n.root, p))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func ptr(s string) *string { return &s }

// Fake containerd configs for 2.x nodes (the main config may still be a
// version 2 file from the 1.7 days: containerd 2.x migrates it).
var configCases = []struct {
	name   string
	config *string
	edited bool // install must add the import (else the config is left alone)
}{
	{"version 3, no imports, comments", ptr("# node config\nversion = 3\n\n[plugins.'io.containerd.cri.v1.runtime'.containerd]\n  default_runtime_name = 'runc' # keep\n"), true},
	{"version 2 (1.7-era), CRLF, imports list", ptr("version = 2\r\nimports = [\r\n  \"/etc/containerd/other.toml\",\r\n]\r\n[plugins.\"io.containerd.grpc.v1.cri\"]\r\n  sandbox_image = \"pause:3.9\"\r\n"), true},
	{"stock containerd 2.4 default (imports conf.d/*.toml)", ptr(stockConfig), false},
	{"odd formatting", ptr("version=3\nimports=[]#none yet\n\"root\"   =   \"/var/lib/containerd\"\n"), true},
	{"no config file", nil, true},
}

var stockConfig = func() string {
	b, err := os.ReadFile("../containerdcfg/testdata/containerd-2.4-default.toml")
	if err != nil {
		panic(err)
	}
	return string(b)
}()

func TestInstallReinstallUninstall(t *testing.T) {
	src := source(t, "v1")
	for _, tc := range configCases {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t, tc.config, src)
			before := snapshot(t, n.root)
			ctx := context.Background()

			rec, err := Install(ctx, n.opts)
			if err != nil {
				t.Fatal(err)
			}
			// The config: untouched, or the original plus exactly the edit.
			cfg := n.read(t, DefaultContainerdConfig)
			switch {
			case tc.config == nil:
				if !rec.Config.Created || !strings.Contains(cfg, `imports = ["/etc/containerd/conf.d/veil.toml"]`) {
					t.Fatalf("created config %q, record %+v", cfg, rec.Config)
				}
			case tc.edited:
				if rec.Config.Edit == nil || cfg != string(rec.Config.Edit.Apply([]byte(*tc.config))) {
					t.Fatalf("config after install:\n%s\nrecord %+v", cfg, rec.Config)
				}
				if got := n.read(t, filepath.Join(DefaultPrefix, backupRel)); got != *tc.config {
					t.Fatalf("backup %q, want the original", got)
				}
			default:
				if cfg != *tc.config || rec.Config.Edit != nil {
					t.Fatal("a config that already imports conf.d/*.toml was changed")
				}
			}
			parsed, err := containerdcfg.Parse([]byte(cfg), "config.toml")
			if err != nil {
				t.Fatal(err)
			}
			if !containerdcfg.Covers(parsed.Imports, DefaultContainerdConfig, DefaultDropIn) {
				t.Fatalf("config does not import the drop-in: %q", parsed.Imports)
			}
			// The drop-in and the files.
			if got, want := n.read(t, DefaultDropIn), string(containerdcfg.RenderDropIn(wantDropInHandlers(DefaultPrefix, Handlers), containerdcfg.SnapshotterAddress)); got != want {
				t.Fatalf("drop-in:\n%s\nwant\n%s", got, want)
			}
			if got := n.read(t, "/opt/veil/bin/containerd-shim-veil-v2"); got != "#!shim v1" {
				t.Fatalf("shim %q", got)
			}
			if got := n.read(t, "/opt/veil/share/veil/initrd.img"); got != "initrd.img v1" {
				t.Fatalf("initrd %q", got)
			}
			for _, h := range Handlers {
				b := n.read(t, filepath.Join("/opt/veil/etc", h+".toml"))
				c, err := shimconfig.Parse([]byte(b), h+".toml")
				if err != nil {
					t.Fatalf("handler config %s does not parse as a veil config: %v", h, err)
				}
				kernel := "/opt/veil/share/veil/vmlinux" // direct (PVH) boot
				if c.Confidential.Kind().Hardware() {
					kernel = "/opt/veil/share/veil/vmlinuz" // through the TEE firmware
				}
				if c.Hypervisor.Kernel != kernel || c.Hypervisor.Initrd != "/opt/veil/share/veil/initrd.img" {
					t.Fatalf("handler config %s: %+v", h, c.Hypervisor)
				}
			}
			if n.rs.n != 1 {
				t.Fatalf("containerd restarted %d times, want 1", n.rs.n)
			}
			if n.lb.labels[LabelRuntime] != "true" || n.lb.labels[LabelTEE] != "none" {
				t.Fatalf("labels %v", n.lb.labels)
			}
			installed := snapshot(t, n.root)

			// Reinstall: byte-identical tree, no restart.
			if _, err := Install(ctx, n.opts); err != nil {
				t.Fatal(err)
			}
			if d := diffSnapshots(installed, snapshot(t, n.root)); d != "" {
				t.Fatalf("reinstall changed files:\n%s", d)
			}
			if n.rs.n != 1 {
				t.Fatalf("reinstall restarted containerd (%d restarts)", n.rs.n)
			}

			// Uninstall: the tree is what it was before install.
			if err := Uninstall(ctx, n.opts); err != nil {
				t.Fatal(err)
			}
			if d := diffSnapshots(before, snapshot(t, n.root)); d != "" {
				t.Fatalf("uninstall left the node different:\n%s", d)
			}
			if n.rs.n != 2 {
				t.Fatalf("uninstall did not restart containerd (%d restarts)", n.rs.n)
			}
			if len(n.lb.labels) != 1 || n.lb.labels["kubernetes.io/os"] != "linux" {
				t.Fatalf("labels after uninstall %v, want only the node's own", n.lb.labels)
			}
			// And again: nothing left to do.
			if err := Uninstall(ctx, n.opts); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// An upgrade installs over an older install: new files replace old ones,
// files the new version no longer has go, and the config backup stays the
// one from before the first install, so uninstall still restores the
// original bytes (Kata's installer backed up its own edited file here).
func TestUpgrade(t *testing.T) {
	orig := "version = 3\n# mine\n[debug]\n  level = 'info'\n"
	n := newNode(t, &orig, source(t, "v1"))
	before := snapshot(t, n.root)
	ctx := context.Background()
	old := n.opts
	old.Handlers = []string{"veil", "veil-dev", "veil-snp", "veil-tdx"}
	if _, err := Install(ctx, old); err != nil {
		t.Fatal(err)
	}
	afterFirst := n.read(t, DefaultContainerdConfig)

	up := n.opts
	up.Source = source(t, "v2")
	up.Handlers = []string{"veil", "veil-dev", "veil-snp"}
	rec, err := Install(ctx, up)
	if err != nil {
		t.Fatal(err)
	}
	if got := n.read(t, "/opt/veil/bin/containerd-shim-veil-v2"); got != "#!shim v2" {
		t.Fatalf("shim after upgrade %q", got)
	}
	if got := n.read(t, "/opt/veil/share/veil/vmlinuz"); got != "vmlinuz v2" {
		t.Fatalf("kernel after upgrade %q", got)
	}
	if _, err := os.Stat(filepath.Join(n.root, "/opt/veil/etc/veil-tdx.toml")); !os.IsNotExist(err) {
		t.Fatalf("the dropped handler's config is still there: %v", err)
	}
	if strings.Contains(n.read(t, DefaultDropIn), "veil-tdx") {
		t.Fatal("drop-in still has veil-tdx")
	}
	if got := n.read(t, DefaultContainerdConfig); got != afterFirst {
		t.Fatalf("upgrade edited the config again:\n%s", got)
	}
	if got := n.read(t, filepath.Join(DefaultPrefix, backupRel)); got != orig {
		t.Fatalf("backup after upgrade %q, want the original", got)
	}
	if rec.Config.OriginalSHA256 != sum([]byte(orig)) {
		t.Fatal("record lost the original config's sha256")
	}
	if n.rs.n != 2 {
		t.Fatalf("restarts %d, want 2 (the drop-in changed)", n.rs.n)
	}
	if err := Uninstall(ctx, up); err != nil {
		t.Fatal(err)
	}
	if d := diffSnapshots(before, snapshot(t, n.root)); d != "" {
		t.Fatalf("uninstall after upgrade left the node different:\n%s", d)
	}
}

// The admin changes the config after install: uninstall keeps their change
// and removes only veil's import.
func TestUninstallKeepsLaterChanges(t *testing.T) {
	orig := "version = 3\nimports = ['/etc/a.toml']\n"
	n := newNode(t, &orig, source(t, "v1"))
	ctx := context.Background()
	if _, err := Install(ctx, n.opts); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(n.root, DefaultContainerdConfig)
	if err := os.WriteFile(cfg, []byte(n.read(t, DefaultContainerdConfig)+"\n[debug]\n  level = 'debug'\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := Uninstall(ctx, n.opts); err != nil {
		t.Fatal(err)
	}
	if got, want := n.read(t, DefaultContainerdConfig), orig+"\n[debug]\n  level = 'debug'\n"; got != want {
		t.Fatalf("config after uninstall:\n%s\nwant\n%s", got, want)
	}
	if _, err := os.Stat(filepath.Join(n.root, DefaultDropIn)); !os.IsNotExist(err) {
		t.Fatal("drop-in left behind")
	}
}

// A symlinked config is edited through the link; the link stays a link.
func TestInstallThroughSymlink(t *testing.T) {
	orig := "version = 3\n"
	n := newNode(t, nil, source(t, "v1"))
	real := filepath.Join(n.root, "etc/containerd/real.toml")
	if err := os.WriteFile(real, []byte(orig), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("real.toml", filepath.Join(n.root, DefaultContainerdConfig)); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, n.root)
	ctx := context.Background()
	if _, err := Install(ctx, n.opts); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Lstat(filepath.Join(n.root, DefaultContainerdConfig)); err != nil || st.Mode()&fs.ModeSymlink == 0 {
		t.Fatalf("config is no longer a symlink: %v", err)
	}
	if got := n.read(t, "etc/containerd/real.toml"); !strings.Contains(got, "conf.d/veil.toml") {
		t.Fatalf("link target not edited: %q", got)
	}
	if st, _ := os.Stat(real); st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600 kept", st.Mode().Perm())
	}
	if err := Uninstall(ctx, n.opts); err != nil {
		t.Fatal(err)
	}
	if d := diffSnapshots(before, snapshot(t, n.root)); d != "" {
		t.Fatalf("uninstall left the node different:\n%s", d)
	}
}

// Refusals change nothing on the node.
func TestInstallRefuses(t *testing.T) {
	for _, tc := range []struct {
		name   string
		config string
		setup  func(t *testing.T, n *node)
		want   string
	}{
		{name: "containerd 1.7", config: "version = 2\n", setup: func(t *testing.T, n *node) {
			n.opts.ContainerdVersion = &containerdcfg.Version{Major: 1, Minor: 7, Patch: 24, Raw: "1.7.24"}
		}, want: "containerd 1.7.24 is too old"},
		{name: "unknown containerd, version 2 config", config: "version = 2\n", setup: func(t *testing.T, n *node) {
			n.opts.ContainerdVersion = nil
		}, want: "--containerd-version"},
		{name: "config not TOML", config: "version = 3\n[plugins\n", want: "is not valid TOML"},
		{name: "veil already in the config", config: "version = 3\n[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.veil]\n  runtime_type = 'x'\n", want: `already defines a runtime named "veil"`},
		{name: "veil-snp in another imported file", config: "version = 3\nimports = ['/etc/containerd/conf.d/*.toml']\n", setup: func(t *testing.T, n *node) {
			os.MkdirAll(filepath.Join(n.root, "etc/containerd/conf.d"), 0o755)
			os.WriteFile(filepath.Join(n.root, "etc/containerd/conf.d/kata.toml"), []byte("version = 3\n[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.veil-snp]\n"), 0o644)
		}, want: `runtime named "veil-snp"`},
		{name: "drop-in path taken", config: "version = 3\n", setup: func(t *testing.T, n *node) {
			os.MkdirAll(filepath.Join(n.root, "etc/containerd/conf.d"), 0o755)
			os.WriteFile(filepath.Join(n.root, DefaultDropIn), []byte("# someone else's\n"), 0o644)
		}, want: "did not write it"},
		{name: "drop-in moved since the last install", config: "version = 3\n", setup: func(t *testing.T, n *node) {
			if _, err := Install(context.Background(), n.opts); err != nil {
				t.Fatal(err)
			}
			n.rs.n, n.lb.labels = 0, map[string]string{"kubernetes.io/os": "linux"}
			n.opts.DropIn = "/etc/containerd/conf.d/zz-veil.toml"
		}, want: "uninstall it first to move the drop-in"},
		{name: "corrupt guest image", config: "version = 3\n", setup: func(t *testing.T, n *node) {
			os.WriteFile(filepath.Join(n.opts.Source.GuestDir, "vmlinuz"), []byte("truncated"), 0o644)
		}, want: "vmlinuz: sha256"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t, &tc.config, source(t, "v1"))
			if tc.setup != nil {
				tc.setup(t, n)
			}
			before := snapshot(t, n.root)
			_, err := Install(context.Background(), n.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
			if d := diffSnapshots(before, snapshot(t, n.root)); d != "" {
				t.Fatalf("a refused install changed the node:\n%s", d)
			}
			if n.rs.n != 0 || len(n.lb.labels) != 1 {
				t.Fatal("a refused install restarted containerd or labelled the node")
			}
		})
	}
}

// An install cut short (here: a source file missing) left its record, so
// uninstall still brings the node back to where it was.
func TestUninstallAfterAnInterruptedInstall(t *testing.T) {
	orig := "version = 3\n"
	n := newNode(t, &orig, source(t, "v1"))
	before := snapshot(t, n.root)
	if err := os.Remove(filepath.Join(n.opts.Source.BinDir, CLIBinary)); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := Install(ctx, n.opts); err == nil || !strings.Contains(err.Error(), "to install") {
		t.Fatalf("install without the veil binary: %v", err)
	}
	if _, err := os.Stat(filepath.Join(n.root, DefaultPrefix, RecordName)); err != nil {
		t.Fatalf("no record after an interrupted install: %v", err)
	}
	if err := Uninstall(ctx, n.opts); err != nil {
		t.Fatal(err)
	}
	if d := diffSnapshots(before, snapshot(t, n.root)); d != "" {
		t.Fatalf("uninstall after an interrupted install left the node different:\n%s", d)
	}
}

// Uninstall refuses while a pod's shim runs from the installed binary
// (containerd could not clean the pod up without the handler), unless forced.
func TestUninstallRefusesWhileShimsRun(t *testing.T) {
	orig := "version = 3\n"
	n := newNode(t, &orig, source(t, "v1"))
	ctx := context.Background()
	if _, err := Install(ctx, n.opts); err != nil {
		t.Fatal(err)
	}
	// A fake /proc with one process running the installed shim.
	proc := t.TempDir()
	if err := os.MkdirAll(filepath.Join(proc, "4242"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/opt/veil/bin/containerd-shim-veil-v2", filepath.Join(proc, "4242", "exe")); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(proc, "7"), 0o755)
	os.Symlink("/usr/bin/containerd", filepath.Join(proc, "7", "exe"))
	n.opts.ProcDir = proc
	installed := snapshot(t, n.root)
	err := Uninstall(ctx, n.opts)
	if err == nil || !strings.Contains(err.Error(), "pids [4242]") {
		t.Fatalf("uninstall with a running shim: %v", err)
	}
	if d := diffSnapshots(installed, snapshot(t, n.root)); d != "" {
		t.Fatalf("a refused uninstall changed the node:\n%s", d)
	}
	n.opts.Force = true
	if err := Uninstall(ctx, n.opts); err != nil {
		t.Fatal(err)
	}
	if got := n.read(t, DefaultContainerdConfig); got != orig {
		t.Fatalf("config after forced uninstall %q", got)
	}
}

// Without a labeler (--label=none) nothing is recorded as labelled, so
// uninstall touches no labels either.
func TestNoLabelerRecordsNoLabels(t *testing.T) {
	orig := "version = 3\n"
	n := newNode(t, &orig, source(t, "v1"))
	n.opts.Labeler = nil
	rec, err := Install(context.Background(), n.opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.Labels) != 0 {
		t.Fatalf("record has labels %v without a labeler", rec.Labels)
	}
	n.opts.Labeler = n.lb
	n.lb.labels["veil.io/tee"] = "set by someone else"
	if err := Uninstall(context.Background(), n.opts); err != nil {
		t.Fatal(err)
	}
	if n.lb.labels["veil.io/tee"] != "set by someone else" {
		t.Fatal("uninstall removed a label install did not set")
	}
}

// A config that already names the drop-in (a line the admin wrote) is not
// edited, stays as it is on uninstall, and uninstall warns that containerd
// will not start while it imports a missing file.
func TestExplicitImportWrittenByTheAdmin(t *testing.T) {
	orig := "version = 3\nimports = [\"/etc/containerd/conf.d/veil.toml\"]\n"
	n := newNode(t, &orig, source(t, "v1"))
	var logs strings.Builder
	n.opts.Log = slog.New(slog.NewTextHandler(&logs, nil))
	ctx := context.Background()
	rec, err := Install(ctx, n.opts)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Config.Edit != nil || n.read(t, DefaultContainerdConfig) != orig {
		t.Fatal("install edited a config that already imports the drop-in")
	}
	if err := Uninstall(ctx, n.opts); err != nil {
		t.Fatal(err)
	}
	if n.read(t, DefaultContainerdConfig) != orig {
		t.Fatal("uninstall changed the admin's config")
	}
	if !strings.Contains(logs.String(), "imports the drop-in by name") {
		t.Fatalf("no warning about the admin's import line:\n%s", logs.String())
	}
}

// passingCheck is veil check on a node that can run veil, without a TEE.
func passingCheck(context.Context) hostcheck.Report {
	return hostcheck.Report{TEE: "none", Problems: []string{}}
}

// wantDropInHandlers are the drop-in's handlers of an install at prefix
// without admin overrides: the confidential ones pull in the guest.
func wantDropInHandlers(prefix string, handlers []string) []containerdcfg.Handler {
	out := make([]containerdcfg.Handler, 0, len(handlers))
	for _, h := range handlers {
		out = append(out, containerdcfg.Handler{
			Name:       h,
			ShimPath:   filepath.Join(prefix, "bin", ShimBinary),
			ConfigPath: HandlerConfigPath(prefix, h),
			GuestPull:  h != "veil",
		})
	}
	return out
}
