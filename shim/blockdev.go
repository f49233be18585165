package shim

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/veil-runtime/veil/guest-agent/api"
	"github.com/veil-runtime/veil/hypervisor"
	"github.com/veil-runtime/veil/shim/config"
)

// blockSlots is how many block devices a veil pod VM can have attached at
// once: each is a PCIe root port reserved at launch. Confidential pods
// get none (block devices are refused there).
const blockSlots = 4

// podBlockSlots is the VM's block hotplug slots for cfg's pods.
func podBlockSlots(cfg config.Config) uint32 {
	if cfg.IsConfidential() {
		return 0
	}
	return blockSlots
}

// Where the host lists block devices by number, and their nodes.
const (
	sysDevBlock = "/sys/dev/block"
	devDir      = "/dev"
)

// blockDev is a block device a container's spec asks for, as the CRI
// writes a raw block volume (or a device of the container config): a
// linux.devices entry of type "b" with the host's numbers, allowed by a
// device cgroup rule.
type blockDev struct {
	ContainerPath string
	Major, Minor  int64
	// ReadOnly when no allowing device rule for it grants "w".
	ReadOnly bool
}

// specBlockDevices lists the spec's block devices in spec order.
func specBlockDevices(spec *specs.Spec) []blockDev {
	if spec.Linux == nil {
		return nil
	}
	var out []blockDev
	for _, d := range spec.Linux.Devices {
		if d.Type != "b" {
			continue
		}
		writable := false
		if spec.Linux.Resources != nil {
			for _, r := range spec.Linux.Resources.Devices {
				if r.Allow && (r.Type == "b" || r.Type == "a" || r.Type == "") &&
					(r.Major == nil || *r.Major == d.Major) && (r.Minor == nil || *r.Minor == d.Minor) {
					writable = strings.Contains(r.Access, "w")
				}
			}
		}
		out = append(out, blockDev{ContainerPath: d.Path, Major: d.Major, Minor: d.Minor, ReadOnly: !writable})
	}
	return out
}

// hostBlockPath finds the host node of block device major:minor: the
// kernel's name for it (DEVNAME in sysDevBlock/M:m/uevent) under dev,
// checked to be that very device.
func hostBlockPath(sysDevBlock, dev string, major, minor int64) (string, error) {
	num := fmt.Sprintf("%d:%d", major, minor)
	uevent, err := os.ReadFile(filepath.Join(sysDevBlock, num, "uevent"))
	if err != nil {
		return "", fmt.Errorf("block device %s is not on this host: %w", num, errdefs.ErrNotFound)
	}
	var name string
	for _, line := range strings.Split(string(uevent), "\n") {
		if v, ok := strings.CutPrefix(line, "DEVNAME="); ok {
			name = v
		}
	}
	if name == "" || strings.Contains(name, "..") {
		return "", fmt.Errorf("block device %s: the kernel names no node for it", num)
	}
	p := filepath.Join(dev, name)
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		return "", fmt.Errorf("block device %s: %w", num, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK || int64(unix.Major(st.Rdev)) != major || int64(unix.Minor(st.Rdev)) != minor {
		return "", fmt.Errorf("block device %s: %s is not that device", num, p)
	}
	return p, nil
}

// attachBlockDevices hot-plugs the spec's block devices into the pod VM
// and returns what the agent needs to find them. The ids attached are
// recorded in c.blockIDs even on error, for detachBlockDevices.
func (s *service) attachBlockDevices(ctx context.Context, p *pod, c *container, spec *specs.Spec) ([]*api.Device, error) {
	devs := specBlockDevices(spec)
	if len(devs) == 0 {
		return nil, nil
	}
	if p.cfg.IsConfidential() {
		return nil, fmt.Errorf("container %s asks for block device %s: a confidential pod takes no device from the host: %w", c.id, devs[0].ContainerPath, errdefs.ErrInvalidArgument)
	}
	var out []*api.Device
	for _, d := range devs {
		hostPath, err := s.hostBlockPath(d.Major, d.Minor)
		if err != nil {
			return nil, fmt.Errorf("container %s device %s: %w", c.id, d.ContainerPath, err)
		}
		id := "vb" + strconv.FormatUint(uint64(p.blockSeq.Add(1)), 10)
		cctx, cancel := p.callCtx(ctx)
		err = p.hv.AttachBlock(cctx, hypervisor.BlockDevice{ID: id, Path: hostPath, ReadOnly: d.ReadOnly})
		cancel()
		if err != nil {
			return nil, fmt.Errorf("container %s device %s: %w", c.id, d.ContainerPath, err)
		}
		c.blockIDs = append(c.blockIDs, id)
		log.G(ctx).WithFields(log.Fields{"device": d.ContainerPath, "host": hostPath, "serial": id, "read_only": d.ReadOnly}).Info("block device attached to the pod VM")
		out = append(out, &api.Device{ContainerPath: d.ContainerPath, Serial: id})
	}
	return out, nil
}

// detachBlockDevices unplugs the container's disks, newest first, once it
// is gone from the guest.
func (s *service) detachBlockDevices(ctx context.Context, p *pod, c *container) {
	if p == nil {
		c.blockIDs = nil
		return
	}
	for _, id := range slices.Backward(c.blockIDs) {
		cctx, cancel := p.callCtx(context.WithoutCancel(ctx))
		if err := p.hv.DetachBlock(cctx, id); err != nil {
			log.G(ctx).WithError(err).Warn("detaching block device from the pod VM")
		}
		cancel()
	}
	c.blockIDs = nil
}
