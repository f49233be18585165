package harness

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/pelletier/go-toml/v2"
)

func TestContainerdConfig(t *testing.T) {
	c := DaemonConfig{
		Root: "/e/root", State: "/e/state", Temp: "/e/tmp", Address: "/e/c.sock",
		ShimSocketDir: "/e/s", PrivateDir: "/e/private", HostsDir: "/e/hosts.d", CNIConfDir: "/e/cni",
		CNIBinDirs: []string{"/usr/lib/cni"}, SandboxImage: "127.0.0.1:5000/pause:3.10",
		Handlers: []Handler{
			{Name: Runc, Type: "io.containerd.runc.v2", Options: map[string]string{"Root": "/e/runc"}},
			{Name: Veil, Type: "io.containerd.veil.v2", ShimPath: "/repo/build/bin/containerd-shim-veil-v2",
				Options: map[string]string{"ConfigPath": "/e/veil.toml"}, PrivilegedWithoutHostDevices: true},
			{Name: VeilDev, Type: "io.containerd.veil.v2", ShimPath: "/repo/build/bin/containerd-shim-veil-v2",
				Options: map[string]string{"ConfigPath": "/e/veil-dev.toml"}, PodAnnotations: []string{"io.veil.*"}, Snapshotter: "veil"},
		},
		ProxySnapshotters: map[string]string{"veil": "/e/snapshotter.sock"},
	}
	var doc map[string]any
	if err := toml.Unmarshal([]byte(ContainerdConfig(c)), &doc); err != nil {
		t.Fatalf("config is not TOML: %v\n%s", err, ContainerdConfig(c))
	}
	get := func(path ...string) any {
		var v any = doc
		for _, p := range path {
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[p]
		}
		return v
	}
	cri := []string{"plugins", "io.containerd.cri.v1.runtime"}
	runtimes := append(append([]string(nil), cri...), "containerd", "runtimes")
	for _, tc := range []struct {
		path []string
		want any
	}{
		{[]string{"version"}, int64(3)},
		{[]string{"root"}, "/e/root"},
		{[]string{"state"}, "/e/state"},
		{[]string{"grpc", "address"}, "/e/c.sock"},
		{[]string{"ttrpc", "address"}, "/e/c.sock.ttrpc"},
		{append(cri, "restrict_oom_score_adj"), true},
		{append(cri, "netns_mounts_under_state_dir"), true},
		{append(cri, "cni", "conf_dir"), "/e/cni"},
		{[]string{"plugins", "io.containerd.cri.v1.images", "pinned_images", "sandbox"}, "127.0.0.1:5000/pause:3.10"},
		{[]string{"plugins", "io.containerd.cri.v1.images", "registry", "config_path"}, "/e/hosts.d"},
		{[]string{"plugins", "io.containerd.shim.v1.manager", "socket_dir"}, "/e/s"},
		{[]string{"plugins", "io.containerd.nri.v1.nri", "socket_path"}, "/e/private/nri/nri.sock"},
		{append(runtimes, "runc", "runtime_type"), "io.containerd.runc.v2"},
		{append(runtimes, "runc", "options", "Root"), "/e/runc"},
		{append(runtimes, "runc", "runtime_path"), nil},
		{append(runtimes, "runc", "privileged_without_host_devices"), nil},
		{append(runtimes, "veil", "privileged_without_host_devices"), true},
		{append(runtimes, "veil", "runtime_type"), "io.containerd.veil.v2"},
		{append(runtimes, "veil", "runtime_path"), "/repo/build/bin/containerd-shim-veil-v2"},
		{append(runtimes, "veil", "options", "ConfigPath"), "/e/veil.toml"},
		{append(runtimes, "veil", "pod_annotations"), nil},
		{append(runtimes, "veil-dev", "options", "ConfigPath"), "/e/veil-dev.toml"},
		{append(runtimes, "veil-dev", "pod_annotations"), "io.veil.*"}, // a one-element list
		{append(runtimes, "veil-dev", "snapshotter"), "veil"},
		{append(runtimes, "veil", "snapshotter"), nil},
		{[]string{"proxy_plugins", "veil", "type"}, "snapshot"},
		{[]string{"proxy_plugins", "veil", "address"}, "/e/snapshotter.sock"},
		{[]string{"plugins", "io.containerd.cri.v1.images", "disable_snapshot_annotations"}, false},
	} {
		if got := get(tc.path...); got != tc.want {
			if a, ok := got.([]any); ok && len(a) == 1 && a[0] == tc.want {
				continue
			}
			t.Errorf("%s = %#v, want %#v", strings.Join(tc.path, "."), got, tc.want)
		}
	}
	if imports, ok := doc["imports"].([]any); !ok || len(imports) != 0 {
		t.Errorf("imports = %#v, want an empty list (never the host's conf.d)", doc["imports"])
	}
}

func TestContainerdConfigQuotesPaths(t *testing.T) {
	c := DaemonConfig{Root: `/tmp/a "quoted" dir`, Handlers: []Handler{{Name: "x", Type: "t"}}}
	var doc map[string]any
	if err := toml.Unmarshal([]byte(ContainerdConfig(c)), &doc); err != nil {
		t.Fatal(err)
	}
	if doc["root"] != c.Root {
		t.Errorf("root = %q, want %q", doc["root"], c.Root)
	}
}

func TestCNIConfig(t *testing.T) {
	var conf struct {
		CNIVersion string
		Name       string
		Plugins    []map[string]any
	}
	if err := json.Unmarshal([]byte(CNIConfig("net", "br9", "10.9.0.0/16")), &conf); err != nil {
		t.Fatal(err)
	}
	if conf.Name != "net" || len(conf.Plugins) != 2 || conf.Plugins[0]["type"] != "bridge" ||
		conf.Plugins[0]["bridge"] != "br9" || conf.Plugins[1]["type"] != "portmap" {
		t.Errorf("CNIConfig = %+v", conf)
	}
	ranges := conf.Plugins[0]["ipam"].(map[string]any)["ranges"].([]any)
	if got := ranges[0].([]any)[0].(map[string]any)["subnet"]; got != "10.9.0.0/16" {
		t.Errorf("subnet = %v", got)
	}
}

func TestHostsTOML(t *testing.T) {
	var doc struct {
		Server string
		Host   map[string]struct {
			Capabilities []string
		}
	}
	if err := toml.Unmarshal([]byte(HostsTOML("http://127.0.0.1:5000")), &doc); err != nil {
		t.Fatal(err)
	}
	h, ok := doc.Host["http://127.0.0.1:5000"]
	if doc.Server != "http://127.0.0.1:5000" || !ok || strings.Join(h.Capabilities, ",") != "pull,resolve,push" {
		t.Errorf("HostsTOML = %+v", doc)
	}
}
