package config

// DefaultPodMemoryMiB is hypervisor.default_memory_mib's default: the guest
// memory of a pod without a memory limit, Kata's default_memory. A pod
// without limits may use what the node has, as under runc; a small VM
// instead refuses one large allocation outright (the guest kernel's
// overcommit check counts the VM's RAM), so a process that a container
// limit would have OOM-killed fails with ENOMEM instead. The host pays
// for guest memory only once the guest touches it, plus the guest
// kernel's page array (64 bytes per 4 KiB page: 32 MiB at 2 GiB), which
// it initialises at boot.
const DefaultPodMemoryMiB = 2048

// PodMemoryMiB is the memory of the VM of a pod whose memory limit is
// limitBytes (0 or less: none): memory_mib plus the limit rounded up to
// MiB, or without a limit default_memory_mib (at least memory_mib); capped
// by max_memory_mib. The shim sizes pod VMs with it and `veil measure`
// (TDX: RTMR 1 covers the memory size) measures a pod without a limit.
func (h Hypervisor) PodMemoryMiB(limitBytes int64) uint32 {
	mem := max(h.MemoryMiB, h.DefaultMemoryMiB)
	if limitBytes > 0 {
		mem = h.MemoryMiB + uint32((limitBytes+(1<<20-1))>>20)
	}
	if h.MaxMemoryMiB != 0 && mem > h.MaxMemoryMiB {
		mem = h.MaxMemoryMiB
	}
	return mem
}
