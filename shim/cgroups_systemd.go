package shim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"strings"
	"time"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/cgroups/v3/cgroup2"
	sddbus "github.com/coreos/go-systemd/v22/dbus"
	godbus "github.com/godbus/dbus/v5"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// systemdCgroup is a sandbox cgroup in systemd's form, "slice:prefix:name",
// which the CRI writes when the kubelet uses the systemd cgroup driver (its
// cgroup parent is a slice: kubeadm's default) and runc's SystemdCgroup
// reads: kubepods-burstable-pod<uid>.slice:cri-containerd:<sandbox-id> is
// the scope unit cri-containerd-<sandbox-id>.scope in that slice. On such a
// node systemd owns the pod's cgroups; the shim asks it for the scope (as
// runc would for pause) and the pod VM runs there, so the pod slice's
// limits, which include the RuntimeClass overhead, apply to QEMU.
type systemdCgroup struct {
	// Slice is the parent slice unit (kubepods-burstable-pod1.slice).
	Slice string
	// Unit is the scope unit (cri-containerd-<id>.scope).
	Unit string
}

// parseSystemdCgroup reads a "slice:prefix:name" cgroups path; ok is false
// for a cgroupfs path (no colon). Like runc: an empty slice is
// system.slice, the unit is prefix-name.scope (name.scope without a
// prefix), and a name that is itself a .slice names that slice unit.
func parseSystemdCgroup(p string) (sc systemdCgroup, ok bool, err error) {
	if !strings.Contains(p, ":") {
		return systemdCgroup{}, false, nil
	}
	parts := strings.Split(p, ":")
	if len(parts) != 3 {
		return systemdCgroup{}, true, fmt.Errorf("systemd cgroup %q: want slice:prefix:name", p)
	}
	slice, prefix, name := parts[0], parts[1], parts[2]
	if slice == "" {
		slice = "system.slice"
	}
	if _, err := expandSlice(slice); err != nil {
		return systemdCgroup{}, true, fmt.Errorf("systemd cgroup %q: %w", p, err)
	}
	if name == "" || strings.ContainsAny(name, "/") || strings.ContainsAny(prefix, "/") {
		return systemdCgroup{}, true, fmt.Errorf("systemd cgroup %q: the name must be non-empty and neither it nor the prefix may contain '/'", p)
	}
	switch {
	case strings.HasSuffix(name, ".slice"):
		return systemdCgroup{}, true, fmt.Errorf("systemd cgroup %q: a slice as the pod VM's unit: veil places the VM in a scope", p)
	case prefix != "":
		name = prefix + "-" + name + ".scope"
	default:
		name += ".scope"
	}
	return systemdCgroup{Slice: slice, Unit: name}, true, nil
}

// expandSlice turns a slice unit into its cgroup path: systemd nests a
// slice in the slices its dash-separated prefixes name
// (kubepods-burstable-pod1.slice is
// /kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice);
// -.slice is the root.
func expandSlice(slice string) (string, error) {
	name, ok := strings.CutSuffix(slice, ".slice")
	if !ok || strings.Contains(slice, "/") {
		return "", fmt.Errorf("slice %q: want a name ending in .slice without '/'", slice)
	}
	if name == "-" {
		return "/", nil
	}
	if name == "" || strings.HasPrefix(name, "-") || strings.HasSuffix(name, "-") || strings.Contains(name, "--") {
		return "", fmt.Errorf("slice %q: empty, or a dash at either end or twice in a row", slice)
	}
	p, prefix := "", ""
	for _, comp := range strings.Split(name, "-") {
		p = path.Join(p, prefix+comp+".slice")
		prefix += comp + "-"
	}
	return "/" + p, nil
}

// Path is the scope's cgroup below each hierarchy's root.
func (s systemdCgroup) Path() string {
	slice, _ := expandSlice(s.Slice) // checked by parseSystemdCgroup
	return path.Join(slice, s.Unit)
}

// scopeProperties are the transient scope unit's properties: in the pod's
// slice, holding pid, delegated (the shim writes its cgroup), with
// accounting on and the pod's CPU weight (CPUWeight on the unified
// hierarchy, CPUShares on v1), as runc sets for a container's scope.
func scopeProperties(sc systemdCgroup, pid int, res *specs.LinuxResources, unified bool) []sddbus.Property {
	props := []sddbus.Property{
		sddbus.PropDescription("veil pod VM " + sc.Unit),
		sddbus.PropSlice(sc.Slice),
		sddbus.PropPids(uint32(pid)),
		{Name: "Delegate", Value: godbus.MakeVariant(true)},
		{Name: "DefaultDependencies", Value: godbus.MakeVariant(false)},
		{Name: "MemoryAccounting", Value: godbus.MakeVariant(true)},
		{Name: "CPUAccounting", Value: godbus.MakeVariant(true)},
		{Name: "TasksAccounting", Value: godbus.MakeVariant(true)},
	}
	if res != nil && res.CPU != nil && res.CPU.Shares != nil {
		if unified {
			props = append(props, sddbus.Property{Name: "CPUWeight", Value: godbus.MakeVariant(cgroup2.ConvertCPUSharesToCgroupV2Value(*res.CPU.Shares))})
		} else {
			props = append(props, sddbus.Property{Name: "CPUShares", Value: godbus.MakeVariant(*res.CPU.Shares)})
		}
	}
	return props
}

// systemdConn is the part of systemd's D-Bus API the shim uses
// (go-systemd's *dbus.Conn; tests fake it).
type systemdConn interface {
	StartTransientUnitContext(ctx context.Context, name, mode string, props []sddbus.Property, ch chan<- string) (int, error)
	StopUnitContext(ctx context.Context, name, mode string, ch chan<- string) (int, error)
	Close()
}

func connectSystemd(ctx context.Context) (systemdConn, error) {
	c, err := sddbus.NewWithContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("connecting to systemd over D-Bus (the sandbox's cgroup is a systemd one: kubelet's systemd cgroup driver): %w", err)
	}
	return c, nil
}

// systemdJobTimeout bounds waiting for systemd to start or stop the scope.
const systemdJobTimeout = 30 * time.Second

// systemdPodCgroup is the pod VM's scope unit. Join of the shim creates the
// scope with the shim in it (a scope cannot exist empty); Remove moves the
// shim back to the cgroup it came from and stops the scope, which removes
// its cgroups.
type systemdPodCgroup struct {
	sc      systemdCgroup
	res     *specs.LinuxResources
	unified bool
	connect func(context.Context) (systemdConn, error)
	// homeOf finds pid's current cgroup and returns how to move the shim
	// back into it.
	homeOf func(pid int) (func() error, error)
	// addProc moves pid into the scope's cgroup once it exists.
	addProc func(path string, pid int) error

	started bool
	goHome  func() error
}

func newSystemdPodCgroup(sc systemdCgroup, res *specs.LinuxResources) *systemdPodCgroup {
	return &systemdPodCgroup{sc: sc, res: res, unified: cgroups.Mode() == cgroups.Unified,
		connect: connectSystemd, homeOf: cgroupHome, addProc: addToCgroup}
}

func (c *systemdPodCgroup) Join(pid int) error {
	if c.started {
		if err := c.addProc(c.sc.Path(), pid); err != nil {
			return fmt.Errorf("moving process %d into the pod VM's scope %s: %w", pid, c.sc.Unit, err)
		}
		return nil
	}
	if pid == os.Getpid() {
		home, err := c.homeOf(pid)
		if err != nil {
			return fmt.Errorf("finding the shim's cgroup: %w", err)
		}
		c.goHome = home
	}
	ctx, cancel := context.WithTimeout(context.Background(), systemdJobTimeout)
	defer cancel()
	conn, err := c.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	props := scopeProperties(c.sc, pid, c.res, c.unified)
	err = systemdJob(ctx, func(ch chan<- string) (int, error) {
		return conn.StartTransientUnitContext(ctx, c.sc.Unit, "replace", props, ch)
	})
	var dbe godbus.Error
	if errors.As(err, &dbe) && strings.HasSuffix(dbe.Name, ".UnitExists") {
		// Left by a shim that died: stop it and start ours.
		_ = systemdJob(ctx, func(ch chan<- string) (int, error) { return conn.StopUnitContext(ctx, c.sc.Unit, "replace", ch) })
		err = systemdJob(ctx, func(ch chan<- string) (int, error) {
			return conn.StartTransientUnitContext(ctx, c.sc.Unit, "replace", props, ch)
		})
	}
	if err != nil {
		return fmt.Errorf("creating the pod VM's scope %s in %s: %w", c.sc.Unit, c.sc.Slice, err)
	}
	c.started = true
	return nil
}

func (c *systemdPodCgroup) Remove() error {
	if c.goHome != nil {
		if err := c.goHome(); err != nil {
			return fmt.Errorf("moving the shim out of the pod VM's scope %s: %w", c.sc.Unit, err)
		}
		c.goHome = nil
	}
	if !c.started {
		return nil
	}
	if err := stopScope(c.connect, c.sc.Unit); err != nil {
		return err
	}
	c.started = false
	return nil
}

// stopScope stops a scope unit; one that is not loaded is fine.
func stopScope(connect func(context.Context) (systemdConn, error), unit string) error {
	ctx, cancel := context.WithTimeout(context.Background(), systemdJobTimeout)
	defer cancel()
	conn, err := connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	err = systemdJob(ctx, func(ch chan<- string) (int, error) { return conn.StopUnitContext(ctx, unit, "replace", ch) })
	var dbe godbus.Error
	if errors.As(err, &dbe) && strings.HasSuffix(dbe.Name, ".NoSuchUnit") {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stopping the pod VM's scope %s: %w", unit, err)
	}
	return nil
}

// systemdJob runs a unit job and waits for its result ("done").
func systemdJob(ctx context.Context, start func(chan<- string) (int, error)) error {
	ch := make(chan string, 1)
	if _, err := start(ch); err != nil {
		return err
	}
	select {
	case r := <-ch:
		if r != "done" {
			return fmt.Errorf("systemd job ended %q", r)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for systemd: %w", ctx.Err())
	}
}

// cgroupHome returns how to move the shim back into pid's current cgroup.
func cgroupHome(pid int) (func() error, error) {
	self := uint64(os.Getpid())
	if cgroups.Mode() == cgroups.Unified {
		p, err := cgroup2.PidGroupPath(pid)
		if err != nil {
			return nil, err
		}
		m, err := cgroup2.Load(p)
		if err != nil {
			return nil, err
		}
		return func() error { return m.AddProc(self) }, nil
	}
	cg, err := cgroup1.Load(cgroup1.PidPath(pid))
	if err != nil {
		return nil, err
	}
	return func() error { return cg.AddProc(self) }, nil
}

// addToCgroup moves pid into the cgroup at p (below each hierarchy's root).
func addToCgroup(p string, pid int) error {
	if cgroups.Mode() == cgroups.Unified {
		m, err := cgroup2.Load(p)
		if err != nil {
			return err
		}
		return m.AddProc(uint64(pid))
	}
	cg, err := cgroup1.Load(cgroup1.StaticPath(p))
	if err != nil {
		return err
	}
	return cg.AddProc(uint64(pid))
}
