package shim

import (
	"errors"
	"fmt"
	"maps"
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

// guestSharedDir is where the agent mounts the pod's shared directory (the
// share the driver exports with tag hypervisor.ShareTag) in the guest.
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
	// RecursiveReadOnly makes the mounts below Source read-only too ("rro").
	RecursiveReadOnly bool
	// Flat binds Source alone, without the mounts below it: those are
	// binds of their own (guestSpec).
	Flat bool
}

// bindMode is how the shim bind-mounts a host path into the shared directory.
type bindMode struct {
	// ReadOnly makes the bind read-only; with Recursive (and not Flat), the
	// mounts below it too.
	ReadOnly, Recursive bool
	// Flat leaves out the mounts below the source (MS_BIND without MS_REC).
	Flat bool
}

func (b hostBind) mode() bindMode {
	return bindMode{ReadOnly: b.ReadOnly, Recursive: b.RecursiveReadOnly, Flat: b.Flat}
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
//     VM's network, which is the pod's; so are its net.* sysctls, which
//     the pod set in the VM (podSysctls, checkNetSysctls). Other namespaces pass through with
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
// Mounts below a bind's host source (submounts: a tmpfs in a hostPath
// directory, say) are shared as binds of their own. The guest sees a shared
// directory as one 9p filesystem, so a read-only bind there would cover the
// submounts too, where a non-recursive read-only mount ("ro") must leave
// them writable; and a recursive host bind would leave the shim's copy of
// each submount on the source's own directory entry, so whoever owns the
// submount could not remove its mount point (rmdir: EBUSY) while the
// container runs, as it can under runc, whose copies are in the
// container's mount namespace. So the source is bound flat (without its
// submounts), each submount is bound flat beside it
// ("<n>-<name>.sub<k>"), and the guest spec gets a bind for each after the
// spec's own mounts, at the same place below the destination: writable
// under "ro", read-only under "rro" (recursive read-only: read-only on the
// host and in the guest all the way down). submounts lists the mount
// points below a host path, relative to it, parents first (nil: none,
// and binds stay recursive).
func guestSpec(cid string, spec *specs.Spec, submounts func(string) []string) (*specs.Spec, []hostBind) {
	out := *spec
	var binds []hostBind
	var subMounts []specs.Mount
	out.Mounts = make([]specs.Mount, 0, len(spec.Mounts))
	for i, m := range spec.Mounts {
		m.Options = slices.Clone(m.Options)
		if isBindMount(m) {
			name := strings.Trim(strings.ReplaceAll(m.Destination, "/", "-"), "-")
			if name == "" {
				name = "root"
			}
			target := path.Join(cid, "mounts", fmt.Sprintf("%d-%s", i, name))
			rro := slices.Contains(m.Options, "rro")
			ro := slices.Contains(m.Options, "ro") || rro
			var subs []string
			if submounts != nil {
				subs = submounts(m.Source)
			}
			binds = append(binds, hostBind{Index: i, Source: m.Source, Target: target, ReadOnly: ro, RecursiveReadOnly: rro, Flat: len(subs) > 0})
			for k, rel := range subs {
				subTarget := fmt.Sprintf("%s.sub%d", target, k)
				binds = append(binds, hostBind{Index: len(spec.Mounts) + len(subMounts), Source: filepath.Join(m.Source, rel),
					Target: subTarget, ReadOnly: rro, Flat: true})
				opts := slices.DeleteFunc(slices.Clone(m.Options), func(o string) bool { return o == "ro" || o == "rro" || o == "rw" })
				if rro {
					opts = append(opts, "ro")
				} else {
					opts = append(opts, "rw")
				}
				subMounts = append(subMounts, specs.Mount{Destination: path.Join(m.Destination, rel), Type: m.Type,
					Source: path.Join(guestSharedDir, subTarget), Options: opts})
			}
			m.Source = path.Join(guestSharedDir, target)
		}
		out.Mounts = append(out.Mounts, m)
	}
	out.Mounts = append(out.Mounts, subMounts...)
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
		// Nor its net.* sysctls: they are the VM's, which the pod set
		// (podSysctls; checkNetSysctls refuses any other).
		l.Sysctl = maps.Clone(spec.Linux.Sysctl)
		maps.DeleteFunc(l.Sysctl, func(k, _ string) bool { return isNetSysctl(k) })
		if len(l.Sysctl) == 0 {
			l.Sysctl = nil
		}
		out.Linux = &l
	}
	return &out, binds
}

// hostSubmounts lists the mount points below dir on the host, relative to
// dir, in mount order (a parent before what is mounted in it); a mount
// point that is mounted over more than once is listed once.
func hostSubmounts(dir string) []string {
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil
	}
	mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(real))
	if err != nil {
		return nil
	}
	return submountsOf(real, mounts)
}

// submountsOf is hostSubmounts over a mount table.
func submountsOf(dir string, mounts []*mountinfo.Info) []string {
	var rels []string
	for _, m := range mounts {
		rel, err := filepath.Rel(dir, m.Mountpoint)
		if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") || slices.Contains(rels, rel) {
			continue
		}
		rels = append(rels, rel)
	}
	return rels
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
	// target to match, with the mounts below it unless mode.Flat, read-only
	// as mode says.
	Bind(source, target string, mode bindMode) error
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

func (hostMounter) Bind(source, target string, mode bindMode) error {
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
	flags := uintptr(unix.MS_BIND | unix.MS_REC)
	if mode.Flat {
		flags = unix.MS_BIND
	}
	if err := unix.Mount(source, target, "", flags, ""); err != nil {
		return fmt.Errorf("bind mounting %s: %w", source, err)
	}
	if mode.ReadOnly && mode.Recursive && !mode.Flat {
		attr := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}
		if err := unix.MountSetattr(-1, target, unix.AT_RECURSIVE, attr); err != nil {
			_ = mount.UnmountRecursive(target, unix.MNT_DETACH)
			return fmt.Errorf("making bind mount of %s read-only recursively: %w", source, err)
		}
	} else if mode.ReadOnly {
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
