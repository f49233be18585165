// Package tdx computes the launch measurements of an Intel TDX guest that
// QEMU starts with a TDVF (OVMF) firmware and a direct kernel boot: MRTD
// and RTMR0-2, from the exact firmware, kernel, initrd, command line and
// memory size. It is the TDX half of `veil measure`; the broker pins MRTD,
// RTMR1 and RTMR2.
//
// # Algorithm
//
//   - MRTD (TDX module spec, TDH.MEM.PAGE.ADD / TDH.MR.EXTEND; TDVF design
//     guide, "TDVF metadata"): ParseTDVF finds the metadata descriptor
//     through the OVMF GUIDed footer table (entry e47a6535-…, a u32 offset
//     from the end of the image to "TDVF"). MRTD is one SHA-384 stream of
//     128-byte records: "MEM.PAGE.ADD" + GPA for every 4 KiB page of every
//     section (except PAGE_AUG ones), and "MR.EXTEND" + GPA followed by the
//     256 data bytes for every chunk of MR_EXTEND sections (the BFV).
//     Upstream KVM adds and extends page by page (SinglePass); older TDX
//     stacks add a section's pages first (TwoPass).
//   - RTMRs: RTMR[i] = SHA-384(RTMR[i] || digest) per event (Replay).
//     RTMR0 (TDVF): SHA-384 of the TD HOB QEMU builds (QEMUTDHOB), of the
//     CFV section, of the five empty Secure Boot variables as
//     UEFI_VARIABLE_DATA, a separator, QEMU's three ACPI blobs, BootOrder
//     and Boot0000 (UiApp). RTMR1: the EDK2/Authenticode PE hash of the
//     bzImage after QEMU's setup-header patches (KernelDigest), then three
//     boot-manager actions and a separator. RTMR2 (the kernel's EFI stub,
//     PCR 9): the UTF-16LE command line with " initrd=initrd" appended when
//     there is an initrd and a terminating NUL, then SHA-384 of the initrd.
//
// # What each value depends on
//
//	MRTD    firmware bytes (its BFV and section layout); the host's page
//	        add order (SinglePass for upstream KVM + QEMU 10.1+). Not the
//	        kernel, memory size or vCPU count.
//	RTMR0   the TD HOB (the firmware's TD_HOB/TEMP_MEM layout and the
//	        memory size), the firmware's CFV (variable store), and QEMU's
//	        ACPI tables, which depend on the VMM version, machine type,
//	        devices, vCPU count and memory. Computed only when Inputs.ACPI
//	        gives those three digests (from a reference boot's event log):
//	        nothing here emulates QEMU's ACPI builder.
//	RTMR1   the kernel bytes, and, through the initrd address QEMU writes
//	        into the setup header, the initrd size and the RAM below 4 GiB
//	        (the memory size up to 2 GiB; 2 GiB from 0xB0000000 on, and for
//	        2 GiB itself).
//	RTMR2   the command line and the initrd bytes (needs a kernel whose EFI
//	        stub measures them through the CC measurement protocol, Linux
//	        6.8 or later).
//	RTMR3   zero at launch (veil's guest does not extend it).
//
// The event sequences (RTMR0's, Boot0000, the " initrd=initrd" suffix OVMF
// adds to the command line) are those of OVMF before edk2-stable202505 (the
// dstack tdx-lite hardware quote); a newer OVMF may log other events, so
// check a reference boot's event log when the firmware changes. The vCPU
// count changes nothing but the ACPI tables.
//
// # Sources and vectors
//
// The tests reproduce ../shared/vectors/tdx.json (README "TDX set A/B"):
// gce-tcb-verifier's CleanTdxExampleMeasurement MRTD (Apache-2.0), the TD
// HOB and every RTMR0-3 event of a hardware TD quote from dstack's
// tdx-lite fixture (CC0-1.0), with the fixtures and their licenses in
// testdata/. Written from the TDX module and TDVF specifications, QEMU's
// hw/i386 (x86_load_linux, tdvf-hob.c), EDK2's MeasureBootPeCoff.c and
// the vector walk-through; no upstream code is copied.
package tdx
