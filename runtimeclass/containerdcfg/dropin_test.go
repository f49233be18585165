package containerdcfg

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	srvconfig "github.com/containerd/containerd/v2/cmd/containerd/server/config"

	"github.com/veil-runtime/veil/attestation/initdata"
)

var handlers = []Handler{
	{Name: "veil", ShimPath: "/opt/veil/bin/containerd-shim-veil-v2", ConfigPath: "/opt/veil/etc/veil.toml"},
	{Name: "veil-dev", ShimPath: "/opt/veil/bin/containerd-shim-veil-v2", ConfigPath: "/opt/veil/etc/veil-dev.toml"},
}

// containerd 2.4.2's own config loader reads a main config that imports the
// drop-in, and the result has both the main config's runc runtime and
// veil's handlers, with every key veil set: the merge is key by key and our
// file has no key containerd does not know.
func TestDropInLoadsInContainerd(t *testing.T) {
	dir := t.TempDir()
	main := filepath.Join(dir, "config.toml")
	drop := filepath.Join(dir, "conf.d", "veil.toml")
	stock, err := os.ReadFile("testdata/containerd-2.4-default.toml")
	if err != nil {
		t.Fatal(err)
	}
	// The stock file imports /etc/containerd/conf.d/*.toml; point it here.
	stock = []byte(strings.Replace(string(stock), "/etc/containerd/conf.d/*.toml", filepath.Join(dir, "conf.d", "*.toml"), 1))
	if err := os.WriteFile(main, stock, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(drop), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(drop, RenderDropIn(handlers, SnapshotterAddress), 0o644); err != nil {
		t.Fatal(err)
	}
	out := &srvconfig.Config{Version: 4}
	if err := srvconfig.LoadConfig(t.Context(), main, out); err != nil {
		t.Fatal(err)
	}
	rt := dig(out.Plugins, PluginV3, "containerd", "runtimes")
	if rt["runc"] == nil {
		t.Errorf("runc runtime of the main config lost after merging the drop-in: %v", rt)
	}
	for _, h := range handlers {
		v, _ := rt[h.Name].(map[string]any)
		if v == nil {
			t.Fatalf("runtime %s missing after load: %v", h.Name, rt)
		}
		opts, _ := v["options"].(map[string]any)
		if v["runtime_type"] != RuntimeType || v["runtime_path"] != h.ShimPath || opts["ConfigPath"] != h.ConfigPath ||
			v["privileged_without_host_devices"] != true {
			t.Errorf("runtime %s = %v", h.Name, v)
		}
		if a, _ := v["pod_annotations"].([]any); len(a) != 2 || a[0] != "io.veil.*" || a[1] != initdata.CoCoAnnotation {
			t.Errorf("runtime %s pod_annotations = %v", h.Name, v["pod_annotations"])
		}
	}
	c, err := Parse(RenderDropIn(handlers, SnapshotterAddress), "veil.toml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Version != 3 || strings.Join(c.Runtimes, ",") != "veil,veil-dev" {
		t.Errorf("drop-in parses as %+v", c)
	}
}

func TestParseVersion(t *testing.T) {
	for _, tc := range []struct {
		out   string
		major int
		minor int
		patch int
		raw   string
	}{
		{"containerd github.com/containerd/containerd/v2 v2.4.2 d4b2bc1fa2", 2, 4, 2, "2.4.2"},
		{"containerd github.com/containerd/containerd/v2 2.4.2+unknown \n", 2, 4, 2, "2.4.2+unknown"},
		{"containerd containerd.io 1.7.24 88bf19b2105c8b17560993bee28a01ddc2f97182", 1, 7, 24, "1.7.24"},
		{"containerd github.com/containerd/containerd 1.7.24~ds1 1.7.24~ds1-1+b3", 1, 7, 24, "1.7.24~ds1"},
		{"containerd github.com/containerd/containerd/v2 v2.3.0-rc.1 abc", 2, 3, 0, "2.3.0-rc.1"},
	} {
		v, err := ParseVersion(tc.out)
		if err != nil {
			t.Fatalf("%q: %v", tc.out, err)
		}
		if v.Major != tc.major || v.Minor != tc.minor || v.Patch != tc.patch || v.Raw != tc.raw {
			t.Errorf("ParseVersion(%q) = %+v", tc.out, v)
		}
	}
	if _, err := ParseVersion("containerd: command not found"); err == nil {
		t.Error("ParseVersion of garbage: no error")
	}
}

func TestDecide(t *testing.T) {
	v := func(s string) *Version {
		x, err := ParseVersion("containerd x " + s)
		if err != nil {
			t.Fatal(err)
		}
		return &x
	}
	names := []string{"veil", "veil-dev", "veil-snp", "veil-tdx"}
	for _, tc := range []struct {
		name       string
		containerd *Version
		cfg        Config
		err        string
	}{
		{name: "2.4 with a version 4 config", containerd: v("2.4.2"), cfg: Config{Version: 4}},
		{name: "2.3 with a version 2 config", containerd: v("v2.3.0"), cfg: Config{Version: 2}},
		{name: "2.2 too old", containerd: v("2.2.1"), cfg: Config{Version: 3}, err: "containerd 2.2.1 is too old"},
		{name: "1.7 too old", containerd: v("1.7.24"), cfg: Config{Version: 2}, err: "containerd 1.7.24 is too old"},
		{name: "unknown binary, version 3 config", cfg: Config{Version: 3}},
		{name: "unknown binary, version 2 config", cfg: Config{Version: 2}, err: "--containerd-version"},
		{name: "handler already there", containerd: v("2.4.2"), cfg: Config{Version: 3, Runtimes: []string{"runc", "veil"}}, err: `already defines a runtime named "veil"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Decide(tc.containerd, tc.cfg, "config.toml", names)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.ConfigVersion != 3 || p.Plugin != PluginV3 {
				t.Errorf("plan %+v", p)
			}
		})
	}
}
