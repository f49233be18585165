package boot

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"golang.org/x/sys/unix"

	"github.com/veil-runtime/veil/guest-agent/api/wire"
)

// AgentPath is where the guest image puts the agent (tools/guest-image).
const AgentPath = wire.AgentPath

// newRootDir is where the tmpfs that becomes / is mounted while the
// initramfs moves into it. It stays behind, empty, in the initramfs.
const newRootDir = "/.veil-root"

// CleanStart is PID 1's first step, before anything else runs. The kernel
// starts /init in the initramfs with an environment and arguments taken
// from the host's command line. Unless the environment is already exactly
// Env (CleanStart has run), it clears it, moves the system out of the
// initramfs into a tmpfs root when / is the initramfs (SwitchRoot), and
// re-executes AgentPath with no arguments and Env, so neither the agent's
// runtime nor anything it starts sees what the host set. It returns nil
// when there is nothing to do and otherwise returns only on error.
func CleanStart(log *slog.Logger) error {
	if EnvIsClean(os.Environ()) {
		return nil
	}
	ClearEnv()
	initramfs, err := rootIsInitramfs()
	if err != nil {
		return err
	}
	if initramfs {
		start := time.Now()
		st, err := SwitchRoot(newRootDir)
		if err != nil {
			return err
		}
		log.Info("moved the initramfs into a tmpfs root", "files", st.Files, "bytes", st.Bytes, "took", time.Since(start))
	}
	if err := unix.Exec(AgentPath, []string{AgentPath}, Env()); err != nil {
		return fmt.Errorf("re-executing %s with a clean environment: %w", AgentPath, err)
	}
	return nil
}

// rootIsInitramfs mounts /proc for a moment to read the mount table.
func rootIsInitramfs() (bool, error) {
	if err := os.MkdirAll("/proc", 0o555); err != nil {
		return false, fmt.Errorf("creating /proc: %w", err)
	}
	err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
	if err != nil && !errors.Is(err, unix.EBUSY) {
		return false, fmt.Errorf("mounting /proc: %w", err)
	}
	b, rerr := os.ReadFile("/proc/self/mounts")
	if err == nil {
		if err := unix.Unmount("/proc", 0); err != nil {
			return false, fmt.Errorf("unmounting /proc before the switch: %w", err)
		}
	}
	if rerr != nil {
		return false, fmt.Errorf("reading the mount table: %w", rerr)
	}
	return RootIsInitramfs(string(b)), nil
}

// MoveStats counts what SwitchRoot moved.
type MoveStats struct {
	Files, Bytes int64
}

// SwitchRoot makes a tmpfs the root, as switch_root(8) does: it mounts a
// tmpfs on newRoot, moves every file of / into it (copy, then delete: the
// initramfs's memory is freed as it goes, and nothing of it stays
// reachable below the new root; on one CPU, and each file backwards as
// copyFile does, so the copy reuses the pages it frees), moves the tmpfs
// over / and chroots into it. The initramfs (rootfs) can never be left with pivot_root, so runc
// would need --no-pivot there, and a container with CAP_SYS_CHROOT could
// then chroot out of its root into the guest's files; on a tmpfs root runc
// pivots, and whatever a container escapes to is the emptied rootfs.
//
// It copies on purpose. A bind mount of / moved over / (zero-copy) is
// also a root runc can pivot in, but it shares the rootfs's files, and
// every mount namespace's root mount is a copy of the rootfs: a container
// with CAP_SYS_ADMIN that detaches its root and re-enters its namespace
// reaches (and can rewrite) /init and /usr/bin/runc. Only an empty rootfs
// closes that (tools/vmtest TestHardeningChrootEscape; guest-agent/README.md
// has the figures of both).
func SwitchRoot(newRoot string) (MoveStats, error) {
	var st MoveStats
	if err := os.Mkdir(newRoot, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return st, fmt.Errorf("creating %s: %w", newRoot, err)
	}
	if err := unix.Mount("veilroot", newRoot, "tmpfs", 0, "mode=0755"); err != nil {
		return st, fmt.Errorf("mounting the tmpfs root on %s: %w", newRoot, err)
	}
	var root unix.Stat_t
	if err := unix.Stat("/", &root); err != nil {
		return st, fmt.Errorf("reading /: %w", err)
	}
	restore, err := pinToOneCPU()
	if err != nil {
		return st, err
	}
	err = MoveTree("/", newRoot, root.Dev, newRoot, &st)
	if rerr := restore(); err == nil {
		err = rerr
	}
	if err != nil {
		return st, fmt.Errorf("moving the initramfs into the tmpfs root: %w", err)
	}
	if err := unix.Chdir(newRoot); err != nil {
		return st, fmt.Errorf("entering %s: %w", newRoot, err)
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return st, fmt.Errorf("moving the tmpfs root over /: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return st, fmt.Errorf("entering the tmpfs root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return st, fmt.Errorf("entering the tmpfs root: %w", err)
	}
	return st, nil
}

// pinToOneCPU keeps the calling goroutine on one thread and that thread
// on one CPU until restore, so the pages a copy frees land on the per-CPU
// free list the next allocation takes from (see copyFile).
func pinToOneCPU() (restore func() error, err error) {
	runtime.LockOSThread()
	var saved unix.CPUSet
	if err := unix.SchedGetaffinity(0, &saved); err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("reading the CPU affinity: %w", err)
	}
	var one unix.CPUSet
	for cpu := range len(saved) * 64 {
		if saved.IsSet(cpu) {
			one.Set(cpu)
			break
		}
	}
	if err := unix.SchedSetaffinity(0, &one); err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("pinning to one CPU: %w", err)
	}
	return func() error {
		defer runtime.UnlockOSThread()
		if err := unix.SchedSetaffinity(0, &saved); err != nil {
			return fmt.Errorf("restoring the CPU affinity: %w", err)
		}
		return nil
	}, nil
}

// MoveTree moves the contents of directory src into the existing directory
// dst: directories, regular files, symlinks, device nodes, FIFOs and
// sockets, with their mode (setuid/setgid/sticky included), owner and
// modification time; hard links become copies. Entries on another device
// than dev (mount points) are not entered: dst gets an empty directory for
// them and they stay. skip (an absolute path) is left alone. Each file is
// removed from src once copied, so the two trees never both hold all the
// data.
func MoveTree(src, dst string, dev uint64, skip string, st *MoveStats) error {
	entries, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range entries {
		s, d := filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())
		if s == skip {
			continue
		}
		var fi unix.Stat_t
		if err := unix.Lstat(s, &fi); err != nil {
			return err
		}
		kind := fi.Mode & unix.S_IFMT
		if fi.Dev != dev {
			if kind == unix.S_IFDIR {
				if err := os.Mkdir(d, os.FileMode(fi.Mode&0o777)); err != nil {
					return err
				}
			}
			continue
		}
		switch kind {
		case unix.S_IFDIR:
			if err := os.Mkdir(d, 0o700); err != nil {
				return err
			}
			if err := MoveTree(s, d, dev, skip, st); err != nil {
				return err
			}
		case unix.S_IFREG:
			n, err := copyFile(s, d)
			if err != nil {
				return err
			}
			st.Bytes += n
		case unix.S_IFLNK:
			target, err := os.Readlink(s)
			if err != nil {
				return err
			}
			if err := os.Symlink(target, d); err != nil {
				return err
			}
		default: // devices, FIFOs, sockets
			if err := unix.Mknod(d, fi.Mode, int(fi.Rdev)); err != nil {
				return fmt.Errorf("creating %s: %w", d, err)
			}
		}
		if err := copyAttrs(d, &fi); err != nil {
			return err
		}
		if kind == unix.S_IFDIR {
			// A directory still holding a mount point or skip stays.
			if err := unix.Rmdir(s); err != nil && !errors.Is(err, unix.ENOTEMPTY) && !errors.Is(err, unix.EBUSY) {
				return fmt.Errorf("removing %s: %w", s, err)
			}
		} else if err := unix.Unlink(s); err != nil {
			return fmt.Errorf("removing %s: %w", s, err)
		}
		st.Files++
	}
	return nil
}

// moveChunk is how much of a file copyFile holds twice at a time: small
// enough that the pages the source frees sit on the guest allocator's
// per-CPU lists and the next chunk's copy takes them again.
const moveChunk = 64 << 10

// copyFile copies regular file src to the new file dst (mode 0600 until
// copyAttrs) and returns its size. It copies from the end, moveChunk at a
// time, and truncates src behind each chunk, so the copy reuses the
// guest pages the source frees instead of touching new ones (QEMU keeps
// every page a guest touched). A file that is running (ETXTBSY: /init,
// the agent itself) cannot be truncated and is copied front to back.
func copyFile(src, dst string) (int64, error) {
	in, err := os.OpenFile(src, os.O_RDWR, 0)
	shrink := err == nil
	if errors.Is(err, unix.ETXTBSY) {
		in, err = os.Open(src)
	}
	if err != nil {
		return 0, err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, err
	}
	var n int64
	if shrink {
		n, err = copyBackwards(in, out)
	} else {
		n, err = io.Copy(out, in)
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, fmt.Errorf("copying %s: %w", src, err)
	}
	return n, nil
}

// copyBackwards copies in to the empty out from the last chunk to the
// first, truncating in behind each one, and returns the size.
func copyBackwards(in, out *os.File) (int64, error) {
	fi, err := in.Stat()
	if err != nil {
		return 0, err
	}
	size := fi.Size()
	if err := out.Truncate(size); err != nil {
		return 0, err
	}
	buf := make([]byte, min(size, moveChunk))
	for end := size; end > 0; {
		start := (end - 1) / moveChunk * moveChunk
		b := buf[:end-start]
		if _, err := in.ReadAt(b, start); err != nil {
			return 0, err
		}
		if _, err := out.WriteAt(b, start); err != nil {
			return 0, err
		}
		if err := in.Truncate(start); err != nil {
			return 0, err
		}
		end = start
	}
	return size, nil
}

// copyAttrs gives path the owner, mode and modification time in fi. The
// mode is set after the owner: chown clears setuid and setgid.
func copyAttrs(path string, fi *unix.Stat_t) error {
	if err := unix.Lchown(path, int(fi.Uid), int(fi.Gid)); err != nil {
		return fmt.Errorf("setting the owner of %s: %w", path, err)
	}
	if fi.Mode&unix.S_IFMT != unix.S_IFLNK {
		if err := unix.Chmod(path, fi.Mode&0o7777); err != nil {
			return fmt.Errorf("setting the mode of %s: %w", path, err)
		}
	}
	ts := []unix.Timespec{fi.Atim, fi.Mtim}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, path, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("setting the times of %s: %w", path, err)
	}
	return nil
}
