package shim

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"testing"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/veil-runtime/veil/hypervisor"
)

func TestVMCgroupPath(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
		err            error
	}{
		{"kubelet cgroupfs", "/kubepods/burstable/pod123/sb1", "/kubepods/burstable/pod123/sb1", nil},
		{"none", "", "", nil},
		{"relative is from the root", "veil/sb1", "/veil/sb1", nil},
		{"cleaned", "/a/../b//sb1/", "/b/sb1", nil},
		{"systemd is kept for systemd", "kubepods-pod123.slice:cri-containerd:sb1", "kubepods-pod123.slice:cri-containerd:sb1", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := vmCgroupPath(&specs.Spec{Linux: &specs.Linux{CgroupsPath: tc.in}})
			if got != tc.want || !errors.Is(err, tc.err) {
				t.Errorf("vmCgroupPath(%q) = %q, %v; want %q, %v", tc.in, got, err, tc.want, tc.err)
			}
		})
	}
	if _, err := vmCgroupPath(&specs.Spec{Linux: &specs.Linux{CgroupsPath: "bad--slice.slice:cri-containerd:sb1"}}); err == nil {
		t.Error("vmCgroupPath(bad systemd slice): no error")
	}
	if _, err := vmCgroupPath(&specs.Spec{Linux: &specs.Linux{CgroupsPath: "/.."}}); err == nil {
		t.Error("vmCgroupPath(/..): no error for the root cgroup")
	}
	if got, err := vmCgroupPath(&specs.Spec{}); got != "" || err != nil {
		t.Errorf("vmCgroupPath(no linux section) = %q, %v", got, err)
	}
}

func TestVMCgroupResources(t *testing.T) {
	u := func(v uint64) *uint64 { return &v }
	for _, tc := range []struct {
		name string
		ann  map[string]string
		want *specs.LinuxResources
	}{
		{"pod weight", map[string]string{annotationCPUShares: "512", annotationMemory: "1073741824", annotationCPUQuota: "50000", annotationCPUPeriod: "100000"},
			&specs.LinuxResources{CPU: &specs.LinuxCPU{Shares: u(512)}}},
		{"no annotations", nil, &specs.LinuxResources{}},
		{"malformed", map[string]string{annotationCPUShares: "lots"}, &specs.LinuxResources{}},
		{"below the kernel's minimum", map[string]string{annotationCPUShares: "0"}, &specs.LinuxResources{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := vmCgroupResources(tc.ann); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("vmCgroupResources(%v) = %+v, want %+v", tc.ann, got, tc.want)
			}
		})
	}
}

// fakeCgroup records what the shim did with the pod VM's cgroup.
type fakeCgroup struct {
	mu      sync.Mutex
	path    string
	res     *specs.LinuxResources
	joined  []int
	removed int
}

func (c *fakeCgroup) Join(pid int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.joined = append(c.joined, pid)
	return nil
}

func (c *fakeCgroup) Remove() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.removed++
	return nil
}

// withCgroupsPath rewrites a bundle's spec to name a cgroup.
func withCgroupsPath(t *testing.T, dir, path string) string {
	t.Helper()
	spec, err := readSpec(dir)
	if err != nil {
		t.Fatal(err)
	}
	spec.Linux.CgroupsPath = path
	b, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestPodVMRunsInTheSandboxCgroupUntilTeardown(t *testing.T) {
	h := newHarness(t)
	var cg *fakeCgroup
	h.s.newCgroup = func(path string, res *specs.LinuxResources) (podCgroup, error) {
		cg = &fakeCgroup{path: path, res: res}
		return cg, nil
	}
	ctx := context.Background()
	ann := map[string]string{annotationContainerType: containerTypeSandbox, annotationCPUShares: "256"}
	must(h.s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "sb", Bundle: withCgroupsPath(t, bundle(t, ann), "/kubepods/pod1/sb")}))
	if cg == nil || cg.path != "/kubepods/pod1/sb" {
		t.Fatalf("pod VM cgroup: %+v, want one at /kubepods/pod1/sb", cg)
	}
	if cg.res.CPU == nil || *cg.res.CPU.Shares != 256 {
		t.Errorf("pod VM cgroup resources %+v, want the pod's 256 CPU shares", cg.res)
	}
	// The shim joins before QEMU starts, so QEMU is forked inside.
	if !reflect.DeepEqual(cg.joined, []int{os.Getpid()}) {
		t.Errorf("joined %v, want the shim (%d) before the VM starts", cg.joined, os.Getpid())
	}
	if cg.removed != 0 {
		t.Fatal("cgroup removed while the pod runs")
	}
	must(h.s.Kill(ctx, &taskAPI.KillRequest{ID: "sb", Signal: 9}))
	must(h.s.Delete(ctx, &taskAPI.DeleteRequest{ID: "sb"}))
	if cg.removed != 1 {
		t.Errorf("after the pod's last delete the cgroup was removed %d times, want 1", cg.removed)
	}
}

func TestFailedPodStartRemovesTheCgroup(t *testing.T) {
	h := newHarness(t)
	var cg *fakeCgroup
	h.s.newCgroup = func(path string, res *specs.LinuxResources) (podCgroup, error) {
		cg = &fakeCgroup{path: path, res: res}
		return cg, nil
	}
	h.s.drivers = fakeDrivers(func(hypervisor.Config, *slog.Logger) (hypervisor.Hypervisor, error) {
		return nil, errors.New("no qemu here")
	})
	ann := map[string]string{annotationContainerType: containerTypeSandbox}
	_, err := h.s.Create(context.Background(), &taskAPI.CreateTaskRequest{ID: "sb", Bundle: withCgroupsPath(t, bundle(t, ann), "/kubepods/pod1/sb")})
	if err == nil {
		t.Fatal("Create succeeded without a VM")
	}
	if cg == nil || cg.removed != 1 {
		t.Errorf("after a failed pod start: cgroup %+v, want it created and removed once", cg)
	}
}
