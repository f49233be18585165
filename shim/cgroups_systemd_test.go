package shim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	godbus "github.com/godbus/dbus/v5"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// TestParseSystemdCgroup: the sandbox cgroups paths the CRI writes under
// kubelet's systemd cgroup driver, and what they are on the host.
func TestParseSystemdCgroup(t *testing.T) {
	for _, tc := range []struct {
		in         string
		slice      string
		unit, path string
		err        string
	}{
		{in: "kubepods-burstable-pod0f4e6c1a_2b3d.slice:cri-containerd:5f1c",
			slice: "kubepods-burstable-pod0f4e6c1a_2b3d.slice", unit: "cri-containerd-5f1c.scope",
			path: "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0f4e6c1a_2b3d.slice/cri-containerd-5f1c.scope"},
		{in: "kubepods-besteffort-pod1.slice:cri-containerd:sb", slice: "kubepods-besteffort-pod1.slice", unit: "cri-containerd-sb.scope",
			path: "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/cri-containerd-sb.scope"},
		{in: "kubepods-pod1.slice:cri-containerd:sb", slice: "kubepods-pod1.slice", unit: "cri-containerd-sb.scope",
			path: "/kubepods.slice/kubepods-pod1.slice/cri-containerd-sb.scope"},
		{in: ":veil:sb", slice: "system.slice", unit: "veil-sb.scope", path: "/system.slice/veil-sb.scope"},
		{in: "-.slice::sb", slice: "-.slice", unit: "sb.scope", path: "/sb.scope"},
		{in: "kubepods.slice:cri-containerd", err: "want slice:prefix:name"},
		{in: "kubepods:cri-containerd:sb", err: "ending in .slice"},
		{in: "a--b.slice:cri-containerd:sb", err: "twice in a row"},
		{in: "-a.slice:cri-containerd:sb", err: "either end"},
		{in: "kubepods/x.slice:cri-containerd:sb", err: "without '/'"},
		{in: "kubepods.slice:cri-containerd:", err: "non-empty"},
		{in: "kubepods.slice:cri-containerd:../sb", err: "'/'"},
		{in: "kubepods.slice:cri-containerd:x.slice", err: "a slice as the pod VM's unit"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			sc, ok, err := parseSystemdCgroup(tc.in)
			if !ok {
				t.Fatal("not recognised as a systemd path")
			}
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one with %q", err, tc.err)
				}
				return
			}
			if err != nil || sc.Slice != tc.slice || sc.Unit != tc.unit || sc.Path() != tc.path {
				t.Fatalf("= %+v (%s), %v; want slice %s unit %s path %s", sc, sc.Path(), err, tc.slice, tc.unit, tc.path)
			}
		})
	}
	if _, ok, _ := parseSystemdCgroup("/kubepods/burstable/pod1/sb"); ok {
		t.Error("a cgroupfs path taken for a systemd one")
	}
}

func props(ps []sddbus.Property) map[string]any {
	m := map[string]any{}
	for _, p := range ps {
		m[p.Name] = p.Value.Value()
	}
	return m
}

func TestScopeProperties(t *testing.T) {
	sc := systemdCgroup{Slice: "kubepods-pod1.slice", Unit: "cri-containerd-sb.scope"}
	shares := uint64(1024)
	res := &specs.LinuxResources{CPU: &specs.LinuxCPU{Shares: &shares}}
	v2 := props(scopeProperties(sc, 4242, res, true))
	if v2["Slice"] != "kubepods-pod1.slice" || fmt.Sprint(v2["PIDs"]) != "[4242]" || v2["Delegate"] != true || v2["CPUWeight"] != uint64(100) {
		t.Errorf("v2 scope properties %v: want the pod slice, the shim's pid, delegated, CPUWeight 100 for 1024 shares (the default weight, as runc converts)", v2)
	}
	if _, ok := v2["CPUShares"]; ok {
		t.Error("CPUShares on the unified hierarchy")
	}
	v1 := props(scopeProperties(sc, 4242, res, false))
	if v1["CPUShares"] != uint64(1024) || v1["CPUWeight"] != nil {
		t.Errorf("v1 scope properties %v: want CPUShares 1024", v1)
	}
	if none := props(scopeProperties(sc, 1, &specs.LinuxResources{}, true)); none["CPUWeight"] != nil {
		t.Errorf("weight without the pod's shares: %v", none)
	}
}

// fakeSystemd is systemd's D-Bus API: it records the unit jobs.
type fakeSystemd struct {
	log      *[]string
	startErr error
	result   string
}

func (f *fakeSystemd) StartTransientUnitContext(_ context.Context, name, mode string, ps []sddbus.Property, ch chan<- string) (int, error) {
	m := props(ps)
	*f.log = append(*f.log, fmt.Sprintf("start %s %s slice=%v pids=%v", name, mode, m["Slice"], m["PIDs"]))
	if err := f.startErr; err != nil {
		f.startErr = nil
		return 0, err
	}
	ch <- f.result
	return 1, nil
}

func (f *fakeSystemd) StopUnitContext(_ context.Context, name, mode string, ch chan<- string) (int, error) {
	*f.log = append(*f.log, "stop "+name)
	ch <- "done"
	return 1, nil
}

func (f *fakeSystemd) Close() { *f.log = append(*f.log, "close") }

func fakeSystemdCgroup(log *[]string, sd *fakeSystemd) *systemdPodCgroup {
	sc, _, _ := parseSystemdCgroup("kubepods-burstable-pod1.slice:cri-containerd:sb")
	c := newSystemdPodCgroup(sc, &specs.LinuxResources{})
	c.connect = func(context.Context) (systemdConn, error) { return sd, nil }
	c.homeOf = func(pid int) (func() error, error) {
		*log = append(*log, fmt.Sprintf("home of %d", pid))
		return func() error { *log = append(*log, "shim home"); return nil }, nil
	}
	c.addProc = func(p string, pid int) error { *log = append(*log, fmt.Sprintf("add %d to %s", pid, p)); return nil }
	return c
}

// TestSystemdScopeLifecycle: the shim's Join creates the scope in the pod's
// slice with the shim in it; Remove takes the shim home first (stopping a
// scope kills what is in it), then stops the scope. A leftover scope of a
// dead shim is stopped and created again.
func TestSystemdScopeLifecycle(t *testing.T) {
	var log []string
	sd := &fakeSystemd{log: &log, result: "done"}
	c := fakeSystemdCgroup(&log, sd)
	self := os.Getpid()
	if err := c.Join(self); err != nil {
		t.Fatal(err)
	}
	if err := c.Join(77); err != nil {
		t.Fatal(err)
	}
	if err := c.Remove(); err != nil {
		t.Fatal(err)
	}
	if err := c.Remove(); err != nil {
		t.Fatal(err)
	}
	want := []string{
		fmt.Sprintf("home of %d", self),
		fmt.Sprintf("start cri-containerd-sb.scope replace slice=kubepods-burstable-pod1.slice pids=[%d]", self),
		"close",
		"add 77 to /kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-sb.scope",
		"shim home",
		"stop cri-containerd-sb.scope",
		"close",
	}
	if strings.Join(log, "\n") != strings.Join(want, "\n") {
		t.Errorf("systemd calls:\n%s\nwant:\n%s", strings.Join(log, "\n"), strings.Join(want, "\n"))
	}

	log = nil
	sd2 := &fakeSystemd{log: &log, result: "done", startErr: godbus.Error{Name: "org.freedesktop.systemd1.UnitExists"}}
	c2 := fakeSystemdCgroup(&log, sd2)
	if err := c2.Join(self); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(log, "|"); !strings.Contains(got, "stop cri-containerd-sb.scope|start cri-containerd-sb.scope") {
		t.Errorf("leftover scope not replaced: %s", got)
	}

	log = nil
	c3 := fakeSystemdCgroup(&log, &fakeSystemd{log: &log, result: "failed"})
	if err := c3.Join(self); err == nil || !strings.Contains(err.Error(), `creating the pod VM's scope cri-containerd-sb.scope in kubepods-burstable-pod1.slice: systemd job ended "failed"`) {
		t.Errorf("failed start job: %v", err)
	}
	c4 := fakeSystemdCgroup(&log, sd)
	c4.connect = func(context.Context) (systemdConn, error) { return nil, errors.New("no systemd") }
	if err := c4.Join(self); err == nil {
		t.Error("Join without systemd succeeded")
	}
}

// On a node without systemd the shim's cgroup driver choice still comes
// from the path: a systemd path gets the systemd placement.
func TestNewHostCgroupChoosesSystemd(t *testing.T) {
	cg, err := newHostCgroup("kubepods-pod1.slice:cri-containerd:sb", &specs.LinuxResources{})
	if err != nil {
		t.Fatal(err)
	}
	if s, ok := cg.(*systemdPodCgroup); !ok || s.sc.Unit != "cri-containerd-sb.scope" {
		t.Fatalf("newHostCgroup(systemd path) = %T %+v", cg, cg)
	}
	if _, err := newHostCgroup("kubepods.slice:x", nil); err == nil {
		t.Error("malformed systemd path accepted")
	}
}
