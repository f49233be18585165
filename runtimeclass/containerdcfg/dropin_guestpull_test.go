package containerdcfg

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	srvconfig "github.com/containerd/containerd/v2/cmd/containerd/server/config"
)

// A guest-pull handler's drop-in, loaded by containerd 2.4.2's own config
// loader over the stock config: the handler selects the veil snapshotter,
// the proxy plugin is declared, and snapshot annotations are on; a handler
// without guest pull keeps containerd's default snapshotter.
func TestDropInGuestPullLoadsInContainerd(t *testing.T) {
	dir := t.TempDir()
	main := filepath.Join(dir, "config.toml")
	drop := filepath.Join(dir, "conf.d", "veil.toml")
	stock, err := os.ReadFile("testdata/containerd-2.4-default.toml")
	if err != nil {
		t.Fatal(err)
	}
	stock = []byte(strings.Replace(string(stock), "/etc/containerd/conf.d/*.toml", filepath.Join(dir, "conf.d", "*.toml"), 1))
	if err := os.WriteFile(main, stock, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(drop), 0o755); err != nil {
		t.Fatal(err)
	}
	hs := []Handler{
		{Name: "veil", ShimPath: "/opt/veil/bin/containerd-shim-veil-v2", ConfigPath: "/opt/veil/etc/veil.toml"},
		{Name: "veil-dev", ShimPath: "/opt/veil/bin/containerd-shim-veil-v2", ConfigPath: "/opt/veil/etc/veil-dev.toml", GuestPull: true},
		{Name: "veil-snp", ShimPath: "/opt/veil/bin/containerd-shim-veil-v2", ConfigPath: "/opt/veil/etc/veil-snp.toml", GuestPull: true},
	}
	rendered := RenderDropIn(hs, SnapshotterAddress)
	if n := strings.Count(string(rendered), "[proxy_plugins."); n != 1 {
		t.Errorf("%d proxy_plugins tables, want 1:\n%s", n, rendered)
	}
	if err := os.WriteFile(drop, rendered, 0o644); err != nil {
		t.Fatal(err)
	}
	out := &srvconfig.Config{Version: 4}
	if err := srvconfig.LoadConfig(t.Context(), main, out); err != nil {
		t.Fatal(err)
	}
	rt := dig(out.Plugins, PluginV3, "containerd", "runtimes")
	for _, h := range hs {
		v, _ := rt[h.Name].(map[string]any)
		want := any(nil)
		if h.GuestPull {
			want = SnapshotterName
		}
		if v["snapshotter"] != want {
			t.Errorf("runtime %s snapshotter = %v, want %v", h.Name, v["snapshotter"], want)
		}
	}
	p, ok := out.ProxyPlugins[SnapshotterName]
	if !ok || p.Type != "snapshot" || p.Address != SnapshotterAddress {
		t.Errorf("proxy plugin %s = %+v (present %v)", SnapshotterName, p, ok)
	}
	if v := dig(out.Plugins, PluginImagesV3)["disable_snapshot_annotations"]; v != false {
		t.Errorf("%s disable_snapshot_annotations = %v, want false", PluginImagesV3, v)
	}
	if c, err := Parse(rendered, "veil.toml"); err != nil || strings.Join(c.Runtimes, ",") != "veil,veil-dev,veil-snp" {
		t.Errorf("drop-in parses as %+v, %v", c, err)
	}

	// Without guest-pull handlers nothing of it is written.
	if plain := string(RenderDropIn(hs[:1], SnapshotterAddress)); strings.Contains(plain, "proxy_plugins") || strings.Contains(plain, "snapshotter") {
		t.Errorf("drop-in without guest pull mentions the snapshotter:\n%s", plain)
	}
}
