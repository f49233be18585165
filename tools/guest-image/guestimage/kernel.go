package guestimage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// KernelPin is the guest kernel: a Debian kernel package and its exact
// version, in apt's name=version form. It is the one place the kernel
// version is set; see README.md for how to bump it. The generic amd64
// flavour is used because the smaller cloud flavour has no 9p.
const KernelPin = "linux-image-6.12.107+deb12-amd64-unsigned=6.12.107-1~deb12u1"

// Pin names one version of one Debian package.
type Pin struct {
	Package string
	Version string
}

func (p Pin) String() string { return p.Package + "=" + p.Version }

// ParsePin parses apt's "name=version" form.
func ParsePin(s string) (Pin, error) {
	name, version, ok := strings.Cut(s, "=")
	if !ok || name == "" || version == "" || strings.ContainsAny(s, " \t\n/") {
		return Pin{}, fmt.Errorf("parsing kernel pin %q: want package=version, like %q", s, KernelPin)
	}
	return Pin{Package: name, Version: version}, nil
}

// DebFileName is the file name apt-get download gives the package.
func (p Pin) DebFileName() string {
	return p.Package + "_" + strings.ReplaceAll(p.Version, ":", "%3a") + "_amd64.deb"
}

// MadisonLine is one line of `apt-cache madison`: a version of a package
// and the archive it comes from.
type MadisonLine struct {
	Package, Version, Source string
}

// ParseMadison parses `apt-cache madison` output.
func ParseMadison(out string) []MadisonLine {
	var lines []MadisonLine
	for _, l := range strings.Split(out, "\n") {
		f := strings.Split(l, "|")
		if len(f) != 3 {
			continue
		}
		lines = append(lines, MadisonLine{
			Package: strings.TrimSpace(f[0]),
			Version: strings.TrimSpace(f[1]),
			Source:  strings.TrimSpace(f[2]),
		})
	}
	return lines
}

// kernelNameRE splits a Debian kernel image package name into the
// upstream series, the patch level, the ABI suffix and the flavour:
// linux-image-6.12.107+deb12-amd64-unsigned.
var kernelNameRE = regexp.MustCompile(`^linux-image-(\d+\.\d+)\.(\d+)(\+deb\d+)-(.+)$`)

// SiblingPattern returns an extended regular expression for apt-cache
// search --names-only that matches the package of every patch level of the
// same kernel series and flavour as pkg.
func SiblingPattern(pkg string) (string, error) {
	m := kernelNameRE.FindStringSubmatch(pkg)
	if m == nil {
		return "", fmt.Errorf("kernel package %q is not named linux-image-<series>.<patch>+deb<N>-<flavour>", pkg)
	}
	return "^linux-image-" + regexp.QuoteMeta(m[1]) + `\.[0-9]+` + regexp.QuoteMeta(m[3]+"-"+m[4]) + "$", nil
}

// SortNewestFirst orders kernel package versions by patch level, newest
// first (then by package version string, for determinism).
func SortNewestFirst(lines []MadisonLine) {
	patch := func(name string) int {
		if m := kernelNameRE.FindStringSubmatch(name); m != nil {
			n, _ := strconv.Atoi(m[2])
			return n
		}
		return -1
	}
	sort.SliceStable(lines, func(i, j int) bool {
		pi, pj := patch(lines[i].Package), patch(lines[j].Package)
		if pi != pj {
			return pi > pj
		}
		return lines[i].Version > lines[j].Version
	})
}

// ErrKernelUnavailable is returned (wrapped) when the pinned kernel is not
// cached and the apt archive no longer has it.
var ErrKernelUnavailable = errors.New("pinned kernel package is not in the apt archive")

// UnavailableError explains that pin is gone and what the archive offers
// instead (newest first).
func UnavailableError(pin Pin, available []MadisonLine) error {
	var alt []string
	for _, l := range available {
		alt = append(alt, l.Package+"="+l.Version)
	}
	instead := "no other version of this kernel series and flavour either"
	if len(alt) > 0 {
		instead = "available instead: " + strings.Join(alt, ", ") +
			"; set KernelPin in tools/guest-image/guestimage/kernel.go to " + alt[0] +
			" (see tools/guest-image/README.md)"
	}
	return fmt.Errorf("kernel %s: %w (the security archive keeps only recent builds); %s", pin, ErrKernelUnavailable, instead)
}

// FetchKernel makes sure the pinned kernel package is in dir (downloading it
// with apt-get when it is not) and returns its path. A cached package is
// used as is, so a build keeps working after the archive drops the version.
func FetchKernel(ctx context.Context, log *slog.Logger, dir string, pin Pin) (string, error) {
	deb := filepath.Join(dir, pin.DebFileName())
	if _, err := os.Stat(deb); err == nil {
		log.Debug("kernel package cached", "path", deb)
		return deb, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("creating kernel cache: %w", err)
	}
	ok, err := aptHas(ctx, pin)
	if err != nil {
		return "", err
	}
	if !ok {
		log.Info("kernel not in the apt lists, running apt-get update", "kernel", pin)
		if _, err := run(ctx, "", nil, "apt-get", "update", "-qq"); err != nil {
			return "", fmt.Errorf("updating apt lists to find kernel %s: %w", pin, err)
		}
		if ok, err = aptHas(ctx, pin); err != nil {
			return "", err
		}
	}
	if !ok {
		avail, err := aptSiblings(ctx, pin)
		if err != nil {
			return "", err
		}
		return "", UnavailableError(pin, avail)
	}

	tmp, err := os.MkdirTemp(dir, ".download-")
	if err != nil {
		return "", fmt.Errorf("creating kernel download dir: %w", err)
	}
	defer os.RemoveAll(tmp)
	log.Info("downloading kernel package", "kernel", pin)
	if _, err := run(ctx, tmp, nil, "apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", pin.String()); err != nil {
		return "", fmt.Errorf("downloading kernel %s: %w", pin, err)
	}
	if err := os.Rename(filepath.Join(tmp, pin.DebFileName()), deb); err != nil {
		return "", fmt.Errorf("moving downloaded kernel package into %s: %w", dir, err)
	}
	return deb, nil
}

func aptHas(ctx context.Context, pin Pin) (bool, error) {
	out, err := run(ctx, "", nil, "apt-cache", "madison", pin.Package)
	if err != nil {
		return false, fmt.Errorf("looking up kernel %s with apt-cache: %w", pin, err)
	}
	for _, l := range ParseMadison(string(out)) {
		if l.Package == pin.Package && l.Version == pin.Version {
			return true, nil
		}
	}
	return false, nil
}

// aptSiblings lists the versions the archive has of the pinned kernel's
// series and flavour, newest first.
func aptSiblings(ctx context.Context, pin Pin) ([]MadisonLine, error) {
	pattern, err := SiblingPattern(pin.Package)
	if err != nil {
		return nil, err
	}
	out, err := run(ctx, "", nil, "apt-cache", "search", "--names-only", pattern)
	if err != nil {
		return nil, fmt.Errorf("searching apt for kernels like %s: %w", pin.Package, err)
	}
	var all []MadisonLine
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		name, _, _ := strings.Cut(l, " - ")
		if name = strings.TrimSpace(name); name == "" {
			continue
		}
		m, err := run(ctx, "", nil, "apt-cache", "madison", name)
		if err != nil {
			return nil, fmt.Errorf("looking up kernel %s with apt-cache: %w", name, err)
		}
		all = append(all, ParseMadison(string(m))...)
	}
	SortNewestFirst(all)
	return all, nil
}

// ExtractedKernel is an unpacked kernel package.
type ExtractedKernel struct {
	// Root is the unpacked package (boot/, lib/modules/).
	Root string
	// Release is the kernel release (uname -r).
	Release string
	// Vmlinuz is the kernel image.
	Vmlinuz string
}

// ModulesDir is lib/modules/<release> in the unpacked package.
func (k ExtractedKernel) ModulesDir() string {
	return filepath.Join(k.Root, "lib", "modules", k.Release)
}

// ExtractKernel unpacks deb (whose sha256 is sum) into a directory of
// cacheDir named after both, unless that was done before.
func ExtractKernel(ctx context.Context, cacheDir, deb, sum string) (ExtractedKernel, error) {
	root := filepath.Join(cacheDir, strings.TrimSuffix(filepath.Base(deb), ".deb")+"."+sum[:12])
	if _, err := os.Stat(root); err != nil {
		tmp, err := os.MkdirTemp(cacheDir, ".extract-")
		if err != nil {
			return ExtractedKernel{}, fmt.Errorf("creating kernel extraction dir: %w", err)
		}
		defer os.RemoveAll(tmp)
		if _, err := run(ctx, "", nil, "dpkg-deb", "-x", deb, tmp); err != nil {
			return ExtractedKernel{}, fmt.Errorf("unpacking kernel package %s: %w", deb, err)
		}
		if err := os.Rename(tmp, root); err != nil {
			// Another build may have unpacked the same package meanwhile.
			if _, statErr := os.Stat(root); statErr != nil {
				return ExtractedKernel{}, fmt.Errorf("moving unpacked kernel into %s: %w", cacheDir, err)
			}
		}
	}
	images, err := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	if err != nil || len(images) != 1 {
		return ExtractedKernel{}, fmt.Errorf("finding the kernel image in %s/boot: found %d vmlinuz-* files, want 1 (delete %s to unpack again)", root, len(images), root)
	}
	k := ExtractedKernel{
		Root:    root,
		Vmlinuz: images[0],
		Release: strings.TrimPrefix(filepath.Base(images[0]), "vmlinuz-"),
	}
	if _, err := os.Stat(k.ModulesDir()); err != nil {
		return ExtractedKernel{}, fmt.Errorf("finding kernel modules of %s: %w (delete %s to unpack again)", k.Release, err, root)
	}
	return k, nil
}

// fileSHA256 returns the hex sha256 of a file.
func fileSHA256(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, fmt.Errorf("hashing: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, fmt.Errorf("hashing %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}
