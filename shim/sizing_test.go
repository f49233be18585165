package shim

import (
	"testing"

	"github.com/veil-runtime/veil/shim/config"
)

func TestVMSize(t *testing.T) {
	base := config.Default().Hypervisor // 1 vCPU, 256 MiB
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
		{"no limits", base, false, nil, 8, 1, 256},
		{"half a cpu rounds up", base, false, map[string]string{annotationCPUQuota: "50000", annotationCPUPeriod: "100000"}, 8, 2, 256},
		{"two cpus", base, false, map[string]string{annotationCPUQuota: "200000", annotationCPUPeriod: "100000"}, 8, 3, 256},
		{"memory rounds up to MiB", base, false, map[string]string{annotationMemory: "134217729"}, 8, 1, 256 + 129},
		{"quota without period ignored", base, false, map[string]string{annotationCPUQuota: "200000"}, 8, 1, 256},
		{"unlimited quota (-1) ignored", base, false, map[string]string{annotationCPUQuota: "-1", annotationCPUPeriod: "100000"}, 8, 1, 256},
		{"garbage ignored", base, false, map[string]string{annotationMemory: "lots", annotationCPUQuota: "x", annotationCPUPeriod: "y"}, 8, 1, 256},
		{"host cpus cap", base, false, map[string]string{annotationCPUQuota: "800000", annotationCPUPeriod: "100000"}, 2, 2, 256},
		{"config caps", capped, false, map[string]string{annotationCPUQuota: "800000", annotationCPUPeriod: "100000", annotationMemory: "1073741824"}, 8, 2, 512},
		// SNP/TDX: the measurement covers the vCPU count, so it never moves.
		{"pinned: cpu limit adds no vCPU", base, true, map[string]string{annotationCPUQuota: "200000", annotationCPUPeriod: "100000", annotationMemory: "134217728"}, 8, 1, 256 + 128},
		{"pinned: host cpus do not cap", func() config.Hypervisor { h := base; h.VCPUs = 4; return h }(), true, nil, 2, 4, 256},
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
