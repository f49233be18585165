package shim

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/veil-runtime/veil/shim/config"
)

func TestVMSize(t *testing.T) {
	base := config.Default().Hypervisor // 1 vCPU, 256 MiB + limit, 2048 MiB without one
	big := base
	big.MemoryMiB = 4096
	capped := base
	capped.MaxVCPUs, capped.MaxMemoryMiB = 2, 512
	for _, tc := range []struct {
		name     string
		h        config.Hypervisor
		pin      bool
		ann      map[string]string
		hostCPUs int
		vcpus    uint32
		mem      uint32
	}{
		{"no limits: the default size", base, false, nil, 8, 1, 2048},
		{"half a cpu rounds up", base, false, map[string]string{annotationCPUQuota: "50000", annotationCPUPeriod: "100000"}, 8, 2, 2048},
		{"two cpus", base, false, map[string]string{annotationCPUQuota: "200000", annotationCPUPeriod: "100000"}, 8, 3, 2048},
		{"a memory limit: base plus limit, not the default", base, false, map[string]string{annotationMemory: "67108864"}, 8, 1, 256 + 64},
		{"zero memory limit is none", base, false, map[string]string{annotationMemory: "0"}, 8, 1, 2048},
		{"no limit: at least memory_mib", big, false, nil, 8, 1, 4096},
		{"no limit: default capped", capped, false, nil, 8, 1, 512},
		{"memory rounds up to MiB", base, false, map[string]string{annotationMemory: "134217729"}, 8, 1, 256 + 129},
		{"quota without period ignored", base, false, map[string]string{annotationCPUQuota: "200000"}, 8, 1, 2048},
		{"unlimited quota (-1) ignored", base, false, map[string]string{annotationCPUQuota: "-1", annotationCPUPeriod: "100000"}, 8, 1, 2048},
		{"garbage ignored", base, false, map[string]string{annotationMemory: "lots", annotationCPUQuota: "x", annotationCPUPeriod: "y"}, 8, 1, 2048},
		{"host cpus cap", base, false, map[string]string{annotationCPUQuota: "800000", annotationCPUPeriod: "100000"}, 2, 2, 2048},
		{"config caps", capped, false, map[string]string{annotationCPUQuota: "800000", annotationCPUPeriod: "100000", annotationMemory: "1073741824"}, 8, 2, 512},
		// SNP/TDX: the measurement covers the vCPU count, so it never moves.
		{"pinned: cpu limit adds no vCPU", base, true, map[string]string{annotationCPUQuota: "200000", annotationCPUPeriod: "100000", annotationMemory: "134217728"}, 8, 1, 256 + 128},
		{"pinned: host cpus do not cap", func() config.Hypervisor { h := base; h.VCPUs = 4; return h }(), true, nil, 2, 4, 2048},
		{"pinned: memory still capped", capped, true, map[string]string{annotationMemory: "1073741824"}, 8, 1, 512},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, m := vmSize(tc.h, tc.pin, tc.ann, tc.hostCPUs)
			if v != tc.vcpus || m != tc.mem {
				t.Errorf("vmSize = %d vCPUs, %d MiB; want %d, %d", v, m, tc.vcpus, tc.mem)
			}
		})
	}
}

func TestCheckResize(t *testing.T) {
	i64 := func(v int64) *int64 { return &v }
	u64 := func(v uint64) *uint64 { return &v }
	mem := func(b int64) *specs.LinuxResources {
		return &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(b)}}
	}
	cpu := func(quota int64, period uint64) *specs.LinuxResources {
		return &specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: i64(quota), Period: u64(period)}}
	}
	for _, tc := range []struct {
		name    string
		sandbox bool
		res     *specs.LinuxResources
		is      error    // nil: accepted
		want    []string // in the refusal
	}{
		{"sandbox asks nothing", true, &specs.LinuxResources{}, nil, nil},
		{"sandbox with empty sections", true, &specs.LinuxResources{Memory: &specs.LinuxMemory{}, CPU: &specs.LinuxCPU{}}, nil, nil},
		{"sandbox memory", true, mem(4 << 30), errdefs.ErrNotImplemented,
			[]string{"pod sandbox sb", "memory limit 4096 MiB", "fixed 2 vCPU(s) and 2048 MiB", "hot-plug"}},
		{"sandbox smaller memory too", true, mem(64 << 20), errdefs.ErrNotImplemented, []string{"memory limit 64 MiB"}},
		{"sandbox cpu", true, cpu(400000, 100000), errdefs.ErrNotImplemented, []string{"CPU quota 400000/100000 (4.00 CPUs)"}},
		{"sandbox pids", true, &specs.LinuxResources{Pids: &specs.LinuxPids{Limit: i64(10)}}, errdefs.ErrNotImplemented, []string{`"pids":{"limit":10}`}},
		{"container within the VM", false, &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: i64(2048 << 20)}, CPU: &specs.LinuxCPU{Quota: i64(200000), Period: u64(100000)}}, nil, nil},
		{"container shares only", false, &specs.LinuxResources{CPU: &specs.LinuxCPU{Shares: u64(512)}}, nil, nil},
		{"container memory over the VM", false, mem(2048<<20 + 1), errdefs.ErrFailedPrecondition,
			[]string{"container c1", "memory limit 2147483649 bytes (2048.0 MiB)", "fixed 2 vCPU(s) and 2048 MiB"}},
		{"container cpu over the VM", false, cpu(250000, 100000), errdefs.ErrFailedPrecondition, []string{"container c1", "CPU quota 250000/100000 (2.50 CPUs)", "vCPUs"}},
		{"container unlimited quota", false, cpu(-1, 100000), nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := "c1"
			if tc.sandbox {
				id = "sb"
			}
			err := checkResize(id, tc.sandbox, tc.res, 2, 2048)
			if tc.is == nil {
				if err != nil {
					t.Fatalf("checkResize = %v, want accepted", err)
				}
				return
			}
			if !errors.Is(err, tc.is) {
				t.Fatalf("checkResize = %v, want %v", err, tc.is)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("refusal %q does not say %q", err, w)
				}
			}
		})
	}
}

// TestUpdateWithinTheVM: through the task API, a resize of the sandbox is
// refused naming the VM's size and reaches no agent, an empty one passes,
// and a container's update goes to the agent only when it fits the VM.
func TestUpdateWithinTheVM(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	startPodAndContainer(t, h)
	p, err := h.s.currentPod()
	if err != nil {
		t.Fatal(err)
	}
	want := vmSizeOf(t, p)
	update := func(id, resources string) error {
		res, _ := typeurl.MarshalAnyToProto(&timestampLike{})
		res.Value = []byte(resources)
		_, err := h.s.Update(ctx, &taskAPI.UpdateTaskRequest{ID: id, Resources: res})
		return errgrpc.ToNative(err)
	}
	updates := func() int {
		return len(slices.DeleteFunc(h.agent.called(), func(c string) bool { return !strings.HasPrefix(c, "UpdateContainer ") }))
	}
	err = update("sb", `{"memory":{"limit":4294967296}}`)
	if !errdefs.IsNotImplemented(err) || !strings.Contains(err.Error(), "memory limit 4096 MiB") || !strings.Contains(err.Error(), want) {
		t.Errorf("sandbox resize: %v; want not implemented, naming the ask and %q", err, want)
	}
	if err := update("sb", `{}`); err != nil {
		t.Errorf("empty sandbox update: %v", err)
	}
	tooBig := fmt.Sprintf(`{"memory":{"limit":%d}}`, (int64(p.memMiB)+1)<<20)
	if err := update("c1", tooBig); !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), want) {
		t.Errorf("container update over the VM: %v; want failed precondition naming %q", err, want)
	}
	if n := updates(); n != 0 {
		t.Errorf("refused updates reached the agent: %d UpdateContainer calls", n)
	}
	if err := update("c1", `{"memory":{"limit":67108864}}`); err != nil {
		t.Errorf("container update within the VM: %v", err)
	}
	if n := updates(); n != 1 {
		t.Errorf("update within the VM: %d UpdateContainer calls, want 1", n)
	}
}

// vmSizeOf is how a refusal names pod p's VM size; the harness pod has no
// limits, so its VM has the default size.
func vmSizeOf(t *testing.T, p *pod) string {
	t.Helper()
	if p.memMiB != config.DefaultPodMemoryMiB || p.vcpus == 0 {
		t.Fatalf("harness pod VM: %d vCPUs, %d MiB; want the default %d MiB", p.vcpus, p.memMiB, config.DefaultPodMemoryMiB)
	}
	return fmt.Sprintf("fixed %d vCPU(s) and %d MiB", p.vcpus, p.memMiB)
}
