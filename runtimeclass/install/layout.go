// Package install puts veil on a node and takes it off again: it copies the
// shim, the CLI, the guest image and one veil config per runtime handler
// into a prefix (default /opt/veil), adds the handlers to containerd through
// a drop-in file its config imports, restarts containerd and labels the
// node. Everything it changes is written to a record (<prefix>/install.json)
// first, so Uninstall removes exactly that: the containerd config gets its
// original bytes back.
//
// Decisions about containerd's config are package containerdcfg's pure
// functions; this package does the file work around them. Restarting
// containerd and labelling the node are interfaces (Restarter, Labeler) so
// tests run on temp dirs with fakes.
package install

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/veil-runtime/veil/runtimeclass/containerdcfg"
	shimconfig "github.com/veil-runtime/veil/shim/config"
)

// Defaults.
const (
	DefaultPrefix           = "/opt/veil"
	DefaultContainerdConfig = "/etc/containerd/config.toml"
	// DefaultDropIn sits where containerd 2.x's stock config imports from
	// (imports = ['/etc/containerd/conf.d/*.toml']), so a stock config needs
	// no edit at all.
	DefaultDropIn = "/etc/containerd/conf.d/veil.toml"
	RecordName    = "install.json"
	ShimBinary    = "containerd-shim-veil-v2"
	CLIBinary     = "veil"
)

// Handlers are the CRI runtime handlers veil installs, in order.
var Handlers = []string{"veil", "veil-dev", "veil-snp", "veil-tdx"}

// GuestFiles are the guest image files, from tools/guest-image's output.
// vmlinux is the kernel the plain handlers boot directly (PVH), vmlinuz
// the same kernel for the TEE firmware.
// rootfs.erofs is the read-only root image the plain handler maps
// (hypervisor.rootfs_image).
var GuestFiles = []string{"vmlinuz", "vmlinux", "initrd.img", "rootfs.erofs", "manifest.json"}

// file is one file install puts under the prefix.
type file struct {
	rel  string // path under the prefix
	src  string // source path to copy, or "" when data is set
	data []byte // rendered content
	mode uint32
}

// Paths under the prefix.
func shimRel() string          { return filepath.Join("bin", ShimBinary) }
func cliRel() string           { return filepath.Join("bin", CLIBinary) }
func guestRel(n string) string { return filepath.Join("share", "veil", n) }

// HandlerConfigPath is the veil config of handler h in an install at
// prefix (what its containerd ConfigPath names).
func HandlerConfigPath(prefix, h string) string { return filepath.Join(prefix, configRel(h)) }

func configRel(h string) string {
	return filepath.Join("etc", h+".toml")
}

// layout lists the files of an install from the source directories, for
// handlers, under prefix (a host path: it is what configs refer to).
func layout(src Source, prefix string, handlers []string) []file {
	files := []file{
		{rel: shimRel(), src: filepath.Join(src.BinDir, ShimBinary), mode: 0o755},
		{rel: cliRel(), src: filepath.Join(src.BinDir, CLIBinary), mode: 0o755},
	}
	for _, n := range GuestFiles {
		files = append(files, file{rel: guestRel(n), src: filepath.Join(src.GuestDir, n), mode: 0o644})
	}
	for _, h := range handlers {
		files = append(files, file{rel: configRel(h), data: HandlerConfig(prefix, h), mode: 0o644})
	}
	return files
}

// HandlerConfig renders the veil config (keys of shim/config) that handler
// h's ConfigPath names: the guest image installed under prefix. Every
// handler gets its own file so an admin can size or tune one handler
// without touching the others; the confidential handlers gain their TEE
// settings here when shim/config has keys for them.
func HandlerConfig(prefix, h string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "# veil runtime config for the CRI runtime handler %q, written by `veil install`\n", h)
	b.WriteString("# (reinstalling overwrites it). Keys and defaults: shim/README.md.\n")
	fmt.Fprintf(&b, "# Overrides: *.toml files in %s, read after this file in name order;\n", shimconfig.DropInDir(HandlerConfigPath(prefix, h)))
	b.WriteString("# veil install never writes there, and veil uninstall leaves them.\n")
	switch h {
	case "veil-dev":
		b.WriteString("# veil-dev: the confidential flow with the software \"sample\" TEE; never trusted in production.\n")
	case "veil-snp":
		b.WriteString("# veil-snp: AMD SEV-SNP; scheduled only on nodes labelled veil.io/tee=snp.\n")
	case "veil-tdx":
		b.WriteString("# veil-tdx: Intel TDX; scheduled only on nodes labelled veil.io/tee=tdx.\n")
	}
	b.WriteString("\n[hypervisor]\n")
	// The plain and sample handlers boot the uncompressed kernel directly
	// (PVH); snp and tdx boot the bzImage through their firmware.
	kernel := "vmlinux"
	if h == "veil-snp" || h == "veil-tdx" {
		kernel = "vmlinuz"
	}
	fmt.Fprintf(&b, "kernel = %q\n", filepath.Join(prefix, guestRel(kernel)))
	fmt.Fprintf(&b, "initrd = %q\n", filepath.Join(prefix, guestRel("initrd.img")))
	if h == "veil" {
		// The plain handler maps the shared read-only root image instead
		// of loading the initrd into every VM; the confidential handlers
		// keep the measured initramfs.
		fmt.Fprintf(&b, "rootfs_image = %q\n", filepath.Join(prefix, guestRel("rootfs.erofs")))
	}
	switch h {
	case "veil-dev":
		b.WriteString("\n[confidential]\ntee = \"sample\"\n")
	case "veil-snp", "veil-tdx":
		tee := strings.TrimPrefix(h, "veil-")
		b.WriteString("\n# The TEE firmware (OVMF built for " + tee + ", or an SNP .igvm) is not shipped with veil: install it here.\n")
		fmt.Fprintf(&b, "[confidential]\ntee = %q\nfirmware = %q\n", tee, filepath.Join(prefix, guestRel("OVMF-"+tee+".fd")))
	}
	return []byte(b.String())
}

// dropInHandlers are the drop-in's runtime tables: each handler's installed
// config, read with its drop-in directory (the admin's overrides) as the
// shim reads it, decides whether the handler pulls images in the guest
// (veil-snapshotter then stands in for containerd's snapshotter). A config
// the shim would refuse stops the install here, before containerd sees it.
func (o *Options) dropInHandlers() ([]containerdcfg.Handler, error) {
	out := make([]containerdcfg.Handler, 0, len(o.Handlers))
	for _, h := range o.Handlers {
		path := HandlerConfigPath(o.Prefix, h)
		cfg, err := shimconfig.Load(o.h(path))
		if err != nil {
			return nil, fmt.Errorf("reading the config of handler %s with its drop-ins: %w", h, err)
		}
		out = append(out, containerdcfg.Handler{
			Name:       h,
			ShimPath:   filepath.Join(o.Prefix, shimRel()),
			ConfigPath: path,
			GuestPull:  cfg.Confidential.GuestPullEnabled(),
		})
	}
	return out, nil
}
