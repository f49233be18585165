// Package measure derives the launch measurements of a veil VM from the
// exact inputs its handler launches it with, for `veil measure` and for the
// guest image's manifest.
//
// The inputs (Inputs) come from the installed handler config (shim/config)
// through the same functions the shim and the QEMU driver use to launch a
// pod: config.Config.VM builds the kernel parameters (the handler's
// kernel_args, veil.tee, and on veil-dev the init-data digest), the TEE and
// the size; qemu.LaunchFor, Launch.Append and Launch.CPU give the -append
// string and the -cpu model. A reference value computed here therefore
// describes the command line the driver builds, not a copy of it.
//
// Values:
//
//   - SEV-SNP: the launch digest (attestation/measure/snp) over the OVMF
//     image, its SEV metadata sections, the kernel hashes table (kernel,
//     initrd, command line) and one VMSA per vCPU. The init-data digest is
//     bound in HOSTDATA, outside the digest.
//   - TDX: MRTD, RTMR 1 (kernel) and RTMR 2 (command line, initrd) from
//     attestation/measure/tdx; RTMR 0 needs QEMU's ACPI table digests and
//     is left unknown. RTMR 1 follows the VM's memory size (QEMU patches
//     the initrd address into the kernel's setup header).
//   - sample (veil-dev): no hardware value; the init-data digest is on the
//     kernel command line and the sample evidence reports it.
//
// The vCPU question: an SNP digest has one VMSA page per vCPU, so it
// depends on the vCPU count. veil pins it: SNP and TDX handlers boot
// exactly hypervisor.vcpus vCPUs whatever the pod's CPU limit
// (config.Config.PinnedVCPUs; the limit applies through the pod's cgroup),
// so one value per handler fits every pod. The vCPU model is QEMU's
// `-cpu host` under KVM: the VMSA carries the host CPU's family, model and
// stepping, so the value is per CPU generation and stepping; `veil measure`
// on the node reads them from /proc/cpuinfo (HostVCPUSig), elsewhere they
// are given (a QEMU model name or a signature).
package measure
