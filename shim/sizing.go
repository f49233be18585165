package shim

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/veil-runtime/veil/shim/config"
)

// vmSize decides the pod VM's vCPUs and memory: the configured base plus the
// pod's limits from the CRI sandbox sizing annotations (CPU quota/period
// rounded up to whole vCPUs, memory in bytes rounded up to MiB), capped by
// max_vcpus (or hostCPUs when unset) and max_memory_mib. Missing or
// malformed annotations count as no limit: a pod without a CPU limit gets
// the base vcpus (1 by default, as Kata's default_vcpus), one without a
// memory limit default_memory_mib (config.Hypervisor.PodMemoryMiB).
//
// With pinVCPUs (SEV-SNP and TDX handlers, config.PinnedVCPUs) the VM has
// exactly the configured vCPUs, neither raised by the CPU limit nor capped:
// the launch measurement depends on the vCPU count, and one reference value
// (`veil measure`) must fit every pod. The CPU limit still applies to the
// whole VM through the pod's cgroup.
func vmSize(h config.Hypervisor, pinVCPUs bool, annotations map[string]string, hostCPUs int) (vcpus, memMiB uint32) {
	limit, err := strconv.ParseInt(annotations[annotationMemory], 10, 64)
	if err != nil {
		limit = 0
	}
	vcpus, memMiB = h.VCPUs, h.PodMemoryMiB(limit)
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

// checkResize decides whether an Update of id's resources fits the pod VM,
// which has vcpus vCPUs and memMiB MiB from its start (no CPU or memory
// hotplug). The sandbox's own resources are the VM's size: any change asked
// of them is refused (ErrNotImplemented), an update asking nothing passes. A
// container's update passes when its memory limit and its CPU quota fit the
// VM, and is refused otherwise (ErrFailedPrecondition) rather than set in a
// guest cgroup that could never get what it was promised.
func checkResize(id string, sandbox bool, res *specs.LinuxResources, vcpus, memMiB uint32) error {
	fixed := fmt.Sprintf("the pod VM has a fixed %d vCPU(s) and %d MiB from its start (veil does not hot-plug CPUs or memory)", vcpus, memMiB)
	if sandbox {
		if asked := describeResources(res); asked != "" {
			return fmt.Errorf("resizing pod sandbox %s in place to %s: %s: %w", id, asked, fixed, errdefs.ErrNotImplemented)
		}
		return nil
	}
	if res.Memory != nil && res.Memory.Limit != nil && *res.Memory.Limit > int64(memMiB)<<20 {
		return fmt.Errorf("updating container %s: memory limit %s is more than the pod VM's memory: %s: %w", id, mib(*res.Memory.Limit), fixed, errdefs.ErrFailedPrecondition)
	}
	if n := cpusOf(res); n > float64(vcpus) {
		return fmt.Errorf("updating container %s: CPU quota %d/%d (%.2f CPUs) is more than the pod VM's vCPUs: %s: %w", id, *res.CPU.Quota, *res.CPU.Period, n, fixed, errdefs.ErrFailedPrecondition)
	}
	return nil
}

// cpusOf is the CPUs a quota/period limit allows (0: none set).
func cpusOf(res *specs.LinuxResources) float64 {
	if res.CPU == nil || res.CPU.Quota == nil || res.CPU.Period == nil || *res.CPU.Quota <= 0 || *res.CPU.Period == 0 {
		return 0
	}
	return float64(*res.CPU.Quota) / float64(*res.CPU.Period)
}

// describeResources names what res asks, "" for nothing.
func describeResources(res *specs.LinuxResources) string {
	var asked []string
	if m := res.Memory; m != nil && m.Limit != nil {
		asked = append(asked, "memory limit "+mib(*m.Limit))
	}
	if n := cpusOf(res); n > 0 {
		asked = append(asked, fmt.Sprintf("CPU quota %d/%d (%.2f CPUs)", *res.CPU.Quota, *res.CPU.Period, n))
	}
	if c := res.CPU; c != nil && c.Shares != nil {
		asked = append(asked, fmt.Sprintf("CPU shares %d", *c.Shares))
	}
	if c := res.CPU; c != nil && c.Cpus != "" {
		asked = append(asked, "cpuset "+c.Cpus)
	}
	rest := *res
	rest.Memory, rest.CPU = nil, nil
	if m := res.Memory; m != nil {
		mm := *m
		mm.Limit = nil
		rest.Memory = &mm
	}
	if c := res.CPU; c != nil {
		cc := *c
		cc.Quota, cc.Period, cc.Shares, cc.Cpus = nil, nil, nil, ""
		rest.CPU = &cc
	}
	if b, err := json.Marshal(&rest); err == nil && !isEmptyJSON(b) {
		asked = append(asked, "resources "+string(b))
	}
	return strings.Join(asked, ", ")
}

// isEmptyJSON reports whether b is an object with nothing set (nested empty
// objects count as nothing).
func isEmptyJSON(b []byte) bool {
	var v any
	if json.Unmarshal(b, &v) != nil {
		return false
	}
	var empty func(any) bool
	empty = func(v any) bool {
		switch v := v.(type) {
		case nil:
			return true
		case map[string]any:
			for _, e := range v {
				if !empty(e) {
					return false
				}
			}
			return true
		case []any:
			return len(v) == 0
		}
		return false
	}
	return empty(v)
}

// mib prints a byte count in MiB, exactly when it is whole.
func mib(b int64) string {
	if b%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", b>>20)
	}
	return fmt.Sprintf("%d bytes (%.1f MiB)", b, float64(b)/(1<<20))
}
