package hostcheck

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/veil-runtime/veil/hypervisor"
)

// DefaultGuestDir is where `veil install` puts the guest image (the shim
// config's default kernel and initrd live here).
const DefaultGuestDir = "/opt/veil/share/veil"

// Options say where to look.
type Options struct {
	// Root is the host's root directory: "/" normally, "/host" in the
	// installer's container (binaries then run chrooted into it).
	Root string
	// GuestDir holds vmlinuz, vmlinux, initrd.img, rootfs.erofs and manifest.json (host path).
	GuestDir string
	// QEMU and Containerd are host paths of the binaries; empty means
	// qemu-system-x86_64 and containerd from PATH.
	QEMU, Containerd string
}

func (o Options) host(p string) string {
	if o.Root == "" || o.Root == "/" {
		return p
	}
	return filepath.Join(o.Root, p)
}

// kernel maps a /proc, /sys or /dev path under Root, falling back to this
// process's own view when Root lacks it: a hostPath mount of / may not carry
// the host's submounts, while a privileged container sees the same kernel
// and devices itself.
func (o Options) kernel(p string) string {
	if hp := o.host(p); hp == p || exists(hp) {
		return hp
	}
	return p
}

// Gather reads the machine.
func Gather(ctx context.Context, o Options) Facts {
	if o.GuestDir == "" {
		o.GuestDir = DefaultGuestDir
	}
	var f Facts
	f.KVM = hypervisor.ReadKVMHost(o.kernel, nil)
	f.VhostVsock = exists(o.kernel("/dev/vhost-vsock"))
	f.SEVSNPParam = readTrim(o.kernel("/sys/module/kvm_amd/parameters/sev_snp"))
	f.TDXParam = readTrim(o.kernel("/sys/module/kvm_intel/parameters/tdx"))
	var st syscall.Statfs_t
	if err := syscall.Statfs(o.kernel("/sys/fs/cgroup"), &st); err == nil {
		f.CgroupRootMagic = int64(st.Type)
	}
	if err := syscall.Statfs(o.kernel("/sys/fs/cgroup/unified"), &st); err == nil {
		f.CgroupUnified = int64(st.Type) == cgroup2Magic
	}

	for _, p := range KubeletConfigFiles {
		if b, err := os.ReadFile(o.host(p)); err == nil {
			if f.KubeletFiles == nil {
				f.KubeletFiles = map[string]string{}
			}
			f.KubeletFiles[p] = string(b)
		}
	}
	f.SystemdBooted = exists(o.host("/run/systemd/system"))

	f.QEMUPath, f.QEMUErr = o.lookPath(o.QEMU, "qemu-system-x86_64")
	if f.QEMUPath != "" {
		var e1, e2 string
		f.QEMUVersionOut, e1 = o.run(ctx, f.QEMUPath, "--version")
		f.QEMUObjectsOut, e2 = o.run(ctx, f.QEMUPath, "-object", "help")
		f.QEMUErr = strings.TrimSpace(e1 + " " + e2)
	}
	f.ContainerdPath, f.ContainerdErr = o.lookPath(o.Containerd, "containerd")
	if f.ContainerdPath != "" {
		f.ContainerdVersionOut, f.ContainerdErr = o.run(ctx, f.ContainerdPath, "--version")
	}
	gatherGuest(&f, o.GuestDir, o.host(o.GuestDir))
	return f
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func readTrim(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// lookPath finds a binary (a host path) given explicitly or on the host's PATH.
func (o Options) lookPath(given, name string) (string, string) {
	if given != "" {
		if !exists(o.host(given)) {
			return "", given + " does not exist"
		}
		return given, ""
	}
	if o.Root == "" || o.Root == "/" {
		if lp, err := exec.LookPath(name); err == nil {
			return lp, ""
		}
	}
	for _, dir := range []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"} {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(o.host(p)); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, ""
		}
	}
	return "", name + " not found"
}

// run runs a host binary (chrooted into Root when it is not /) and returns
// its combined output and, on failure, why.
func (o Options) run(ctx context.Context, path string, args ...string) (string, string) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	if o.Root != "" && o.Root != "/" {
		cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: o.Root}
		cmd.Dir = "/"
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Sprintf("running %s %s: %v", path, strings.Join(args, " "), err)
	}
	return string(out), ""
}

// manifest is the part of tools/guest-image's manifest.json veil checks.
type manifest struct {
	Artifacts map[string]struct {
		SHA256 string `json:"sha256"`
		Size   int64  `json:"size"`
	} `json:"artifacts"`
}

func gatherGuest(f *Facts, shown, dir string) {
	f.GuestDir = shown
	b, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			f.ManifestErr = filepath.Join(shown, "manifest.json") + " is missing: the guest image is not installed (veil install)"
		} else {
			f.ManifestErr = fmt.Sprintf("reading %s: %v", filepath.Join(shown, "manifest.json"), err)
		}
		return
	}
	var m manifest
	if err := json.Unmarshal(b, &m); err != nil {
		f.ManifestErr = fmt.Sprintf("decoding %s: %v", filepath.Join(shown, "manifest.json"), err)
		return
	}
	f.ManifestFiles = map[string]string{}
	f.FileSums = map[string]string{}
	f.FileErrs = map[string]string{}
	for name, a := range m.Artifacts {
		f.ManifestFiles[name] = a.SHA256
		if name != filepath.Base(name) {
			f.FileErrs[name] = "artifact name is not a plain file name"
			continue
		}
		sum, err := fileSHA256(filepath.Join(dir, name))
		if err != nil {
			f.FileErrs[name] = err.Error()
			continue
		}
		f.FileSums[name] = sum
	}
}

func fileSHA256(p string) (string, error) {
	fh, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer fh.Close()
	h := sha256.New()
	if _, err := io.Copy(h, fh); err != nil {
		return "", fmt.Errorf("reading %s: %w", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// CheckGuestImage checks the guest image in dir (a path on this machine)
// against its manifest.json.
func CheckGuestImage(dir string) GuestImage {
	var f Facts
	gatherGuest(&f, dir, dir)
	return evalGuest(f)
}
