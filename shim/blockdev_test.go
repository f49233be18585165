package shim

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/veil-runtime/veil/hypervisor"
	"github.com/veil-runtime/veil/shim/config"
)

func (h *fakeHV) AttachBlock(_ context.Context, d hypervisor.BlockDevice) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.blockLog = append(h.blockLog, fmt.Sprintf("attach %s %s ro=%v", d.ID, d.Path, d.ReadOnly))
	return nil
}

func (h *fakeHV) DetachBlock(_ context.Context, id string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.blockLog = append(h.blockLog, "detach "+id)
	return nil
}

func i64(v int64) *int64 { return &v }

func TestSpecBlockDevices(t *testing.T) {
	deny := specs.LinuxDeviceCgroup{Allow: false, Access: "rwm"}
	for _, tc := range []struct {
		name  string
		linux *specs.Linux
		want  []blockDev
	}{
		{"none", nil, nil},
		{"a raw block volume, as the CRI writes it", &specs.Linux{
			Devices:   []specs.LinuxDevice{{Path: "/dev/xvda", Type: "b", Major: 7, Minor: 3}, {Path: "/dev/fuse", Type: "c", Major: 10, Minor: 229}},
			Resources: &specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{deny, {Allow: true, Type: "b", Major: i64(7), Minor: i64(3), Access: "rwm"}}},
		}, []blockDev{{ContainerPath: "/dev/xvda", Major: 7, Minor: 3}}},
		{"read-only permissions", &specs.Linux{
			Devices:   []specs.LinuxDevice{{Path: "/dev/xvdb", Type: "b", Major: 8, Minor: 16}},
			Resources: &specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{deny, {Allow: true, Type: "b", Major: i64(8), Minor: i64(16), Access: "r"}}},
		}, []blockDev{{ContainerPath: "/dev/xvdb", Major: 8, Minor: 16, ReadOnly: true}}},
		{"no allowing rule", &specs.Linux{
			Devices:   []specs.LinuxDevice{{Path: "/dev/xvdc", Type: "b", Major: 8, Minor: 32}},
			Resources: &specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{deny}},
		}, []blockDev{{ContainerPath: "/dev/xvdc", Major: 8, Minor: 32, ReadOnly: true}}},
		{"privileged: allow all", &specs.Linux{
			Devices:   []specs.LinuxDevice{{Path: "/dev/sda", Type: "b", Major: 8, Minor: 0}},
			Resources: &specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{{Allow: true, Access: "rwm"}}},
		}, []blockDev{{ContainerPath: "/dev/sda", Major: 8, Minor: 0}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := specBlockDevices(&specs.Spec{Linux: tc.linux}); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestHostBlockPath(t *testing.T) {
	// A real block device of this host, found through the real sysfs.
	entries, err := os.ReadDir(sysDevBlock)
	if err != nil || len(entries) == 0 {
		t.Fatalf("no block devices under %s: %v", sysDevBlock, err)
	}
	var major, minor int64
	if _, err := fmt.Sscanf(entries[0].Name(), "%d:%d", &major, &minor); err != nil {
		t.Fatal(err)
	}
	got, err := hostBlockPath(sysDevBlock, devDir, major, minor)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(got, "/dev/") {
		t.Errorf("hostBlockPath(%d:%d) = %s, want a node under /dev", major, minor, got)
	}

	// sysfs naming a node that is another device.
	fake := t.TempDir()
	if err := os.MkdirAll(filepath.Join(fake, "7:99"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(fake, "7:99", "uevent"), []byte("MAJOR=7\nMINOR=99\nDEVNAME=null\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := hostBlockPath(fake, "/dev", 7, 99); err == nil || !strings.Contains(err.Error(), "not that device") {
		t.Errorf("a node of another device: err = %v", err)
	}
	if _, err := hostBlockPath(fake, "/dev", 7, 100); err == nil || !strings.Contains(err.Error(), "not on this host") {
		t.Errorf("an unknown device: err = %v", err)
	}
}

// blockBundle writes a container bundle whose spec has a block device.
func blockBundle(t *testing.T) string {
	t.Helper()
	dir := bundle(t, containerAnn)
	spec, err := readSpec(dir)
	if err != nil {
		t.Fatal(err)
	}
	spec.Linux.Devices = []specs.LinuxDevice{{Path: "/dev/xvda", Type: "b", Major: 7, Minor: 3}}
	spec.Linux.Resources = &specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{{Allow: true, Type: "b", Major: i64(7), Minor: i64(3), Access: "rwm"}}}
	b, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestBlockDeviceAttachedForContainerAndDetachedOnDelete(t *testing.T) {
	h := newHarness(t)
	h.s.hostBlockPath = func(major, minor int64) (string, error) { return fmt.Sprintf("/dev/fake%d-%d", major, minor), nil }
	ctx := context.Background()
	rootfs := []*types.Mount{{Type: "overlay", Source: "overlay", Options: []string{"lowerdir=/l"}}}
	must(h.s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "sb", Bundle: bundle(t, sandboxAnn)}))
	if h.hv.cfg.BlockSlots != blockSlots {
		t.Errorf("VM has %d block slots, want %d", h.hv.cfg.BlockSlots, blockSlots)
	}
	must(h.s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "c1", Bundle: blockBundle(t), Rootfs: rootfs}))
	if want := []string{"attach vb1 /dev/fake7-3 ro=false"}; !slices.Equal(h.hv.blockLog, want) {
		t.Errorf("after create: %q, want %q", h.hv.blockLog, want)
	}
	h.agent.mu.Lock()
	devs := h.agent.creates[0].GetDevices()
	h.agent.mu.Unlock()
	if len(devs) != 1 || devs[0].GetContainerPath() != "/dev/xvda" || devs[0].GetSerial() != "vb1" {
		t.Errorf("agent got devices %v, want /dev/xvda with serial vb1", devs)
	}
	must(h.s.Delete(ctx, &taskAPI.DeleteRequest{ID: "c1"}))
	if want := []string{"attach vb1 /dev/fake7-3 ro=false", "detach vb1"}; !slices.Equal(h.hv.blockLog, want) {
		t.Errorf("after delete: %q, want %q", h.hv.blockLog, want)
	}

	// A container the agent refuses: its disk is detached again.
	h.hv.blockLog = nil
	if _, err := h.s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "rejected", Bundle: blockBundle(t), Rootfs: rootfs}); err == nil {
		t.Fatal("the fake agent accepted container \"rejected\"")
	}
	if want := []string{"attach vb2 /dev/fake7-3 ro=false", "detach vb2"}; !slices.Equal(h.hv.blockLog, want) {
		t.Errorf("after a failed create: %q, want %q", h.hv.blockLog, want)
	}
}

func TestConfidentialPodRefusesBlockDevices(t *testing.T) {
	if got := podBlockSlots(config.Config{Confidential: config.Confidential{TEE: "snp"}}); got != 0 {
		t.Errorf("confidential VM gets %d block slots, want 0", got)
	}
	p := &pod{cfg: config.Config{Confidential: config.Confidential{TEE: "sample"}}}
	s := &service{}
	_, err := s.attachBlockDevices(context.Background(), p, &container{id: "c1"}, func() *specs.Spec {
		spec, _ := readSpec(blockBundle(t))
		return spec
	}())
	if err == nil || !strings.Contains(err.Error(), "confidential pod takes no device") {
		t.Errorf("block device in a confidential pod: err = %v", err)
	}
}
