// Package snp computes the launch digest of an AMD SEV-SNP guest the way
// QEMU launches it with OVMF and direct kernel boot (sev-snp-guest with
// kernel-hashes=on), and the older SEV and SEV-ES launch digests of the
// same firmware.
//
// An SNP launch digest is a chain of SHA-384 hashes, one PAGE_INFO
// structure per guest page the platform measures (GCTX, gctx.go). QEMU and
// OVMF make the platform measure, in this order:
//
//  1. the firmware image, as normal pages at 4 GiB minus its size;
//  2. the sections OVMF's SEV metadata lists (ovmf.go), in table order:
//     zero pages (SNP_SEC_MEM, SVSM_CAA), one secrets page, one CPUID page,
//     and the kernel-hashes page (kernel, initrd and command-line SHA-256 in
//     QEMU's SEV hash table, hashes.go) as a normal page;
//  3. one VMSA page per vCPU (vmsa.go): the boot processor's reset state,
//     then each application processor's, which starts at OVMF's SEV-ES
//     reset block. The VMSA carries the vCPU signature (CPUID 1 EAX of the
//     vCPU model, vcpu.go) and the guest's SEV_FEATURES.
//
// The digest therefore depends on the vCPU count and the vCPU model as well
// as on the firmware, kernel, initrd and command line. VMMs other than QEMU
// (EC2, GCE) set a few registers differently and measure some pages in
// another way; VMMType selects them.
//
// Everything here is a pure function of its inputs and reproduces the
// published vectors of virtee/sev-snp-measure, Dstack-TEE/dstack and
// google/gce-tcb-verifier byte for byte (snp_test.go, testdata/). SNP with
// an SVSM (Coconut-SVSM) is not implemented.
package snp
