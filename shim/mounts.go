package shim

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/moby/sys/mountinfo"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/veil-runtime/veil/guest-agent/api"
)

// guestShmDir is where the guest mounts a veil pod's /dev/shm tmpfs
// (shmStorage); the pod's containers bind it at /dev/shm.
const guestShmDir = "/run/veil/shm"

// criShm is the CRI's sandbox /dev/shm among spec's mounts: a bind of a
// host tmpfs the CRI made for the pod (not the host's own /dev/shm, which
// a hostIPC pod binds). nil when there is none (ctr run's spec mounts a
// tmpfs itself, which runc makes in the guest).
func criShm(spec *specs.Spec) *specs.Mount {
	for i, m := range spec.Mounts {
		if path.Clean(m.Destination) == "/dev/shm" && isBindMount(m) && filepath.Clean(m.Source) != "/dev/shm" {
			return &spec.Mounts[i]
		}
	}
	return nil
}

// shmStorage is the guest tmpfs that holds a veil pod's /dev/shm, as Kata
// does, in place of the CRI's host tmpfs shared over 9p (host memory the
// VM's limits do not count, and a 9p file system under every shm_open):
// one per pod, shared by its containers, its size the CRI's tmpfs's
// (the pod's shm size, 64 MiB unless the runtime says otherwise). nil when
// the pod spec has no CRI shm. Confidential pods put /dev/shm in guest
// memory their own way (volumes.go).
func shmStorage(spec *specs.Spec) (*api.Storage, error) {
	m := criShm(spec)
	if m == nil {
		return nil, nil
	}
	var st unix.Statfs_t
	if err := unix.Statfs(m.Source, &st); err != nil {
		return nil, fmt.Errorf("reading the size of the pod's /dev/shm %s: %w", m.Source, err)
	}
	size := st.Blocks * uint64(st.Bsize)
	return &api.Storage{Driver: "tmpfs", Source: "shm", MountPoint: guestShmDir, Fstype: "tmpfs",
		Options: []string{"nosuid", "nodev", "noexec", "mode=1777", fmt.Sprintf("size=%d", size)}}, nil
}

// useGuestShm points a container's CRI /dev/shm bind at the pod's guest
// tmpfs (guestShmDir) and drops its host bind; it returns the binds left.
func useGuestShm(gspec *specs.Spec, binds []hostBind) []hostBind {
	var keep []hostBind
	for _, b := range binds {
		m := &gspec.Mounts[b.Index]
		if path.Clean(m.Destination) == "/dev/shm" && filepath.Clean(b.Source) != "/dev/shm" {
			m.Source = guestShmDir
			continue
		}
		keep = append(keep, b)
	}
	return keep
}

// ShareOptions are the 9p mount options of the pod's share in the guest.
// cache=mmap, not cache=none: with cache=none the guest kernel refuses a
// writable MAP_SHARED mapping of a file on the share (EINVAL), which the
// rootfs and every volume are (databases, SQLite in WAL mode, anything
// that maps its files); cache=mmap keeps no other cache (reads and writes
// still go to the host at once, so the host and the guest see each other's
// changes) and lets mmap use the page cache, written back on msync and
// munmap. Measured by tools/vmtest TestSharedWritableMmap, which runs a
// container on a VM whose share has these options.
var ShareOptions = []string{"trans=virtio", "version=9p2000.L", "msize=262144", "cache=mmap"}

// guestSharedDir is where the agent mounts the pod's shared directory (the
// 9p share with tag hypervisor.ShareTag) in the guest.
const guestSharedDir = "/run/veil/shared"

// hostBind is a host path the shim bind-mounts into the pod's shared
// directory so the guest can reach it.
type hostBind struct {
	// Index is the bind mount's index in the spec's mounts.
	Index int
	// Source is the host path (file or directory).
	Source string
	// Target is relative to the shared directory: "<cid>/mounts/<n>-<name>".
	Target   string
	ReadOnly bool
}

// rootfsTarget is the container's rootfs, relative to the shared directory.
func rootfsTarget(cid string) string { return path.Join(cid, "rootfs") }

// guestSpec turns the spec containerd wrote for a host runtime into the spec
// the agent runs in the guest, and lists the host paths to share. It does not
// modify spec.
//
//   - Bind mounts (type "bind" or a bind/rbind option) get their host source
//     shared under <cid>/mounts/ and their source rewritten to the guest path
//     of the share; read-only stays read-only (the shim also makes the host
//     bind read-only). Other mounts (proc, sysfs, tmpfs, devpts, mqueue, ...)
//     are made by runc in the guest and pass through.
//   - The network namespace is dropped: every container of the pod uses the
//     VM's network, which is the pod's. Other namespaces pass through with
//     their host paths: a path is how the CRI says "the pod's namespace"
//     (the pause process's), and the agent maps it to the pod's namespace in
//     the guest (guest-agent/containers.RewriteSpec).
//   - Hooks name host binaries and are dropped: the shim runs those that
//     run on the host itself (hooks.go).
//   - root.path becomes "rootfs" (the agent uses the rootfs storage). The
//     cgroups path is left to the agent, which puts containers under /veil.
//
// User and group IDs, env, cwd, capabilities, rlimits, resources, seccomp and
// everything else pass through unchanged.
//
// A read-only bind ("ro") whose host source has mounts below it is read-only
// on the host only: the guest sees the share as one 9p filesystem, so a
// read-only bind there would cover the submounts too, and a non-recursive
// read-only mount must leave them writable. The host's read-only bind makes
// QEMU's writes to the top fail all the same. hasSubmounts reports whether
// a host path has mounts below it (nil: never).
func guestSpec(cid string, spec *specs.Spec, hasSubmounts func(string) bool) (*specs.Spec, []hostBind) {
	out := *spec
	var binds []hostBind
	out.Mounts = make([]specs.Mount, 0, len(spec.Mounts))
	for i, m := range spec.Mounts {
		m.Options = slices.Clone(m.Options)
		if isBindMount(m) {
			name := strings.Trim(strings.ReplaceAll(m.Destination, "/", "-"), "-")
			if name == "" {
				name = "root"
			}
			target := path.Join(cid, "mounts", fmt.Sprintf("%d-%s", i, name))
			ro := slices.Contains(m.Options, "ro") || slices.Contains(m.Options, "rro")
			binds = append(binds, hostBind{Index: i, Source: m.Source, Target: target, ReadOnly: ro})
			if slices.Contains(m.Options, "ro") && !slices.Contains(m.Options, "rro") && hasSubmounts != nil && hasSubmounts(m.Source) {
				m.Options = slices.DeleteFunc(m.Options, func(o string) bool { return o == "ro" })
			}
			m.Source = path.Join(guestSharedDir, target)
		}
		out.Mounts = append(out.Mounts, m)
	}
	out.Root = &specs.Root{Path: "rootfs"}
	if spec.Root != nil {
		out.Root.Readonly = spec.Root.Readonly
	}
	out.Hooks = nil
	if spec.Linux != nil {
		l := *spec.Linux
		l.Namespaces = nil
		for _, ns := range spec.Linux.Namespaces {
			if ns.Type != specs.NetworkNamespace {
				l.Namespaces = append(l.Namespaces, ns)
			}
		}
		out.Linux = &l
	}
	return &out, binds
}

// hasSubmounts reports whether something is mounted below dir on the host.
func hasSubmounts(dir string) bool {
	mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		return false
	}
	for _, m := range mounts {
		if m.Mountpoint != dir {
			return true
		}
	}
	return false
}

func isBindMount(m specs.Mount) bool {
	return m.Type == "bind" || slices.Contains(m.Options, "bind") || slices.Contains(m.Options, "rbind")
}

// mounter makes and removes the host mounts of the shared directory. Tests
// fake it; hostMounter is the real one.
type mounter interface {
	// Rootfs mounts the container's root filesystem (containerd's mounts from
	// the snapshotter; a bind of the bundle's rootfs when there are none).
	Rootfs(mounts []mount.Mount, target string) error
	// Bind bind-mounts source (a file or directory) at target, creating
	// target to match, read-only when asked.
	Bind(source, target string, readOnly bool) error
	// Unmount removes every mount at target.
	Unmount(target string) error
}

type hostMounter struct{}

func (hostMounter) Rootfs(mounts []mount.Mount, target string) error {
	if err := os.MkdirAll(target, 0o755); err != nil {
		return fmt.Errorf("creating rootfs mount point: %w", err)
	}
	if err := mount.All(mounts, target); err != nil {
		return fmt.Errorf("mounting rootfs at %s: %w", target, err)
	}
	return nil
}

func (hostMounter) Bind(source, target string, readOnly bool) error {
	fi, err := os.Stat(source)
	if err != nil {
		return fmt.Errorf("sharing bind mount source: %w", err)
	}
	if fi.IsDir() {
		err = os.MkdirAll(target, 0o755)
	} else {
		err = os.MkdirAll(filepath.Dir(target), 0o755)
		if err == nil {
			var f *os.File
			f, err = os.OpenFile(target, os.O_CREATE|os.O_WRONLY, 0o644)
			if err == nil {
				err = f.Close()
			}
		}
	}
	if err != nil {
		return fmt.Errorf("creating bind mount point for %s: %w", source, err)
	}
	if err := unix.Mount(source, target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind mounting %s: %w", source, err)
	}
	if readOnly {
		if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			_ = unix.Unmount(target, unix.MNT_DETACH)
			return fmt.Errorf("making bind mount of %s read-only: %w", source, err)
		}
	}
	return nil
}

func (hostMounter) Unmount(target string) error {
	if err := mount.UnmountRecursive(target, unix.MNT_DETACH); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("unmounting %s: %w", target, err)
	}
	return nil
}
