package shim

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Guest CIDs for the vsock transport.
//
// Every VM on a host needs its own vsock context ID (>= 3). The shim
// allocates one per pod with a lock file per CID, <state root>/vsock/<cid>
// (/run/veil/vsock/3, ...), held with flock(LOCK_EX) by the shim for the
// pod's life. Why lock files and not only the vhost-vsock ioctl
// (VHOST_VSOCK_SET_GUEST_CID fails with EADDRINUSE on a CID in use, which
// is how Kata probes): the probe is only true while its fd is open, so two
// shims probing at once could both see a CID free and both start QEMU with
// it; a lock is an atomic claim among veil's shims. The kernel drops a flock
// when its holder dies, however it dies, so the CID of a crashed shim (whose
// QEMU dies with it) is free again without any cleanup, and a new or
// restarted shim sees every CID that running shims hold. The ioctl is still
// asked for each candidate (cidAllocator.inUse), to skip CIDs that other
// hypervisors on the host (Kata, Firecracker, libvirt) hold without veil's
// locks. The lowest free CID is taken, so a released CID is reused.

// vsockDirName is the lock directory under the state root.
const vsockDirName = "vsock"

// Guest CIDs 0-2 are reserved (hypervisor, local, host); U32_MAX is "any".
const (
	firstGuestCID = 3
	// maxCIDTries bounds the scan: more pods than this on one host is not
	// a real case, and a bound keeps a broken lock directory from spinning.
	maxCIDTries = 1 << 16
)

// cidAllocator hands out guest CIDs unique on the host.
type cidAllocator struct {
	// dir holds one lock file per CID in use.
	dir string
	// inUse reports whether something other than veil holds cid (the
	// vhost-vsock probe); nil checks only veil's locks.
	inUse func(cid uint32) (bool, error)
}

// cidLease is one allocated CID, held until Release.
type cidLease struct {
	cid  uint32
	path string
	f    *os.File
}

// CID is the guest CID (0 for a nil lease: no vsock).
func (l *cidLease) CID() uint32 {
	if l == nil {
		return 0
	}
	return l.cid
}

// Allocate claims the lowest free CID for the pod named owner.
func (a *cidAllocator) Allocate(owner string) (*cidLease, error) {
	if err := os.MkdirAll(a.dir, 0o700); err != nil {
		return nil, fmt.Errorf("allocating a guest CID: %w", err)
	}
	for cid := uint32(firstGuestCID); cid < firstGuestCID+maxCIDTries; cid++ {
		l, err := a.tryLock(cid)
		if err != nil {
			return nil, fmt.Errorf("allocating a guest CID: %w", err)
		}
		if l == nil {
			continue
		}
		if a.inUse != nil {
			used, err := a.inUse(cid)
			if err != nil {
				_ = l.Release()
				return nil, fmt.Errorf("allocating a guest CID: %w", err)
			}
			if used {
				// Another hypervisor's VM: leave it, keep no file.
				_ = l.Release()
				continue
			}
		}
		// The owner is for people reading the directory; the lock is the claim.
		_ = l.f.Truncate(0)
		_, _ = l.f.WriteAt([]byte(fmt.Sprintf("pid %d pod %s\n", os.Getpid(), owner)), 0)
		return l, nil
	}
	return nil, fmt.Errorf("allocating a guest CID: CIDs %d-%d are all taken (lock files in %s)", firstGuestCID, firstGuestCID+maxCIDTries-1, a.dir)
}

// tryLock claims cid's lock file; nil, nil when another shim holds it.
func (a *cidAllocator) tryLock(cid uint32) (*cidLease, error) {
	p := filepath.Join(a.dir, strconv.FormatUint(uint64(cid), 10))
	for {
		f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("opening %s: %w", p, err)
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			f.Close()
			if errors.Is(err, unix.EWOULDBLOCK) {
				return nil, nil
			}
			return nil, fmt.Errorf("locking %s: %w", p, err)
		}
		// A holder releasing the CID unlinks the file before unlocking it:
		// a lock on a file no longer at p claims nothing. Try again.
		var held, now unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &held); err != nil {
			f.Close()
			return nil, fmt.Errorf("checking %s: %w", p, err)
		}
		if err := unix.Stat(p, &now); err != nil || now.Ino != held.Ino || now.Dev != held.Dev {
			f.Close()
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("checking %s: %w", p, err)
			}
			continue
		}
		return &cidLease{cid: cid, path: p, f: f}, nil
	}
}

// Release frees the CID: the lock file is removed, then unlocked. Call it
// once the VM is gone. Safe on nil and more than once.
func (l *cidLease) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := os.Remove(l.path)
	if errors.Is(err, fs.ErrNotExist) {
		err = nil
	}
	if cerr := l.f.Close(); err == nil {
		err = cerr
	}
	l.f = nil
	if err != nil {
		return fmt.Errorf("releasing guest CID %d: %w", l.cid, err)
	}
	return nil
}

// vhostVsockInUse asks the host's vhost-vsock device whether cid is taken:
// VHOST_VSOCK_SET_GUEST_CID claims it for a throwaway device fd (closed at
// once, which frees it) and fails with EADDRINUSE when a VM has it.
func vhostVsockInUse(dev string) func(cid uint32) (bool, error) {
	return func(cid uint32) (bool, error) {
		fd, err := unix.Open(dev, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return false, fmt.Errorf("probing guest CID %d: opening %s: %w", cid, dev, err)
		}
		defer unix.Close(fd)
		const vhostVsockSetGuestCID = 0x4008af60 // _IOW(VHOST_VIRTIO 0xAF, 0x60, __u64)
		v := uint64(cid)
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), vhostVsockSetGuestCID, uintptr(unsafe.Pointer(&v))) //nolint:gosec // G103: the ioctl reads a __u64 through this pointer, for the call only
		switch errno {
		case 0:
			return false, nil
		case unix.EADDRINUSE:
			return true, nil
		}
		return false, fmt.Errorf("probing guest CID %d: VHOST_VSOCK_SET_GUEST_CID on %s: %w", cid, dev, errno)
	}
}
