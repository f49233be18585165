// Command installer-image builds the image the installer DaemonSet runs
// (runtimeclass/base/daemonset.yaml): veil, containerd-shim-veil-v2 and
// veil-snapshotter in /usr/local/bin, the guest image in /usr/local/share/veil (where
// `veil install` looks, next to itself), and a static busybox for the pod's
// readiness probe (`test`) and for kubectl exec. It writes a docker-archive
// tarball that `ctr images import` and `docker load` read, and can push the
// image to a registry.
//
//	go run ./tools/installer-image -bin build/bin -guest build/guest -out build/veil-installer.tar
//
// The image is deterministic: the same inputs give the same digest (fixed
// mtimes and owners, sorted entries, no build time in the config).
package main

import (
	"bytes"
	"debug/elf"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/veil-runtime/veil/tools/e2e/testimages"
)

// DefaultRef is the name the DaemonSet pulls.
const DefaultRef = "ghcr.io/veil-runtime/veil-installer:latest"

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "installer-image:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		bin     = flag.String("bin", "build/bin", "directory with veil and containerd-shim-veil-v2 (make build)")
		guest   = flag.String("guest", "build/guest", "guest image directory: vmlinuz, vmlinux, initrd.img, rootfs.erofs, manifest.json (make guest-image)")
		busybox = flag.String("busybox", "/bin/busybox", "static busybox (Debian's busybox-static) for the readiness probe and kubectl exec")
		ref     = flag.String("ref", DefaultRef, "image reference to tag the archive with (and to push to with -push)")
		out     = flag.String("out", "build/veil-installer.tar", "docker-archive tarball to write (empty: none)")
		push    = flag.Bool("push", false, "push the image to -ref's registry")
		plain   = flag.Bool("insecure", false, "with -push: the registry speaks plain HTTP")
		version = flag.String("version", "dev", "version label (org.opencontainers.image.version)")
	)
	flag.Parse()
	if flag.NArg() != 0 {
		return fmt.Errorf("unexpected arguments %q; see -help", flag.Args())
	}
	spec, err := Spec(Inputs{BinDir: *bin, GuestDir: *guest, Busybox: *busybox, Version: *version})
	if err != nil {
		return err
	}
	img, err := testimages.Build(spec)
	if err != nil {
		return err
	}
	var opts []name.Option
	if *plain {
		opts = append(opts, name.Insecure)
	}
	tag, err := name.NewTag(*ref, opts...)
	if err != nil {
		return fmt.Errorf("-ref %q: %w", *ref, err)
	}
	digest, err := img.Digest()
	if err != nil {
		return err
	}
	if *out != "" {
		if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
			return err
		}
		if err := tarball.WriteToFile(*out, tag, img); err != nil {
			return fmt.Errorf("writing %s: %w", *out, err)
		}
		slog.Info("installer image written", "file", *out, "ref", tag.String(), "digest", digest.String())
	}
	if *push {
		if err := remote.Write(tag, img); err != nil {
			return fmt.Errorf("pushing %s: %w", tag, err)
		}
		slog.Info("installer image pushed", "ref", tag.String(), "digest", digest.String())
	}
	return nil
}

// Inputs are the files the image is made of.
type Inputs struct {
	BinDir, GuestDir, Busybox, Version string
}

// Image paths.
const (
	binDir   = "usr/local/bin"
	shareDir = "usr/local/share/veil"
)

// Binaries and GuestFiles are what the image carries from BinDir and
// GuestDir.
var (
	Binaries   = []string{"veil", "containerd-shim-veil-v2", "veil-snapshotter"}
	GuestFiles = []string{"vmlinuz", "vmlinux", "initrd.img", "rootfs.erofs", "manifest.json"}
	// busyboxApplets get hard links to /bin/busybox: the DaemonSet's
	// readiness probe runs test, and a shell helps kubectl exec.
	busyboxApplets = []string{"bin/sh", "usr/bin/test", "bin/ls", "bin/cat"}
)

// Spec lays the image out from in.
func Spec(in Inputs) (testimages.Spec, error) {
	var entries []testimages.Entry
	add := func(src, dst string, mode int64) error {
		b, err := os.ReadFile(src)
		if err != nil {
			return fmt.Errorf("reading %s for the installer image: %w", src, err)
		}
		entries = append(entries, testimages.File(dst, mode, b))
		return nil
	}
	for _, b := range Binaries {
		src := filepath.Join(in.BinDir, b)
		if err := checkStatic(src); err != nil {
			return testimages.Spec{}, err
		}
		if err := add(src, filepath.Join(binDir, b), 0o755); err != nil {
			return testimages.Spec{}, err
		}
	}
	for _, g := range GuestFiles {
		if err := add(filepath.Join(in.GuestDir, g), filepath.Join(shareDir, g), 0o644); err != nil {
			return testimages.Spec{}, err
		}
	}
	if err := add(in.Busybox, "bin/busybox", 0o755); err != nil {
		return testimages.Spec{}, err
	}
	for _, a := range busyboxApplets {
		entries = append(entries, testimages.Entry{Path: a, Mode: 0o755, Hardlink: "bin/busybox"})
	}
	entries = append(entries, testimages.Dir("tmp", 0o1777))
	version := in.Version
	if version == "" {
		version = "dev"
	}
	return testimages.Spec{
		Name:   "veil-installer",
		Layers: [][]testimages.Entry{entries},
		Config: v1.Config{
			Entrypoint: []string{"/" + binDir + "/veil"},
			Cmd:        []string{"install", "--help"},
			Env:        []string{"PATH=" + strings.Join([]string{"/usr/local/bin", "/usr/bin", "/bin"}, ":")},
			Labels: map[string]string{
				"org.opencontainers.image.title":   "veil-installer",
				"org.opencontainers.image.source":  "https://github.com/veil-runtime/veil",
				"org.opencontainers.image.version": version,
			},
		},
	}, nil
}

// checkStatic refuses a dynamically linked binary: the image has no C
// library, so it would fail in the installer pod with a bare "exec ...: no
// such file or directory" (its ELF interpreter is missing). `make build
// RACE=1` builds such binaries (the race detector needs cgo).
func checkStatic(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading %s for the installer image: %w", path, err)
	}
	if !bytes.HasPrefix(b, []byte(elf.ELFMAG)) {
		return nil // not a binary at all: no interpreter to miss
	}
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("reading %s for the installer image: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			interp, _ := io.ReadAll(p.Open())
			return fmt.Errorf("%s is dynamically linked (interpreter %s), and the installer image has no C library: build it with CGO_ENABLED=0 (make build without RACE=1)", path, strings.TrimRight(string(interp), "\x00"))
		}
	}
	return nil
}
