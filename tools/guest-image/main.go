// Command guest-image builds veil's guest image (its own kernel, the
// initramfs, the manifest) into -out, keeping downloads and built kernels in
// -cache. With -fetch-only it only makes sure the pinned kernel source
// package is in the cache (make deps).
// What the image holds and how to bump the kernel: README.md and package
// guestimage.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/veil-runtime/veil/tools/guest-image/guestimage"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "guest-image:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		out         = flag.String("out", "", "output directory for vmlinuz, vmlinux, initrd.img and manifest.json")
		cache       = flag.String("cache", ".cache", "download and build cache (kernel/ below it: the source package, built kernels)")
		fetchOnly   = flag.Bool("fetch-only", false, "only fetch the kernel source package into the cache")
		kernel      = flag.String("kernel", guestimage.KernelPin, "kernel source package as package=version (to try a bump; change KernelPin to keep it)")
		kconfig     = flag.String("kernel-config", guestimage.KernelFragmentsDir, "directory of kernel config fragments (*.config); a relative path is below -repo")
		agent       = flag.String("agent", "./cmd/veil-agent", "Go package of the agent, relative to -repo")
		repo        = flag.String("repo", ".", "root of the veil module")
		runc        = flag.String("runc", "/usr/sbin/runc", "runc binary to copy into the image")
		crun        = flag.String("crun", "/usr/bin/crun", "crun binary to copy into the image (the agent's default OCI runtime); empty: none")
		shell       = flag.String("shell", "/bin/busybox", "static shell for the debug console, from Debian's busybox-static (empty: none)")
		compression = flag.String("compression", string(guestimage.DefaultCompression), "initramfs compression: none, gzip, zstd, xz or lz4")
		snpFirmware = flag.String("snp-firmware", "", "OVMF (AmdSev) image to record veil-snp's launch digest with (default: "+strings.Join(guestimage.SNPFirmwareCandidates, " or ")+" if present)")
		tdxFirmware = flag.String("tdx-firmware", "", "TDVF to record veil-tdx's values with (default: "+strings.Join(guestimage.TDXFirmwareCandidates, " or ")+" if present)")
		verbose     = flag.Bool("v", false, "log debug messages")
	)
	flag.Parse()
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q; see -help", flag.Args())
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	pin, err := guestimage.ParsePin(*kernel)
	if err != nil {
		return err
	}
	comp, err := guestimage.ParseCompression(*compression)
	if err != nil {
		return err
	}
	mtime, err := sourceDateEpoch(os.Getenv("SOURCE_DATE_EPOCH"))
	if err != nil {
		return err
	}
	cacheDir, err := filepath.Abs(*cache)
	if err != nil {
		return fmt.Errorf("resolving -cache: %w", err)
	}
	repoDir, err := filepath.Abs(*repo)
	if err != nil {
		return fmt.Errorf("resolving -repo: %w", err)
	}
	fragments := *kconfig
	if !filepath.IsAbs(fragments) {
		fragments = filepath.Join(repoDir, fragments)
	}
	o := guestimage.Options{
		OutDir: *out, CacheDir: cacheDir, Kernel: pin, FragmentsDir: fragments,
		RepoDir: repoDir, AgentPackage: *agent,
		Runc: *runc, RuncPackage: "runc",
		Crun: *crun, CrunPackage: "crun",
		Shell: *shell, ShellPackage: "busybox-static",
		Compression: comp, Mtime: mtime, Log: log,
		SNPFirmware: *snpFirmware, TDXFirmware: *tdxFirmware,
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *fetchOnly {
		deb, sum, err := guestimage.Fetch(ctx, o)
		if err != nil {
			return err
		}
		log.Info("kernel source package ready", "path", deb, "sha256", sum)
		return nil
	}
	if *out == "" {
		return errors.New("missing -out: say where to write the guest image (make guest-image uses build/guest)")
	}
	m, err := guestimage.Build(ctx, o)
	if err != nil {
		return err
	}
	log.Info("guest image built", "out", *out, "kernel", m.Kernel.Release,
		"vmlinuz_bytes", m.Artifacts[guestimage.KernelFile].Size,
		"vmlinux_bytes", m.Artifacts[guestimage.VmlinuxFile].Size,
		"initrd_bytes", m.Artifacts[guestimage.InitrdFile].Size,
		"initrd_sha256", m.Artifacts[guestimage.InitrdFile].SHA256)
	return nil
}

// sourceDateEpoch parses SOURCE_DATE_EPOCH; unset means 0.
func sourceDateEpoch(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 || v > 0xffffffff {
		return 0, fmt.Errorf("parsing SOURCE_DATE_EPOCH %q: want seconds since 1970 that fit in 32 bits", s)
	}
	return v, nil
}
