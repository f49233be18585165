package shim

import (
	"strconv"

	"github.com/veil-runtime/veil/shim/config"
)

// vmSize decides the pod VM's vCPUs and memory: the configured base plus the
// pod's limits from the CRI sandbox sizing annotations (CPU quota/period
// rounded up to whole vCPUs, memory in bytes rounded up to MiB), capped by
// max_vcpus (or hostCPUs when unset) and max_memory_mib. Missing or
// malformed annotations add nothing: a pod without limits gets the base size.
//
// With pinVCPUs (SEV-SNP and TDX handlers, config.PinnedVCPUs) the VM has
// exactly the configured vCPUs, neither raised by the CPU limit nor capped:
// the launch measurement depends on the vCPU count, and one reference value
// (`veil measure`) must fit every pod. The CPU limit still applies to the
// whole VM through the pod's cgroup.
func vmSize(h config.Hypervisor, pinVCPUs bool, annotations map[string]string, hostCPUs int) (vcpus, memMiB uint32) {
	vcpus, memMiB = h.VCPUs, h.MemoryMiB
	if mem, err := strconv.ParseInt(annotations[annotationMemory], 10, 64); err == nil && mem > 0 {
		memMiB += uint32((mem + (1<<20 - 1)) >> 20)
	}
	if h.MaxMemoryMiB != 0 && memMiB > h.MaxMemoryMiB {
		memMiB = h.MaxMemoryMiB
	}
	if pinVCPUs {
		return vcpus, memMiB
	}
	quota, qerr := strconv.ParseInt(annotations[annotationCPUQuota], 10, 64)
	period, perr := strconv.ParseInt(annotations[annotationCPUPeriod], 10, 64)
	if qerr == nil && perr == nil && quota > 0 && period > 0 {
		vcpus += uint32((quota + period - 1) / period)
	}
	maxCPUs := h.MaxVCPUs
	if maxCPUs == 0 && hostCPUs > 0 {
		maxCPUs = uint32(hostCPUs)
	}
	if maxCPUs != 0 && vcpus > maxCPUs {
		vcpus = max(maxCPUs, 1)
	}
	return vcpus, memMiB
}
