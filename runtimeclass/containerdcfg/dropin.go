package containerdcfg

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/veil-runtime/veil/attestation/initdata"
)

// RuntimeType is the shim v2 runtime type of every veil handler.
const RuntimeType = "io.containerd.veil.v2"

// PodAnnotations is the pod annotation allowlist each handler passes to the
// shim: veil's own keys (io.veil.*), which the shim checks against its
// config, and Confidential Containers' init-data annotation
// (initdata.CoCoAnnotation), which confidential handlers read.
var PodAnnotations = []string{"io.veil.*", initdata.CoCoAnnotation}

// Handler is one CRI runtime handler veil adds.
type Handler struct {
	Name       string // CRI handler name: veil, veil-dev, veil-snp, veil-tdx
	ShimPath   string // runtime_path: the installed containerd-shim-veil-v2
	ConfigPath string // options.ConfigPath: the handler's veil config
	// GuestPull selects veil's proxy snapshotter for the handler
	// (snapshotter = "veil"), so containerd leaves the images of its pods
	// to the guest (snapshotter/). veil-snapshotter must run on the node.
	GuestPull bool
}

// Guest-pull settings of the drop-in: veil's proxy snapshotter, the socket
// veil-snapshotter listens on by default, and the CRI images plugin whose
// disable_snapshot_annotations must be false so the snapshotter sees the
// image reference of each layer.
const (
	SnapshotterName    = "veil"
	SnapshotterAddress = "/run/veil/snapshotter.sock"
	PluginImagesV3     = "io.containerd.cri.v1.images"
)

// RenderDropIn renders the drop-in file containerd imports: a version 3
// config (containerd 2.x; 2.4 and later migrate it to their version 4 on
// load, which leaves the CRI runtime plugin's tables as they are) with one runtime table per handler. Keys:
// runtime_type, runtime_path, pod_annotations, and
// privileged_without_host_devices (a privileged pod must not hand the
// host's devices to a VM, let alone a TEE), plus options.ConfigPath; for a
// GuestPull handler also snapshotter = "veil", and once for the file the
// proxy_plugins.veil snapshot plugin (at snapshotterAddress, veil-snapshotter's
// socket) and the CRI images plugin's
// disable_snapshot_annotations = false.
func RenderDropIn(handlers []Handler, snapshotterAddress string) []byte {
	var b strings.Builder
	b.WriteString("# Written by `veil install`; `veil uninstall` removes it. Reinstalling\n")
	b.WriteString("# overwrites it: change the handlers' veil configs instead.\n")
	b.WriteString("version = 3\n")
	q := strconv.Quote
	annotations := make([]string, len(PodAnnotations))
	for i, a := range PodAnnotations {
		annotations[i] = q(a)
	}
	for _, h := range handlers {
		key := fmt.Sprintf("plugins.%s.containerd.runtimes.%s", q(PluginV3), q(h.Name))
		fmt.Fprintf(&b, "\n[%s]\n", key)
		fmt.Fprintf(&b, "  runtime_type = %s\n", q(RuntimeType))
		fmt.Fprintf(&b, "  runtime_path = %s\n", q(h.ShimPath))
		fmt.Fprintf(&b, "  pod_annotations = [%s]\n", strings.Join(annotations, ", "))
		b.WriteString("  privileged_without_host_devices = true\n")
		if h.GuestPull {
			fmt.Fprintf(&b, "  snapshotter = %s\n", q(SnapshotterName))
		}
		fmt.Fprintf(&b, "\n  [%s.options]\n", key)
		fmt.Fprintf(&b, "    ConfigPath = %s\n", q(h.ConfigPath))
	}
	if slices.ContainsFunc(handlers, func(h Handler) bool { return h.GuestPull }) {
		fmt.Fprintf(&b, "\n[proxy_plugins.%s]\n", q(SnapshotterName))
		b.WriteString("  type = \"snapshot\"\n")
		fmt.Fprintf(&b, "  address = %s\n", q(snapshotterAddress))
		fmt.Fprintf(&b, "\n[plugins.%s]\n", q(PluginImagesV3))
		b.WriteString("  disable_snapshot_annotations = false\n")
	}
	return []byte(b.String())
}

// Version is a containerd release version.
type Version struct {
	Major, Minor, Patch int
	Raw                 string // as containerd printed it
}

func (v Version) String() string { return v.Raw }

// Less reports whether v is older than w.
func (v Version) Less(w Version) bool {
	if v.Major != w.Major {
		return v.Major < w.Major
	}
	if v.Minor != w.Minor {
		return v.Minor < w.Minor
	}
	return v.Patch < w.Patch
}

// MinVersion is the oldest containerd veil installs into. veil's shim is
// built on containerd's v2.4 shim library, which speaks only the shim
// bootstrap protocol version 3 and the task API v3 (see shim/README.md), so
// containerd 1.7 cannot start it. containerd 1.7 has a second trap: its
// config loader replaces a whole plugin section with an imported file's
// (to.Plugins[k] = v), so a drop-in holding only veil's runtimes would wipe
// the CRI plugin settings of the main config; 2.x merges them key by key.
var MinVersion = Version{Major: 2, Minor: 3, Patch: 0, Raw: "2.3.0"}

var versionRE = regexp.MustCompile(`^v?(\d+)\.(\d+)(?:\.(\d+))?`)

// ParseVersion reads the version from `containerd --version` output, for
// example "containerd github.com/containerd/containerd/v2 v2.4.2 abc123" or
// "containerd containerd.io 1.7.24 88bf19b".
func ParseVersion(out string) (Version, error) {
	fields := strings.Fields(out)
	for i, f := range fields {
		if i == 0 {
			continue
		}
		m := versionRE.FindStringSubmatch(f)
		if m == nil {
			continue
		}
		v := Version{Raw: strings.TrimPrefix(f, "v")}
		v.Major, _ = strconv.Atoi(m[1])
		v.Minor, _ = strconv.Atoi(m[2])
		if m[3] != "" {
			v.Patch, _ = strconv.Atoi(m[3])
		}
		return v, nil
	}
	return Version{}, fmt.Errorf("no version in containerd's output %q", strings.TrimSpace(out))
}

// Plan is how veil's handlers go into a containerd config.
type Plan struct {
	// ConfigVersion is the drop-in's config version; Plugin the table its
	// runtimes live under.
	ConfigVersion int
	Plugin        string
	// Note says how the containerd generation was found.
	Note string
}

// Decide picks the drop-in format from containerd's version (nil when the
// binary could not be asked) and its config, and refuses what veil cannot
// run on: containerd older than MinVersion, a config older than version 2
// under an unknown containerd, or a config that already defines one of
// veil's handlers.
func Decide(containerd *Version, cfg Config, configName string, handlers []string) (Plan, error) {
	for _, h := range handlers {
		for _, r := range cfg.Runtimes {
			if r == h {
				return Plan{}, fmt.Errorf("containerd config %s already defines a runtime named %q: remove it (or uninstall whatever added it) before installing veil", configName, h)
			}
		}
	}
	plan := Plan{ConfigVersion: 3, Plugin: PluginV3}
	switch {
	case containerd != nil:
		if containerd.Less(MinVersion) {
			return Plan{}, fmt.Errorf("containerd %s is too old: veil needs containerd >= %s (its shim speaks shim bootstrap protocol v3 and task API v3; containerd 1.x also replaces whole plugin sections from imported files); upgrade containerd", containerd.Raw, MinVersion.Raw)
		}
		plan.Note = "containerd " + containerd.Raw + ": config version 3 drop-in"
	case cfg.Version >= 3:
		plan.Note = "containerd version unknown; config version >= 3 means containerd 2.x: config version 3 drop-in"
	default:
		return Plan{}, fmt.Errorf("cannot tell the containerd version: `containerd --version` gave nothing and %s is config version %d (containerd 1.x or 2.x); give it with --containerd-version", configName, cfg.Version)
	}
	return plan, nil
}
