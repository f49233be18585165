package shim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"strconv"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/cgroups/v3/cgroup2"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// annotationCPUShares is the pod's CPU weight (the sum of its containers'
// requests) the CRI puts on the sandbox spec.
const annotationCPUShares = "io.kubernetes.cri.sandbox-cpu-shares"

// cgroupRoot is where the host's cgroup filesystems are mounted.
const cgroupRoot = "/sys/fs/cgroup"

// vmCgroupPath is the host cgroup the pod VM (QEMU and its threads) and the
// shim run in: the sandbox's own linux.cgroupsPath, where runc would have
// put the pause process, below the pod's cgroup parent (kubelet's
// .../pod<uid>, sized with the pod's limits plus the RuntimeClass overhead).
// This is Kata's sandbox_cgroup_only: one cgroup holds everything the pod
// costs on the host. "" when the spec names none (the CRI got no cgroup
// parent, or ctr run without --cgroup): the VM then stays in the shim's
// cgroup. A relative path is taken from the hierarchy's root. A systemd
// path ("slice:prefix:name": the kubelet's systemd cgroup driver) is
// returned as it is, checked: the VM then runs in that scope unit, which
// the shim asks systemd for (cgroups_systemd.go).
func vmCgroupPath(spec *specs.Spec) (string, error) {
	if spec.Linux == nil || spec.Linux.CgroupsPath == "" {
		return "", nil
	}
	p := spec.Linux.CgroupsPath
	if _, ok, err := parseSystemdCgroup(p); ok {
		return p, err
	}
	p = path.Clean("/" + p)
	if p == "/" {
		return "", fmt.Errorf("sandbox cgroup %q is the root cgroup", spec.Linux.CgroupsPath)
	}
	return p, nil
}

// vmCgroupResources are the limits the shim writes on the VM's cgroup: the
// pod's CPU weight from the sandbox annotation (runc would give the pause
// process a weight of 2, which would starve a VM under contention). It sets
// no CPU quota and no memory limit: the pod's cgroup above it carries the
// pod's limits plus the RuntimeClass overhead, which containerd does not
// pass to the shim, so that is the only place the VM's own cost (QEMU,
// guest kernel, TCG cache) is accounted for; a limit here without the
// overhead would OOM-kill the VM for what the overhead pays for.
func vmCgroupResources(annotations map[string]string) *specs.LinuxResources {
	res := &specs.LinuxResources{}
	if shares, err := strconv.ParseUint(annotations[annotationCPUShares], 10, 64); err == nil && shares >= 2 {
		res.CPU = &specs.LinuxCPU{Shares: &shares}
	}
	return res
}

// podCgroup is the host cgroup of one pod VM.
type podCgroup interface {
	// Join moves process pid (with all its threads) into the cgroup.
	Join(pid int) error
	// Remove moves the shim back to the cgroup it came from and removes the
	// cgroup, which must hold no other process. Safe to call more than once.
	Remove() error
}

// newPodCgroup creates the cgroup at path (vmCgroupPath: a cgroupfs path
// or a systemd slice:prefix:name) with res (newHostCgroup in production;
// tests record).
type newPodCgroup func(path string, res *specs.LinuxResources) (podCgroup, error)

// hostCgroup is a cgroup on the host's cgroup v1 hierarchies (legacy or
// hybrid hosts: the controllers are on v1) or the v2 unified hierarchy.
type hostCgroup struct {
	path string
	v1   cgroup1.Cgroup
	v2   *cgroup2.Manager
	// home is the shim's own cgroup from before Join(self), to go back to.
	homeV1 cgroup1.Cgroup
	homeV2 *cgroup2.Manager
}

func newHostCgroup(p string, res *specs.LinuxResources) (podCgroup, error) {
	if sc, ok, err := parseSystemdCgroup(p); ok {
		if err != nil {
			return nil, err
		}
		return newSystemdPodCgroup(sc, res), nil
	}
	cg := &hostCgroup{path: p}
	var err error
	switch cgroups.Mode() {
	case cgroups.Unified:
		cg.v2, err = cgroup2.NewManager(cgroupRoot, p, cgroup2.ToResources(res))
	case cgroups.Legacy, cgroups.Hybrid:
		cg.v1, err = cgroup1.New(cgroup1.StaticPath(p), res)
	default:
		err = errors.New("no cgroup filesystem is mounted at " + cgroupRoot)
	}
	if err != nil {
		return nil, fmt.Errorf("creating the pod VM's cgroup %s: %w", p, err)
	}
	return cg, nil
}

func (c *hostCgroup) Join(pid int) error {
	self := pid == os.Getpid()
	var err error
	if c.v2 != nil {
		if self && c.homeV2 == nil {
			home, herr := cgroup2.PidGroupPath(pid)
			if herr == nil {
				c.homeV2, herr = cgroup2.Load(home)
			}
			if herr != nil {
				return fmt.Errorf("finding the shim's cgroup: %w", herr)
			}
		}
		err = c.v2.AddProc(uint64(pid))
	} else {
		if self && c.homeV1 == nil {
			home, herr := cgroup1.Load(cgroup1.PidPath(pid))
			if herr != nil {
				return fmt.Errorf("finding the shim's cgroup: %w", herr)
			}
			c.homeV1 = home
		}
		err = c.v1.AddProc(uint64(pid))
	}
	if err != nil {
		return fmt.Errorf("moving process %d into the pod VM's cgroup %s: %w", pid, c.path, err)
	}
	return nil
}

func (c *hostCgroup) Remove() error {
	var errs []error
	self := uint64(os.Getpid())
	if c.homeV2 != nil {
		errs = append(errs, c.homeV2.AddProc(self))
		c.homeV2 = nil
	}
	if c.homeV1 != nil {
		errs = append(errs, c.homeV1.AddProc(self))
		c.homeV1 = nil
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("moving the shim out of the pod VM's cgroup %s: %w", c.path, err)
	}
	var err error
	if c.v2 != nil {
		err = c.v2.Delete()
	} else if c.v1 != nil {
		err = c.v1.Delete()
		if errors.Is(err, cgroup1.ErrCgroupDeleted) {
			err = nil
		}
	}
	if err != nil {
		return fmt.Errorf("removing the pod VM's cgroup %s: %w", c.path, err)
	}
	return nil
}

// enterVMCgroup creates the pod VM's cgroup (vmCgroupPath) and moves the
// shim into it, so that QEMU, forked next, starts inside with every thread
// it will have. nil when the sandbox names no cgroup (or a malformed one,
// logged).
func (s *service) enterVMCgroup(ctx context.Context, spec *specs.Spec) (podCgroup, error) {
	p, err := vmCgroupPath(spec)
	if err != nil {
		log.G(ctx).WithError(err).Warn("not placing the pod VM in the sandbox's cgroup")
		return nil, nil
	}
	if p == "" {
		log.G(ctx).Debug("the sandbox names no cgroup: the pod VM stays in the shim's")
		return nil, nil
	}
	cg, err := s.newCgroup(p, vmCgroupResources(spec.Annotations))
	if err != nil {
		return nil, err
	}
	if err := cg.Join(os.Getpid()); err != nil {
		if rerr := cg.Remove(); rerr != nil {
			log.G(ctx).WithError(rerr).Warn("removing the pod VM's cgroup")
		}
		return nil, err
	}
	log.G(ctx).WithField("cgroup", p).Info("pod VM and shim run in the sandbox's cgroup")
	return cg, nil
}

// removeLeftoverCgroup removes the VM cgroup of a pod whose shim died (its
// VM is gone: QEMU dies with the shim). A cgroup that is not there is fine.
func removeLeftoverCgroup(spec *specs.Spec) error {
	p, err := vmCgroupPath(spec)
	if err != nil || p == "" {
		return nil
	}
	if sc, ok, _ := parseSystemdCgroup(p); ok {
		return stopScope(connectSystemd, sc.Unit)
	}
	switch cgroups.Mode() {
	case cgroups.Unified:
		if _, err := os.Stat(path.Join(cgroupRoot, p)); err != nil {
			return nil
		}
		m, err := cgroup2.Load(p)
		if err != nil {
			return nil
		}
		err = m.Delete()
		if err != nil {
			return fmt.Errorf("removing the pod VM's cgroup %s: %w", p, err)
		}
	case cgroups.Legacy, cgroups.Hybrid:
		cg, err := cgroup1.Load(cgroup1.StaticPath(p))
		if err != nil {
			return nil // ErrCgroupDeleted: not there
		}
		if err := cg.Delete(); err != nil && !errors.Is(err, cgroup1.ErrCgroupDeleted) {
			return fmt.Errorf("removing the pod VM's cgroup %s: %w", p, err)
		}
	}
	return nil
}
