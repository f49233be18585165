package guestimage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/veil-runtime/veil/attestation/measure"
	"github.com/veil-runtime/veil/tools/guest-image/cpio"
)

// Options say what Build builds from and where it puts it.
type Options struct {
	// OutDir receives vmlinuz, vmlinux, initrd.img, rootfs.erofs and
	// manifest.json.
	OutDir string
	// CacheDir holds downloads and built kernels between runs (kernel/
	// below it).
	CacheDir string
	// KernelBuildCache, when set, holds built kernels instead of
	// CacheDir/kernel (a test forces a fresh build with an empty one).
	KernelBuildCache string
	// Kernel is the kernel source package to build from (normally
	// ParsePin(KernelPin)).
	Kernel Pin
	// FragmentsDir holds the kernel config fragments (normally
	// RepoDir/KernelFragmentsDir).
	FragmentsDir string
	// RepoDir is the veil module's root; AgentPackage is built in it.
	RepoDir string
	// AgentPackage is the Go main package of the agent ("./cmd/veil-agent").
	AgentPackage string
	// Runc is the host's runc binary ("/usr/sbin/runc") and RuncPackage
	// the Debian package it comes from ("runc").
	Runc        string
	RuncPackage string
	// Crun is the host's crun binary ("/usr/bin/crun") and CrunPackage
	// the Debian package it comes from ("crun"); it becomes /usr/bin/crun,
	// the agent's default OCI runtime. Empty leaves it out (the agent then
	// needs veil.oci_runtime=runc).
	Crun        string
	CrunPackage string
	// Shell is a static shell for the debug console ("/bin/busybox" of
	// Debian's busybox-static) and ShellPackage its package; it becomes
	// /bin/sh. Empty leaves the image without a shell.
	Shell        string
	ShellPackage string
	Compression  Compression
	// Mtime is the modification time of every initramfs entry
	// (SOURCE_DATE_EPOCH, else 0).
	Mtime int64
	// SNPFirmware is the OVMF (AmdSev) image veil-snp's launch digest is
	// recorded with; empty looks in SNPFirmwareCandidates.
	SNPFirmware string
	// TDXFirmware is the TDVF veil-tdx's values are recorded with; empty
	// looks in TDXFirmwareCandidates.
	TDXFirmware string
	Log         *slog.Logger
}

// Artifact files in OutDir.
const (
	// KernelFile is the compressed kernel (bzImage, with the EFI stub):
	// what firmware boots, for the confidential handlers.
	KernelFile = "vmlinuz"
	// VmlinuxFile is the same kernel uncompressed (ELF with the PVH entry
	// note): what QEMU boots directly, with no decompression, for the
	// plain handlers.
	VmlinuxFile  = "vmlinux"
	InitrdFile   = "initrd.img"
	ManifestFile = "manifest.json"
)

// Manifest describes a built guest image; it is written to manifest.json.
// Everything in it is a function of the inputs: no times, no host paths.
type Manifest struct {
	// Kernel is veil's own kernel: the source package it is built from,
	// the config fragments' digest, the resulting .config's digest and the
	// toolchain that compiled it.
	Kernel struct {
		Package         string    `json:"package"`
		Version         string    `json:"version"`
		DebSHA256       string    `json:"deb_sha256"`
		Release         string    `json:"release"`
		FragmentsSHA256 string    `json:"fragments_sha256"`
		ConfigSHA256    string    `json:"config_sha256"`
		Toolchain       Toolchain `json:"toolchain"`
	} `json:"kernel"`
	Runc struct {
		Package string `json:"package"`
		Version string `json:"version"`
	} `json:"runc"`
	// Crun is /usr/bin/crun (empty without it).
	Crun struct {
		Package string `json:"package,omitempty"`
		Version string `json:"version,omitempty"`
	} `json:"crun"`
	// Shell is the debug console's /bin/sh (empty without one).
	Shell struct {
		Package string `json:"package,omitempty"`
		Version string `json:"version,omitempty"`
	} `json:"shell"`
	// Libraries are runc's and crun's shared libraries and the Debian
	// packages they come from.
	Libraries []Library `json:"libraries"`
	Agent     struct {
		Package   string `json:"package"`
		GoVersion string `json:"go_version"`
	} `json:"agent"`
	Initramfs struct {
		Compression string `json:"compression"`
		Compressor  string `json:"compressor"`
		Mtime       int64  `json:"mtime"`
		// UncompressedSize is the size of the cpio archive.
		UncompressedSize int64               `json:"uncompressed_size"`
		Files            []ManifestFileEntry `json:"files"`
	} `json:"initramfs"`
	// Artifacts maps each output file name to its digest and size.
	Artifacts map[string]Artifact `json:"artifacts"`
	// Measurements are the launch values of this image for the handlers'
	// default inputs (measure.go), by handler: what `veil measure
	// --handler` computes on a node with the same firmware and CPU.
	Measurements map[string]measure.Recorded `json:"measurements"`
}

// Library is a shared library in the initramfs.
type Library struct {
	Path    string `json:"path"`
	Package string `json:"package,omitempty"`
	Version string `json:"version,omitempty"`
}

// ManifestFileEntry is a regular file in the initramfs.
type ManifestFileEntry struct {
	Path   string `json:"path"`
	Mode   string `json:"mode"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Artifact is one output file.
type Artifact struct {
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

// Dirs are the directories every guest has.
var Dirs = []string{
	"/proc", "/sys", "/dev", "/tmp", "/run", "/etc", "/etc/veil",
	"/usr", "/usr/bin", "/sbin", "/lib", "/root",
}

// Fetch makes sure the kernel package is in the cache and returns its path
// and sha256.
func Fetch(ctx context.Context, o Options) (deb, sum string, err error) {
	deb, err = FetchKernel(ctx, o.Log, filepath.Join(o.CacheDir, "kernel"), o.Kernel)
	if err != nil {
		return "", "", err
	}
	sum, _, err = fileSHA256(deb)
	if err != nil {
		return "", "", err
	}
	return deb, sum, nil
}

// Build builds the guest image into o.OutDir and returns its manifest.
func Build(ctx context.Context, o Options) (*Manifest, error) {
	log := o.Log
	var m Manifest
	deb, sum, err := Fetch(ctx, o)
	if err != nil {
		return nil, err
	}
	kcache := o.KernelBuildCache
	if kcache == "" {
		kcache = filepath.Join(o.CacheDir, "kernel")
	}
	frags := o.FragmentsDir
	if frags == "" {
		frags = filepath.Join(o.RepoDir, KernelFragmentsDir)
	}
	k, err := BuildKernel(ctx, KernelBuildOptions{
		CacheDir: kcache, SourceDeb: deb, SourceSHA256: sum, FragmentsDir: frags, Log: log,
	})
	if err != nil {
		return nil, err
	}
	m.Kernel.Package, m.Kernel.Version, m.Kernel.DebSHA256, m.Kernel.Release = o.Kernel.Package, o.Kernel.Version, sum, k.Release
	m.Kernel.FragmentsSHA256, m.Kernel.Toolchain = k.FragmentsSHA256, k.Toolchain
	if m.Kernel.ConfigSHA256, _, err = fileSHA256(filepath.Join(k.Dir, cachedConfig)); err != nil {
		return nil, err
	}

	tmp, err := os.MkdirTemp(o.CacheDir, ".guest-image-")
	if err != nil {
		return nil, fmt.Errorf("creating build dir: %w", err)
	}
	defer os.RemoveAll(tmp)

	// The agent is /init.
	agentBin := filepath.Join(tmp, "veil-agent")
	goVersion, err := buildAgent(ctx, o.RepoDir, o.AgentPackage, agentBin)
	if err != nil {
		return nil, err
	}
	m.Agent.Package, m.Agent.GoVersion = o.AgentPackage, goVersion
	var c Contents
	if c.Agent, err = os.ReadFile(agentBin); err != nil {
		return nil, fmt.Errorf("reading the built agent: %w", err)
	}

	// runc and its libraries.
	if c.Runc, err = os.ReadFile(o.Runc); err != nil {
		return nil, fmt.Errorf("reading runc for the initramfs: %w", err)
	}
	if m.Runc.Version, err = dpkgVersion(ctx, o.RuncPackage); err != nil {
		return nil, err
	}
	m.Runc.Package = o.RuncPackage
	libs, err := SharedLibraries("/", o.Runc, LibrarySearchPath)
	if err != nil {
		return nil, err
	}
	if o.Crun != "" {
		if c.Crun, err = os.ReadFile(o.Crun); err != nil {
			return nil, fmt.Errorf("reading crun for the initramfs: %w", err)
		}
		if m.Crun.Version, err = dpkgVersion(ctx, o.CrunPackage); err != nil {
			return nil, err
		}
		m.Crun.Package = o.CrunPackage
		crunLibs, err := SharedLibraries("/", o.Crun, LibrarySearchPath)
		if err != nil {
			return nil, err
		}
		libs = UnionLibraries(libs, crunLibs)
	}
	for _, l := range libs {
		b, err := os.ReadFile(l.Source)
		if err != nil {
			return nil, fmt.Errorf("reading %s for the initramfs: %w", l.Source, err)
		}
		c.Libraries = append(c.Libraries, File{Path: l.Path, Data: b})
		lib := Library{Path: l.Path}
		lib.Package, lib.Version = dpkgOwner(ctx, l.Path, l.Source)
		m.Libraries = append(m.Libraries, lib)
	}

	// The debug console's shell.
	if o.Shell != "" {
		if c.Shell, err = os.ReadFile(o.Shell); err != nil {
			return nil, fmt.Errorf("reading the debug shell for the initramfs: %w", err)
		}
		if m.Shell.Version, err = dpkgVersion(ctx, o.ShellPackage); err != nil {
			return nil, err
		}
		m.Shell.Package = o.ShellPackage
	}

	entries := Entries(c)
	for _, e := range entries {
		if e.Mode&cpio.TypeMask == cpio.TypeRegular {
			h := sha256.Sum256(e.Data)
			m.Initramfs.Files = append(m.Initramfs.Files, ManifestFileEntry{
				Path: "/" + e.Name, Mode: fmt.Sprintf("%04o", e.Mode&0o7777),
				Size: int64(len(e.Data)), SHA256: hex.EncodeToString(h[:]),
			})
		}
	}
	var archive bytes.Buffer
	if err := cpio.Write(&archive, entries, o.Mtime); err != nil {
		return nil, err
	}
	m.Initramfs.UncompressedSize = int64(archive.Len())
	m.Initramfs.Mtime = o.Mtime
	initrd, compressor, err := compress(ctx, o.Compression, archive.Bytes())
	if err != nil {
		return nil, err
	}
	m.Initramfs.Compression, m.Initramfs.Compressor = string(o.Compression), compressor
	// The same tree as a read-only root image for the plain handlers.
	rootfsTmp := filepath.Join(tmp, RootfsFile)
	if err := WriteRootfs(ctx, entries, o.Mtime, rootfsTmp); err != nil {
		return nil, err
	}
	rootfs, err := os.ReadFile(rootfsTmp)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", RootfsFile, err)
	}

	// Outputs: each written to a temporary name and renamed, the manifest last.
	if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
		return nil, fmt.Errorf("creating output dir: %w", err)
	}
	bzImage, err := os.ReadFile(k.BzImage)
	if err != nil {
		return nil, fmt.Errorf("reading kernel image: %w", err)
	}
	vmlinux, err := stripKernel(ctx, k.Vmlinux, filepath.Join(tmp, VmlinuxFile))
	if err != nil {
		return nil, err
	}
	m.Artifacts = map[string]Artifact{}
	for _, a := range []struct {
		name string
		data []byte
	}{{KernelFile, bzImage}, {VmlinuxFile, vmlinux}, {InitrdFile, initrd}, {RootfsFile, rootfs}} {
		h := sha256.Sum256(a.data)
		m.Artifacts[a.name] = Artifact{SHA256: hex.EncodeToString(h[:]), Size: int64(len(a.data))}
		if err := writeAtomic(filepath.Join(o.OutDir, a.name), a.data); err != nil {
			return nil, err
		}
	}
	if m.Measurements, err = measurements(o.OutDir, o.SNPFirmware, o.TDXFirmware); err != nil {
		return nil, fmt.Errorf("recording launch measurements: %w", err)
	}
	mj, err := json.MarshalIndent(&m, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encoding manifest: %w", err)
	}
	if err := writeAtomic(filepath.Join(o.OutDir, ManifestFile), append(mj, '\n')); err != nil {
		return nil, err
	}
	return &m, nil
}

// stripKernel writes the kernel ELF in to out, and returns it, without
// what QEMU would load for nothing:
//   - its symbol and string tables (strip --strip-all: every loaded
//     segment and the PVH entry note stay). QEMU's ELF loader copies a
//     -kernel ELF's symbol and string tables into its heap and keeps them
//     for the VM's life: 1.9 MiB of every VM's own memory, measured at
//     agent ready (QEMU's anonymous memory and heap 16.9 -> 15.0 MiB).
//   - .init.scratch, 4 MiB of zeros after the kernel's _end (the kernel's
//     linker script: only SME's in-place encryption of a bare-metal kernel
//     uses it, in early boot, and the kernel then counts it as free
//     memory). It is the last section of the last loaded segment, so QEMU
//     wrote 6 MiB of zeros into guest RAM (it and the gap before it), and
//     the host kept them resident: guest RAM touched at agent ready, 2 GiB
//     guest, 76.0 -> 72.0 MiB. Without it the segment ends at _end.
//
// SNP and TDX boot the bzImage (vmlinuz) instead, untouched.
// The kernel cache keeps the unstripped vmlinux for reading a guest's
// stack traces.
func stripKernel(ctx context.Context, in, out string) ([]byte, error) {
	if _, err := run(ctx, "", nil, "strip", "--strip-all", "--remove-section=.init.scratch", "-o", out, in); err != nil {
		return nil, fmt.Errorf("stripping the kernel's symbols (make deps installs binutils): %w", err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return nil, fmt.Errorf("reading the stripped kernel: %w", err)
	}
	return b, nil
}

// File is a regular file for the initramfs.
type File struct {
	Path string
	Data []byte
}

// Contents are the parts of an initramfs.
type Contents struct {
	// Agent is the agent binary; it becomes /init.
	Agent []byte
	// Runc becomes /usr/bin/runc.
	Runc []byte
	// Crun, when set, becomes /usr/bin/crun.
	Crun []byte
	// Libraries are runc's and crun's interpreter and shared libraries, at
	// their paths.
	Libraries []File
	// Shell, when set, becomes /bin/sh (a static busybox: its applets run
	// inside the shell, so nothing else is needed).
	Shell []byte
}

// Entries lays out the initramfs (see the package documentation).
func Entries(c Contents) []cpio.Entry {
	t := newTree()
	for _, d := range Dirs {
		t.add(d, cpio.TypeDir|0o755, nil)
	}
	t.add("/tmp", cpio.TypeDir|0o1777, nil)
	t.add("/root", cpio.TypeDir|0o700, nil)
	// The kernel opens /dev/console for /init's stdio before anything
	// mounts devtmpfs. When the console is not there yet (hvc0, a
	// virtio-serial port the host announces while the kernel boots), /init
	// starts with no stdio and Go's runtime opens /dev/null for it, or
	// dies before main (exit 2, "Attempted to kill init!"): a boot in
	// about 30 under TCG.
	t.addDev("/dev/console", 0o600, 5, 1)
	t.addDev("/dev/null", 0o666, 1, 3)
	t.add("/init", cpio.TypeRegular|0o755, c.Agent)
	t.add("/usr/bin/runc", cpio.TypeRegular|0o755, c.Runc)
	if c.Crun != nil {
		t.add("/usr/bin/crun", cpio.TypeRegular|0o755, c.Crun)
	}
	for _, l := range c.Libraries {
		t.add(l.Path, cpio.TypeRegular|0o755, l.Data)
	}
	if c.Shell != nil {
		t.add("/bin/sh", cpio.TypeRegular|0o755, c.Shell)
	}
	return t.list()
}

// tree collects initramfs entries by path.
type tree struct{ entries map[string]cpio.Entry }

func newTree() *tree { return &tree{entries: map[string]cpio.Entry{}} }

// add adds an entry and any missing parent directories (mode 0755).
func (t *tree) add(p string, mode uint32, data []byte) {
	name := strings.TrimPrefix(path.Clean(p), "/")
	t.entries[name] = cpio.Entry{Name: name, Mode: mode, Data: data}
	for d := path.Dir(name); d != "."; d = path.Dir(d) {
		if _, ok := t.entries[d]; !ok {
			t.entries[d] = cpio.Entry{Name: d, Mode: cpio.TypeDir | 0o755}
		}
	}
}

func (t *tree) addDev(p string, perm, major, minor uint32) {
	t.add(p, cpio.TypeChar|perm, nil)
	e := t.entries[strings.TrimPrefix(p, "/")]
	e.RdevMajor, e.RdevMinor = major, minor
	t.entries[e.Name] = e
}

func (t *tree) list() []cpio.Entry {
	out := make([]cpio.Entry, 0, len(t.entries))
	for _, e := range t.entries {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// buildAgent builds the agent reproducibly and returns the Go version used.
func buildAgent(ctx context.Context, repo, pkg, out string) (string, error) {
	// Pin everything in the environment that changes the binary: the
	// baseline amd64 level also keeps the agent running on any guest CPU.
	env := append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOAMD64=v1")
	v, err := run(ctx, repo, env, "go", "env", "GOVERSION")
	if err != nil {
		return "", fmt.Errorf("finding the Go version: %w", err)
	}
	if _, err := run(ctx, repo, env, "go", "build", "-trimpath", "-buildvcs=false",
		"-ldflags", "-s -w -buildid=", "-o", out, pkg); err != nil {
		return "", fmt.Errorf("building the agent %s (it becomes the guest's /init): %w", pkg, err)
	}
	return strings.TrimSpace(string(v)), nil
}

func dpkgVersion(ctx context.Context, pkg string) (string, error) {
	out, err := run(ctx, "", nil, "dpkg-query", "-W", "-f", "${Version}", pkg)
	if err != nil {
		return "", fmt.Errorf("finding the version of package %s (install it with make deps): %w", pkg, err)
	}
	return strings.TrimSpace(string(out)), nil
}

// dpkgOwner returns the package (and its version) that installed a file,
// trying each of the file's names; empty when dpkg does not know it.
func dpkgOwner(ctx context.Context, names ...string) (pkg, version string) {
	for _, n := range names {
		out, err := run(ctx, "", nil, "dpkg-query", "-S", n)
		if err != nil {
			continue
		}
		owner, _, _ := strings.Cut(strings.SplitN(string(out), "\n", 2)[0], ": ")
		owner = strings.Split(owner, ", ")[0]
		v, err := dpkgVersion(ctx, owner)
		if err != nil {
			continue
		}
		return strings.TrimSuffix(owner, ":amd64"), v
	}
	return "", ""
}

func writeAtomic(p string, data []byte) error {
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", p, err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return fmt.Errorf("writing %s: %w", p, err)
	}
	return nil
}
