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

// KernelPin is the guest kernel's source: Debian's kernel source package
// and its exact version, in apt's name=version form. It is the one place the
// kernel version is set; see README.md for how to bump it. veil builds its
// own kernel from it (kbuild.go) with the config fragments in
// tools/guest-image/kernel.
const KernelPin = "linux-source-6.12=6.12.107-1~deb12u1"

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

// DebFileName is the file name apt-get download gives the package; arch is
// the package's architecture ("all" for linux-source, "amd64").
func (p Pin) DebFileName(arch string) string {
	return p.Package + "_" + strings.ReplaceAll(p.Version, ":", "%3a") + "_" + arch + ".deb"
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

// kernelVersionRE splits a Debian kernel package version into its numbered
// parts: 6.12.107-1~deb12u1 is 6, 12, 107, 1.
var kernelVersionRE = regexp.MustCompile(`^(\d+)\.(\d+)\.(\d+)-(\d+)`)

// SortNewestFirst orders kernel package versions newest first, by their
// numbered parts (then by the version string, for determinism).
func SortNewestFirst(lines []MadisonLine) {
	parts := func(v string) [4]int {
		var p [4]int
		if m := kernelVersionRE.FindStringSubmatch(v); m != nil {
			for i := range p {
				p[i], _ = strconv.Atoi(m[i+1])
			}
		}
		return p
	}
	sort.SliceStable(lines, func(i, j int) bool {
		pi, pj := parts(lines[i].Version), parts(lines[j].Version)
		for k := range pi {
			if pi[k] != pj[k] {
				return pi[k] > pj[k]
			}
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

// FetchKernel makes sure the pinned kernel source package is in dir
// (downloading it with apt-get when it is not) and returns its path. A
// cached package is used as is, so a build keeps working after the archive
// drops the version.
func FetchKernel(ctx context.Context, log *slog.Logger, dir string, pin Pin) (string, error) {
	deb := filepath.Join(dir, pin.DebFileName("all"))
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
	log.Info("downloading kernel source package", "kernel", pin)
	if _, err := run(ctx, tmp, nil, "apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", pin.String()); err != nil {
		return "", fmt.Errorf("downloading kernel %s: %w", pin, err)
	}
	if err := os.Rename(filepath.Join(tmp, pin.DebFileName("all")), deb); err != nil {
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

// aptSiblings lists the versions the archive has of the pinned package,
// newest first.
func aptSiblings(ctx context.Context, pin Pin) ([]MadisonLine, error) {
	out, err := run(ctx, "", nil, "apt-cache", "madison", pin.Package)
	if err != nil {
		return nil, fmt.Errorf("looking up kernel %s with apt-cache: %w", pin.Package, err)
	}
	all := ParseMadison(string(out))
	SortNewestFirst(all)
	return all, nil
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
