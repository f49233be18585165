package snapshotter

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	srvconfig "github.com/containerd/containerd/v2/cmd/containerd/server/config"
)

// TestSandboxImage reads the sandbox image from config trees the way
// containerd does, and checks each version 3 tree against containerd
// 2.4.2's own loader (cmd/containerd/server/config.LoadConfig), whose
// merged CRI images table is what the CRI pulls.
func TestSandboxImage(t *testing.T) {
	pinned := func(ref string) string {
		return "version = 3\n[plugins.'io.containerd.cri.v1.images'.pinned_images]\n  sandbox = '" + ref + "'\n"
	}
	tests := []struct {
		name   string
		files  map[string]string // relative to the tree; config.toml is the main file
		want   string
		from   string
		err    string
		noDiff bool // not a version 3 tree: containerd migrates before merging
	}{
		{name: "main file", files: map[string]string{"config.toml": pinned("example.com/pause:1")}, want: "example.com/pause:1", from: "config.toml"},
		{name: "none pinned", files: map[string]string{"config.toml": "version = 3\n"}},
		{name: "a drop-in overrides the main file",
			files: map[string]string{"config.toml": "imports = ['conf.d/*.toml']\n" + pinned("example.com/pause:1"), "conf.d/90-site.toml": pinned("example.com/pause:2")},
			want:  "example.com/pause:2", from: "conf.d/90-site.toml"},
		{name: "a drop-in without the key keeps the main file's",
			files: map[string]string{"config.toml": "imports = ['conf.d/*.toml']\n" + pinned("example.com/pause:1"),
				"conf.d/veil.toml": "version = 3\n[plugins.'io.containerd.cri.v1.images']\n  disable_snapshot_annotations = false\n"},
			want: "example.com/pause:1", from: "config.toml"},
		{name: "globs in name order, the last wins",
			files: map[string]string{"config.toml": "imports = ['conf.d/*.toml']\nversion = 3\n", "conf.d/20-b.toml": pinned("example.com/pause:b"), "conf.d/10-a.toml": pinned("example.com/pause:a")},
			want:  "example.com/pause:b", from: "conf.d/20-b.toml"},
		{name: "nested imports, relative to the importing file",
			files: map[string]string{"config.toml": "version = 3\nimports = ['conf.d/a.toml']\n", "conf.d/a.toml": "version = 3\nimports = ['b.toml']\n", "conf.d/b.toml": pinned("example.com/pause:nested")},
			want:  "example.com/pause:nested", from: "conf.d/b.toml"},
		{name: "an import cycle is read once",
			files: map[string]string{"config.toml": "version = 3\nimports = ['x.toml']\n" + pinned("example.com/pause:main")[len("version = 3\n"):], "x.toml": "version = 3\nimports = ['config.toml']\n"},
			want:  "example.com/pause:main", from: "config.toml"},
		{name: "version 2 (containerd 1.7)", noDiff: true,
			files: map[string]string{"config.toml": "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"registry.k8s.io/pause:3.8\"\n"},
			want:  "registry.k8s.io/pause:3.8", from: "config.toml"},
		{name: "a missing import", files: map[string]string{"config.toml": "version = 3\nimports = ['gone.toml']\n"}, err: "gone.toml"},
		{name: "not TOML", files: map[string]string{"config.toml": "version = = 3\n"}, err: "not valid TOML"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, content := range tt.files {
				writeFile(t, filepath.Join(dir, name), content)
			}
			main := filepath.Join(dir, "config.toml")
			ref, from, err := SandboxImage(main)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("SandboxImage: %v, want an error with %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			wantFrom := ""
			if tt.from != "" {
				wantFrom = filepath.Join(dir, tt.from)
			}
			if ref != tt.want || from != wantFrom {
				t.Fatalf("SandboxImage = %q from %q, want %q from %q", ref, from, tt.want, wantFrom)
			}
			if tt.noDiff {
				return
			}
			out := &srvconfig.Config{Version: 3}
			if err := srvconfig.LoadConfig(t.Context(), main, out); err != nil {
				t.Fatal(err)
			}
			images, _ := out.Plugins["io.containerd.cri.v1.images"].(map[string]any)
			pins, _ := images["pinned_images"].(map[string]any)
			if got, _ := pins["sandbox"].(string); got != ref {
				t.Fatalf("containerd's loader pins sandbox %q, SandboxImage %q", got, ref)
			}
		})
	}
	if _, _, err := SandboxImage(filepath.Join(t.TempDir(), "none.toml")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("SandboxImage of a missing file: %v", err)
	}
}

// The Snapshotter's native images: the flag's, then the sandbox image the
// config pins now; containerd's default repository, with a warning, when
// the config cannot be read.
func TestSnapshotterNativeImages(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.toml")
	var logs bytes.Buffer
	sn, err := New(filepath.Join(dir, "state"), Options{Log: slog.New(slog.NewTextHandler(&logs, nil)),
		ContainerdConfig: cfg, NativeImages: []string{"example.com/tools:1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer sn.Close()
	refs := func() string {
		var out []string
		for _, n := range sn.NativeImages() {
			out = append(out, n.Ref+" ("+n.Source+")")
		}
		return strings.Join(out, ", ")
	}
	if got, want := refs(), "example.com/tools:1 (--native-image), registry.k8s.io/pause (containerd's default sandbox image)"; got != want {
		t.Errorf("without a config: %s, want %s", got, want)
	}
	if !strings.Contains(logs.String(), "reading the sandbox image from containerd's config") || !strings.Contains(logs.String(), cfg) {
		t.Errorf("no warning naming the unreadable config:\n%s", logs.String())
	}
	writeFile(t, cfg, "version = 3\n[plugins.'io.containerd.cri.v1.images'.pinned_images]\n  sandbox = 'example.com/pause:2'\n")
	if got, want := refs(), "example.com/tools:1 (--native-image), example.com/pause:2 (sandbox image of "+cfg+")"; got != want {
		t.Errorf("with a config: %s, want %s", got, want)
	}
}
