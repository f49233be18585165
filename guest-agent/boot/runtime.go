package boot

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// OCIRuntimeParam is the kernel parameter that picks the OCI runtime the
// agent runs containers with: "crun" (the default) or "runc".
const OCIRuntimeParam = "veil.oci_runtime"

// OCIRuntimeCloneParam, set to 1, leaves the runtime's binary as it is, so
// that the runtime copies itself into a memfd for every container it starts
// (runc's and crun's defence against CVE-2019-5736). Only for measuring
// what SealBinary saves.
const OCIRuntimeCloneParam = "veil.oci_runtime_clone"

// OCI runtimes the guest image carries.
const (
	Crun = "crun"
	Runc = "runc"
	// DefaultOCIRuntime is the one the agent uses unless told otherwise:
	// crun starts a container in about half of runc's time in the guest
	// (tools/vmtest TestOCIRuntimeStart).
	DefaultOCIRuntime = Crun
)

// OCIRuntimeInfo is an OCI runtime the guest image carries.
type OCIRuntimeInfo struct {
	Name   string
	Binary string
	// SpecVersion, when set, is the ociVersion the runtime's bundles must
	// carry: crun 1.8 refuses any version but 1.0.x ("unknown version
	// specified"), though it reads the fields the CRI sets; the agent
	// writes this version instead of the host's.
	SpecVersion string
}

// OCIRuntimes are the runtimes the guest image carries, by name.
var OCIRuntimes = map[string]OCIRuntimeInfo{
	Crun: {Name: Crun, Binary: "/usr/bin/crun", SpecVersion: "1.0.2"},
	Runc: {Name: Runc, Binary: "/usr/bin/runc"},
}

// OCIRuntime returns the runtime veil.oci_runtime names
// (DefaultOCIRuntime when unset). An unknown name is an error naming the
// known ones; the runtime is then the default.
func OCIRuntime(params map[string]string) (OCIRuntimeInfo, error) {
	v := params[OCIRuntimeParam]
	if v == "" {
		return OCIRuntimes[DefaultOCIRuntime], nil
	}
	if r, ok := OCIRuntimes[v]; ok {
		return r, nil
	}
	return OCIRuntimes[DefaultOCIRuntime], fmt.Errorf("kernel parameter %s=%q: use %s or %s", OCIRuntimeParam, v, Crun, Runc)
}

// OCIRuntimeClones reports whether veil.oci_runtime_clone asks to leave the
// runtime's binary unsealed.
func OCIRuntimeClones(params map[string]string) bool {
	b, _ := strconv.ParseBool(params[OCIRuntimeCloneParam])
	return b
}

// runtimeSeals are the seals runc and crun look for on their own
// executable: with exactly these, /proc/self/exe cannot be written through
// and they run it as is instead of copying themselves into a new memfd for
// every container.
const runtimeSeals = unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE

// SealBinary puts a sealed in-memory copy of the executable at path over
// path (a bind mount of a memfd, as runc's contrib/memfd-bind does), and
// frees the original's pages by truncating it (not on a read-only root). runc (1.1) and crun then
// skip their per-container copy of themselves: a container that reaches
// its runtime's /proc/self/exe finds a file no one can write, which is
// the protection the copy gives. The returned file is the memfd; the
// caller keeps it open for as long as the binary is used (the mount reads
// through it).
func SealBinary(path string) (*os.File, error) {
	src, err := os.OpenFile(path, os.O_RDWR, 0)
	readOnly := errors.Is(err, unix.EROFS)
	if readOnly {
		// On a read-only root (erofs) the original cannot be written, but
		// runc and crun do not know that and would still copy themselves:
		// seal a copy all the same, and leave the original, which costs
		// the guest no memory there (its pages are the host's).
		src, err = os.Open(path)
	}
	if err != nil {
		return nil, fmt.Errorf("sealing %s: %w", path, err)
	}
	defer src.Close()
	fd, err := unix.MemfdCreate("veil-sealed:"+path, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING|unix.MFD_EXEC)
	if errors.Is(err, unix.EINVAL) {
		// Before Linux 6.3 there is no MFD_EXEC: memfds are executable.
		fd, err = unix.MemfdCreate("veil-sealed:"+path, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	}
	if err != nil {
		return nil, fmt.Errorf("sealing %s: memfd_create: %w", path, err)
	}
	mem := os.NewFile(uintptr(fd), "memfd:"+path)
	ok := false
	defer func() {
		if !ok {
			mem.Close()
		}
	}()
	if _, err := io.Copy(mem, src); err != nil {
		return nil, fmt.Errorf("sealing %s: copying into memfd: %w", path, err)
	}
	if err := unix.Fchmod(fd, 0o755); err != nil {
		return nil, fmt.Errorf("sealing %s: fchmod memfd: %w", path, err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, runtimeSeals); err != nil {
		return nil, fmt.Errorf("sealing %s: adding seals: %w", path, err)
	}
	// The memfd lives on the kernel's internal mount, which cannot be
	// bound from directly: bind its /proc magic link instead, opened O_PATH.
	link, err := os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", fd), unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("sealing %s: opening the memfd link: %w", path, err)
	}
	defer link.Close()
	if err := unix.Mount(fmt.Sprintf("/proc/self/fd/%d", link.Fd()), path, "", unix.MS_BIND, ""); err != nil {
		return nil, fmt.Errorf("sealing %s: binding the memfd over it: %w", path, err)
	}
	ok = true
	if readOnly {
		return mem, nil
	}
	// The original is hidden below the mount now: free its pages.
	if err := src.Truncate(0); err != nil {
		return mem, fmt.Errorf("sealing %s: freeing the original: %w", path, err)
	}
	return mem, nil
}
