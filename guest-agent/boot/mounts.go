package boot

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/veil-runtime/veil/guest-agent/volume"
)

// Mount is one filesystem PID 1 mounts at boot.
type Mount struct {
	Source, Target, FSType string
	Flags                  uintptr
	Data                   string
}

// CgroupRoot is where the cgroup2 hierarchy is mounted.
const CgroupRoot = "/sys/fs/cgroup"

// SystemMounts is the boot mount table, in order.
func SystemMounts() []Mount {
	const nodev = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	return []Mount{
		{"proc", "/proc", "proc", nodev, ""},
		{"sysfs", "/sys", "sysfs", nodev, ""},
		{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"},
		{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5"},
		{"shm", "/dev/shm", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
		{"cgroup2", CgroupRoot, "cgroup2", nodev, "nsdelegate"},
		{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
		{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
		// The guest volumes (copied configMaps and secrets, emptyDirs, shm)
		// on their own nosuid,nodev tmpfs: a setuid-root file the host
		// copies in is never setuid here (binds of them are hardened too:
		// guest-agent/containers/harden.go).
		{"tmpfs", volume.DefaultRoot, "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
	}
}

// ReadOnlyRootMounts are mounted before SystemMounts when / is read-only
// (the plain handlers' erofs root image, hypervisor/qemu RootImage): a
// tmpfs on /etc, the one directory outside /run and /tmp the agent writes
// (resolv.conf). The image's /etc holds only empty directories.
func ReadOnlyRootMounts() []Mount {
	return []Mount{{"tmpfs", "/etc", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "mode=0755"}}
}

// RootIsReadOnly reports whether / is mounted read-only.
func RootIsReadOnly() (bool, error) {
	var st unix.Statfs_t
	if err := unix.Statfs("/", &st); err != nil {
		return false, fmt.Errorf("reading the root mount's flags: %w", err)
	}
	return st.Flags&unix.ST_RDONLY != 0, nil
}

// MountSystem mounts the boot table (with ReadOnlyRootMounts first when /
// is read-only); a target that is already mounted (EBUSY, for example
// devtmpfs mounted by the kernel) is left as it is. It then points
// /dev/ptmx at the devpts instance.
func MountSystem() error {
	mounts := SystemMounts()
	ro, err := RootIsReadOnly()
	if err != nil {
		return err
	}
	if ro {
		mounts = append(ReadOnlyRootMounts(), mounts...)
	}
	for _, m := range mounts {
		if err := os.MkdirAll(m.Target, 0o755); err != nil {
			return fmt.Errorf("creating mount point %s: %w", m.Target, err)
		}
		err := unix.Mount(m.Source, m.Target, m.FSType, m.Flags, m.Data)
		if err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("mounting %s on %s: %w", m.FSType, m.Target, err)
		}
	}
	_ = os.Remove("/dev/ptmx")
	if err := os.Symlink("pts/ptmx", "/dev/ptmx"); err != nil {
		return fmt.Errorf("linking /dev/ptmx to the devpts instance: %w", err)
	}
	for _, l := range [][2]string{{"/proc/self/fd", "/dev/fd"}, {"/proc/self/fd/0", "/dev/stdin"}, {"/proc/self/fd/1", "/dev/stdout"}, {"/proc/self/fd/2", "/dev/stderr"}} {
		if _, err := os.Lstat(l[1]); err != nil {
			_ = os.Symlink(l[0], l[1])
		}
	}
	return nil
}

// RootIsInitramfs reports whether / is the initramfs (rootfs) given the
// contents of /proc/self/mounts. pivot_root cannot leave an initramfs, so
// CleanStart moves the system into a tmpfs root first (SwitchRoot).
func RootIsInitramfs(mounts string) bool {
	for _, line := range strings.Split(mounts, "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[1] == "/" {
			return f[2] == "rootfs" || f[2] == "ramfs" || (f[0] == "rootfs" && f[2] == "tmpfs")
		}
	}
	return false
}

// UnmountOrder returns the mount points of /proc/self/mounts content that
// Shutdown unmounts, deepest (most recently mounted) first, leaving / and the
// kernel filesystems the power-off itself needs.
func UnmountOrder(mounts string) []string {
	keep := map[string]bool{"/": true, "/proc": true, "/sys": true, "/dev": true}
	var out []string
	lines := strings.Split(strings.TrimSpace(mounts), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		f := strings.Fields(lines[i])
		if len(f) < 2 || keep[f[1]] {
			continue
		}
		out = append(out, unescapeMountPath(f[1]))
	}
	return out
}

// unescapeMountPath undoes the octal escapes of /proc/self/mounts (\040 for space).
func unescapeMountPath(p string) string {
	if !strings.Contains(p, `\`) {
		return p
	}
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		if p[i] == '\\' && i+4 <= len(p) {
			var v int
			if _, err := fmt.Sscanf(p[i+1:i+4], "%3o", &v); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(p[i])
	}
	return filepath.Clean(b.String())
}
