package guestimage

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"
)

// KernelFragmentsDir is where the kernel config fragments live, relative to
// the repository root: one *.config file per concern, applied in name order.
const KernelFragmentsDir = "tools/guest-image/kernel"

// kernelRecipe names the way BuildKernel turns source and fragments into a
// kernel. It is part of the cache key: change it whenever the steps below
// change what comes out (make targets, environment, base configs).
const kernelRecipe = "tinyconfig+kvm_guest.config+fragments,olddefconfig,bzImage+vmlinux,v1"

// kbuildEnv is the environment that makes the kernel build reproducible: no
// build time, user, host or build counter in the image (see the kernel's
// Documentation/kbuild/reproducible-builds.rst). The build is in-tree, so
// no absolute source path reaches __FILE__.
var kbuildEnv = []string{
	"ARCH=x86_64",
	"KBUILD_BUILD_TIMESTAMP=Thu Jan  1 00:00:00 UTC 1970",
	"KBUILD_BUILD_USER=veil",
	"KBUILD_BUILD_HOST=veil",
	"KBUILD_BUILD_VERSION=1",
	"LC_ALL=C",
	"TZ=UTC",
}

// KernelBuildOptions say what BuildKernel builds from.
type KernelBuildOptions struct {
	// CacheDir receives the built kernel in a directory named after the
	// inputs' digest, and the temporary build tree.
	CacheDir string
	// SourceDeb is the linux-source package and SourceSHA256 its digest.
	SourceDeb    string
	SourceSHA256 string
	// FragmentsDir holds the *.config fragments.
	FragmentsDir string
	Log          *slog.Logger
}

// BuiltKernel is a kernel in the cache.
type BuiltKernel struct {
	// Dir is the cache directory holding bzImage, vmlinux, config, release.
	Dir string
	// BzImage is the compressed, bootable image (firmware and EFI boot);
	// Vmlinux the uncompressed ELF with the PVH entry note (direct boot).
	BzImage, Vmlinux string
	// Release is the kernel release (uname -r).
	Release string
	// Toolchain is the compiler and linker (first line of each --version).
	Toolchain Toolchain
	// FragmentsSHA256 is FragmentsDigest of the fragments.
	FragmentsSHA256 string
	// Key is the digest of every input; Dir is named after it.
	Key string
	// Built is true when this call built it, false when it came from the cache.
	Built bool
}

// Toolchain is what compiles the kernel.
type Toolchain struct {
	GCC      string `json:"gcc"`
	Binutils string `json:"binutils"`
}

// Fragment is one config fragment file.
type Fragment struct {
	Name string
	Data []byte
}

// ReadFragments reads dir/*.config in name order.
func ReadFragments(dir string) ([]Fragment, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.config"))
	if err != nil {
		return nil, fmt.Errorf("listing kernel config fragments: %w", err)
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("reading kernel config fragments: no *.config in %s", dir)
	}
	sort.Strings(paths)
	var out []Fragment
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("reading kernel config fragment: %w", err)
		}
		out = append(out, Fragment{Name: filepath.Base(p), Data: b})
	}
	return out, nil
}

// FragmentsDigest is the hex sha256 over the fragments' names and contents.
func FragmentsDigest(frags []Fragment) string {
	h := sha256.New()
	for _, f := range frags {
		fmt.Fprintf(h, "%s\x00%d\x00", f.Name, len(f.Data))
		h.Write(f.Data)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// KernelKey is the cache key of a kernel build: every input that changes
// the output.
func KernelKey(sourceSHA256, fragmentsSHA256 string, tc Toolchain) string {
	h := sha256.New()
	for _, s := range []string{kernelRecipe, sourceSHA256, fragmentsSHA256, tc.GCC, tc.Binutils} {
		fmt.Fprintf(h, "%d:%s\n", len(s), s)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Option is one line of a config fragment: CONFIG_X=value, or CONFIG_X
// with Value "" for "# CONFIG_X is not set".
type Option struct {
	Name, Value string
	// From is the fragment and line that asked for it.
	From string
}

func (o Option) String() string {
	if o.Value == "" {
		return "# " + o.Name + " is not set"
	}
	return o.Name + "=" + o.Value
}

// ParseConfig returns the options a config file or fragment sets, in order:
// CONFIG_X=v lines and "# CONFIG_X is not set" lines (Value ""); other
// comments and blank lines are skipped. A line that is neither is an error
// naming it.
func ParseConfig(name string, data []byte) ([]Option, error) {
	var out []Option
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		from := name + ":" + strconv.Itoa(n)
		if rest, ok := strings.CutPrefix(line, "# CONFIG_"); ok {
			if opt, ok := strings.CutSuffix(rest, " is not set"); ok && !strings.ContainsAny(opt, " =") {
				out = append(out, Option{Name: "CONFIG_" + opt, From: from})
			}
			continue
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || !strings.HasPrefix(k, "CONFIG_") || v == "" || strings.ContainsAny(k, " \t") {
			return nil, fmt.Errorf("%s: %q is not CONFIG_X=value or \"# CONFIG_X is not set\"", from, line)
		}
		out = append(out, Option{Name: k, Value: v, From: from})
	}
	return out, sc.Err()
}

// CheckConfig returns an error naming every option the fragments ask for
// that the final .config does not have (Kconfig drops an option whose
// dependencies are not met, silently): want is what the fragments set,
// final what olddefconfig wrote.
func CheckConfig(want, final []Option) error {
	got := map[string]string{}
	for _, o := range final {
		got[o.Name] = o.Value
	}
	var lost []string
	for _, w := range want {
		if g := got[w.Name]; g != w.Value {
			seen := Option{Name: w.Name, Value: g}
			lost = append(lost, fmt.Sprintf("%s (%s) became %q", w, w.From, seen))
		}
	}
	if len(lost) > 0 {
		return fmt.Errorf("kernel config: %d option(s) asked for did not survive olddefconfig (a dependency is missing or the option does not exist in this kernel; add the dependency to the fragment): %s",
			len(lost), strings.Join(lost, "; "))
	}
	return nil
}

// FindToolchain reports the host's gcc and ld versions.
func FindToolchain(ctx context.Context) (Toolchain, error) {
	first := func(name string) (string, error) {
		out, err := run(ctx, "", nil, name, "--version")
		if err != nil {
			return "", fmt.Errorf("finding the kernel toolchain (make deps installs build-essential): %w", err)
		}
		return strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0]), nil
	}
	var tc Toolchain
	var err error
	if tc.GCC, err = first("gcc"); err != nil {
		return tc, err
	}
	if tc.Binutils, err = first("ld"); err != nil {
		return tc, err
	}
	return tc, nil
}

// Kernel cache directory files.
const (
	cachedBzImage = "bzImage"
	cachedVmlinux = "vmlinux"
	cachedConfig  = "config"
	cachedRelease = "release"
)

// BuildKernel returns the kernel built from the source package and the
// fragments with the host's toolchain: from CacheDir/veil-kernel-<key> when
// an earlier build left it there, else built now (minutes) and stored
// there. The build runs `make tinyconfig`, `make kvm_guest.config`, merges
// the fragments, runs olddefconfig, checks every fragment option survived
// (CheckConfig), and builds bzImage and vmlinux at nice 10 with one job per
// CPU.
func BuildKernel(ctx context.Context, o KernelBuildOptions) (BuiltKernel, error) {
	log := o.Log
	frags, err := ReadFragments(o.FragmentsDir)
	if err != nil {
		return BuiltKernel{}, err
	}
	var want []Option
	for _, f := range frags {
		opts, err := ParseConfig(f.Name, f.Data)
		if err != nil {
			return BuiltKernel{}, fmt.Errorf("parsing kernel config fragment: %w", err)
		}
		want = append(want, opts...)
	}
	tc, err := FindToolchain(ctx)
	if err != nil {
		return BuiltKernel{}, err
	}
	k := BuiltKernel{Toolchain: tc, FragmentsSHA256: FragmentsDigest(frags)}
	k.Key = KernelKey(o.SourceSHA256, k.FragmentsSHA256, tc)
	k.Dir = filepath.Join(o.CacheDir, "veil-kernel-"+k.Key[:16])
	k.BzImage, k.Vmlinux = filepath.Join(k.Dir, cachedBzImage), filepath.Join(k.Dir, cachedVmlinux)
	if rel, err := os.ReadFile(filepath.Join(k.Dir, cachedRelease)); err == nil {
		k.Release = strings.TrimSpace(string(rel))
		log.Debug("kernel cached", "dir", k.Dir)
		return k, nil
	}

	if err := os.MkdirAll(o.CacheDir, 0o755); err != nil {
		return k, fmt.Errorf("creating kernel cache: %w", err)
	}
	work, err := os.MkdirTemp(o.CacheDir, ".kbuild-")
	if err != nil {
		return k, fmt.Errorf("creating kernel build dir: %w", err)
	}
	defer os.RemoveAll(work)
	start := time.Now()
	log.Info("building the guest kernel (minutes; cached afterwards)", "source", filepath.Base(o.SourceDeb), "cache", k.Dir)
	src, err := unpackSource(ctx, o.SourceDeb, work)
	if err != nil {
		return k, err
	}
	env := append(os.Environ(), kbuildEnv...)
	mk := func(args ...string) ([]byte, error) {
		return run(ctx, src, env, "nice", append([]string{"-n", "10", "make"}, args...)...)
	}
	for _, target := range []string{"tinyconfig", "kvm_guest.config"} {
		if _, err := mk(target); err != nil {
			return k, fmt.Errorf("configuring the kernel: %w", err)
		}
	}
	mergeArgs := []string{"-m", ".config"}
	for _, f := range frags {
		mergeArgs = append(mergeArgs, filepath.Join(o.FragmentsDir, f.Name))
	}
	if _, err := run(ctx, src, env, "scripts/kconfig/merge_config.sh", mergeArgs...); err != nil {
		return k, fmt.Errorf("merging the kernel config fragments: %w", err)
	}
	if _, err := mk("olddefconfig"); err != nil {
		return k, fmt.Errorf("configuring the kernel: %w", err)
	}
	config, err := os.ReadFile(filepath.Join(src, ".config"))
	if err != nil {
		return k, fmt.Errorf("reading the kernel config: %w", err)
	}
	final, err := ParseConfig(".config", config)
	if err != nil {
		return k, err
	}
	if err := CheckConfig(want, final); err != nil {
		return k, err
	}
	if _, err := mk("-j"+strconv.Itoa(runtime.NumCPU()), "bzImage", "vmlinux"); err != nil {
		return k, fmt.Errorf("building the kernel: %w", err)
	}
	rel, err := mk("-s", "kernelrelease")
	if err != nil {
		return k, fmt.Errorf("finding the kernel release: %w", err)
	}
	k.Release = strings.TrimSpace(string(rel))

	out := filepath.Join(work, "out")
	if err := os.Mkdir(out, 0o755); err != nil {
		return k, fmt.Errorf("creating kernel output dir: %w", err)
	}
	for _, c := range []struct{ from, to string }{
		{"arch/x86/boot/bzImage", cachedBzImage}, {"vmlinux", cachedVmlinux}, {".config", cachedConfig},
	} {
		b, err := os.ReadFile(filepath.Join(src, c.from))
		if err != nil {
			return k, fmt.Errorf("reading the built kernel: %w", err)
		}
		if err := os.WriteFile(filepath.Join(out, c.to), b, 0o644); err != nil { //nolint:gosec // G703: fixed names below the build's own temporary dir
			return k, fmt.Errorf("storing the built kernel: %w", err)
		}
	}
	// The release file goes last: its presence marks a complete entry.
	if err := os.WriteFile(filepath.Join(out, cachedRelease), []byte(k.Release+"\n"), 0o644); err != nil { //nolint:gosec // G703: a fixed name below the build's own temporary dir
		return k, fmt.Errorf("storing the built kernel: %w", err)
	}
	if err := os.Rename(out, k.Dir); err != nil {
		// Another build of the same inputs may have stored it meanwhile.
		if _, statErr := os.Stat(filepath.Join(k.Dir, cachedRelease)); statErr != nil {
			return k, fmt.Errorf("moving the built kernel into %s: %w", k.Dir, err)
		}
	}
	k.Built = true
	log.Info("guest kernel built", "release", k.Release, "took", time.Since(start).Round(time.Second), "dir", k.Dir)
	return k, nil
}

// unpackSource unpacks the kernel tree from a linux-source .deb (which
// holds usr/src/linux-source-<series>.tar.xz) into work and returns the
// tree's path.
func unpackSource(ctx context.Context, deb, work string) (string, error) {
	pkg := filepath.Join(work, "pkg")
	if _, err := run(ctx, "", nil, "dpkg-deb", "-x", deb, pkg); err != nil {
		return "", fmt.Errorf("unpacking kernel source package %s: %w", deb, err)
	}
	tars, err := filepath.Glob(filepath.Join(pkg, "usr", "src", "linux-source-*.tar.xz"))
	if err != nil || len(tars) != 1 {
		return "", fmt.Errorf("finding the kernel source tarball in %s: found %d usr/src/linux-source-*.tar.xz, want 1", deb, len(tars))
	}
	if _, err := run(ctx, work, nil, "tar", "-xJf", tars[0]); err != nil {
		return "", fmt.Errorf("unpacking kernel source %s: %w", filepath.Base(tars[0]), err)
	}
	src := filepath.Join(work, strings.TrimSuffix(filepath.Base(tars[0]), ".tar.xz"))
	if err := os.RemoveAll(pkg); err != nil {
		return "", fmt.Errorf("removing unpacked kernel source package: %w", err)
	}
	if _, err := os.Stat(filepath.Join(src, "Makefile")); err != nil {
		return "", fmt.Errorf("finding the kernel tree unpacked from %s: %w", filepath.Base(tars[0]), err)
	}
	return src, nil
}
