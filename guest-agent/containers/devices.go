package containers

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// DeviceRequest is a block device the host hot-plugged for a container.
type DeviceRequest struct {
	// ContainerPath is the spec's linux.devices entry it stands for.
	ContainerPath string
	// Serial is the virtio-blk serial the host gave the disk.
	Serial string
}

// BlockDevice is a guest disk.
type BlockDevice struct {
	Name         string // vda
	Major, Minor int64
}

// SysBlock is where the guest kernel lists its disks.
const SysBlock = "/sys/block"

// deviceWait bounds the wait for a hot-plugged disk to appear.
const deviceWait = 30 * time.Second

// FindBlockDevice returns the disk under sysBlock whose serial is serial,
// waiting for the kernel to probe it: it listens to the kernel's uevents
// first and looks after each, so a disk probed at any moment is seen.
// ctx bounds the wait.
func FindBlockDevice(ctx context.Context, sysBlock, serial string) (BlockDevice, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		return BlockDevice{}, fmt.Errorf("listening for device events: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1}); err != nil {
		unix.Close(fd)
		return BlockDevice{}, fmt.Errorf("listening for device events: %w", err)
	}
	events := os.NewFile(uintptr(fd), "uevents")
	defer events.Close()
	stop := context.AfterFunc(ctx, func() { _ = events.SetReadDeadline(time.Now()) })
	defer stop()
	buf := make([]byte, 64<<10)
	for {
		dev, ok, err := diskBySerial(sysBlock, serial)
		if err != nil {
			return BlockDevice{}, err
		}
		if ok {
			return dev, nil
		}
		if _, err := events.Read(buf); err != nil {
			if ctx.Err() != nil {
				return BlockDevice{}, fmt.Errorf("no disk with serial %q appeared in the guest: %w", serial, ctx.Err())
			}
			return BlockDevice{}, fmt.Errorf("reading device events: %w", err)
		}
	}
}

// diskBySerial looks for the disk with serial under sysBlock.
func diskBySerial(sysBlock, serial string) (BlockDevice, bool, error) {
	entries, err := os.ReadDir(sysBlock)
	if err != nil {
		return BlockDevice{}, false, fmt.Errorf("listing disks: %w", err)
	}
	for _, e := range entries {
		s, err := os.ReadFile(filepath.Join(sysBlock, e.Name(), "serial"))
		if err != nil || strings.TrimSpace(string(s)) != serial {
			continue
		}
		numbers, err := os.ReadFile(filepath.Join(sysBlock, e.Name(), "dev"))
		if err != nil {
			return BlockDevice{}, false, fmt.Errorf("reading the numbers of disk %s: %w", e.Name(), err)
		}
		maj, min, ok := strings.Cut(strings.TrimSpace(string(numbers)), ":")
		major, err1 := strconv.ParseInt(maj, 10, 64)
		minor, err2 := strconv.ParseInt(min, 10, 64)
		if !ok || err1 != nil || err2 != nil {
			return BlockDevice{}, false, fmt.Errorf("disk %s has device numbers %q", e.Name(), numbers)
		}
		return BlockDevice{Name: e.Name(), Major: major, Minor: minor}, true, nil
	}
	return BlockDevice{}, false, nil
}

// RewriteDevices points the spec's linux.devices entries at the guest
// disks (by container path) and moves the device cgroup rules that
// allowed the host's numbers to the guest's. A path with no block device
// entry in the spec is errdefs.ErrInvalidArgument.
func RewriteDevices(s *specs.Spec, disks map[string]BlockDevice) error {
	for path, disk := range disks {
		var d *specs.LinuxDevice
		if s.Linux != nil {
			for i := range s.Linux.Devices {
				if s.Linux.Devices[i].Path == path && s.Linux.Devices[i].Type == "b" {
					d = &s.Linux.Devices[i]
				}
			}
		}
		if d == nil {
			return fmt.Errorf("device %s: the spec has no block device at that path: %w", path, errdefs.ErrInvalidArgument)
		}
		hostMajor, hostMinor := d.Major, d.Minor
		d.Major, d.Minor = disk.Major, disk.Minor
		if s.Linux.Resources == nil {
			continue
		}
		for i := range s.Linux.Resources.Devices {
			r := &s.Linux.Resources.Devices[i]
			if r.Type == "b" && r.Major != nil && r.Minor != nil && *r.Major == hostMajor && *r.Minor == hostMinor {
				r.Major, r.Minor = ptr(disk.Major), ptr(disk.Minor)
			}
		}
	}
	return nil
}

func ptr[T any](v T) *T { return &v }

// findDevices resolves each requested device to its guest disk.
func (m *Manager) findDevices(ctx context.Context, reqs []DeviceRequest) (map[string]BlockDevice, error) {
	if len(reqs) == 0 {
		return nil, nil
	}
	out := make(map[string]BlockDevice, len(reqs))
	for _, r := range reqs {
		if r.ContainerPath == "" || r.Serial == "" {
			return nil, fmt.Errorf("device %+v: needs a container path and a serial: %w", r, errdefs.ErrInvalidArgument)
		}
		wctx, cancel := context.WithTimeout(ctx, deviceWait)
		disk, err := m.cfg.FindBlockDevice(wctx, r.Serial)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("device %s: %w", r.ContainerPath, err)
		}
		m.cfg.Log.Info("hot-plugged disk found", "path", r.ContainerPath, "serial", r.Serial, "disk", disk.Name, "major", disk.Major, "minor", disk.Minor)
		out[r.ContainerPath] = disk
	}
	return out, nil
}
