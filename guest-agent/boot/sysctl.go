package boot

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containerd/errdefs"
)

// ProcSys is where the kernel's sysctls are.
const ProcSys = "/proc/sys"

// SysctlPath checks a pod sysctl and returns its file relative to
// /proc/sys. Only the sysctls the kubelet counts as namespaced are
// admitted (kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*, net.*):
// those of the IPC and network namespaces, which in the guest are the
// pod's. Names separate with dots, or with slashes when a component holds
// a dot (net/ipv4/conf/eth0.100/forwarding), as sysctl(8) and the kubelet
// take them. Anything else is errdefs.ErrInvalidArgument naming the sysctl.
func SysctlPath(name string) (string, error) {
	p := name
	if !strings.Contains(p, "/") {
		p = strings.ReplaceAll(p, ".", "/")
	}
	parts := strings.Split(p, "/")
	if slices.ContainsFunc(parts, func(s string) bool { return s == "" || s == "." || s == ".." || strings.ContainsRune(s, 0) }) {
		return "", fmt.Errorf("sysctl %q: not a sysctl name: %w", name, errdefs.ErrInvalidArgument)
	}
	dotted := strings.Join(parts, ".")
	switch {
	case dotted == "kernel.sem",
		strings.HasPrefix(dotted, "kernel.shm"),
		strings.HasPrefix(dotted, "kernel.msg"),
		strings.HasPrefix(dotted, "fs.mqueue."),
		strings.HasPrefix(dotted, "net."):
		return p, nil
	}
	return "", fmt.Errorf("sysctl %q: not a namespaced sysctl (a pod may set kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.* and net.*): %w", name, errdefs.ErrInvalidArgument)
}

// SetSysctls writes sysctls (name to value) below root (ProcSys) in name
// order, in the calling process's namespaces. All are checked
// (SysctlPath) before any is written; a sysctl the kernel does not have is
// errdefs.ErrInvalidArgument naming it.
func SetSysctls(root string, sysctls map[string]string) error {
	names := make([]string, 0, len(sysctls))
	paths := map[string]string{}
	for name := range sysctls {
		p, err := SysctlPath(name)
		if err != nil {
			return err
		}
		names = append(names, name)
		paths[name] = p
	}
	slices.Sort(names)
	for _, name := range names {
		f := filepath.Join(root, paths[name])
		if err := writeSysctl(f, sysctls[name]); err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("sysctl %q: the guest kernel has no %s: %w", name, f, errdefs.ErrInvalidArgument)
			}
			return fmt.Errorf("setting sysctl %q to %q: %w", name, sysctls[name], err)
		}
	}
	return nil
}

// writeSysctl writes an existing sysctl file (never creating one).
func writeSysctl(path, value string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(value)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
