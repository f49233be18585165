package snp

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
)

// ErrNoKernelHashes is returned when a kernel is given but the firmware
// cannot measure it: its SEV metadata has no SNP_KERNEL_HASHES section
// (SNP), or it has no SEV hash table (SEV, SEV-ES). Such a firmware
// (OvmfPkgX64 rather than AmdSev) would boot any kernel unmeasured.
var ErrNoKernelHashes = errors.New("a kernel is given but the firmware does not measure kernel, initrd and command line (build OVMF from OvmfPkg/AmdSev)")

// Launch is everything an SNP launch digest depends on.
type Launch struct {
	// Firmware is OVMFDigest of the firmware image.
	Firmware Digest
	// Metadata is the firmware's SEV metadata (ParseMetadata).
	Metadata Metadata
	// Kernel holds the direct-boot hashes; nil when no kernel is given
	// (the kernel-hashes section is then measured as zero pages).
	Kernel *KernelHashes
	// VCPUs is the number of vCPUs: one VMSA page each.
	VCPUs int
	// VCPUSig is the vCPU model's signature (VCPUSig, CPUModelSig); QEMU
	// only.
	VCPUSig uint32
	// GuestFeatures is SEV_FEATURES of every VMSA (bit 0 SNP active; QEMU
	// sets 0x1, and 0x21 with debug swap).
	GuestFeatures uint64
	// VMM selects the VMM's reset state and page types ("" is QEMU).
	VMM VMMType
}

// Digest computes the launch digest: the firmware-seeded GCTX, the
// metadata sections in table order, then the VMSA pages.
func (l Launch) Digest() (Digest, error) {
	if l.VCPUs < 1 {
		return Digest{}, fmt.Errorf("SNP launch with %d vCPUs: want at least 1", l.VCPUs)
	}
	if l.VCPUs > 1 && l.Metadata.ResetEIP == 0 {
		return Digest{}, fmt.Errorf("SNP launch with %d vCPUs: the firmware has no SEV-ES reset block for the application processors", l.VCPUs)
	}
	if l.Kernel != nil && !l.Metadata.HasKernelHashes() {
		return Digest{}, fmt.Errorf("measuring SNP kernel hashes: %w: no %s section in the SEV metadata", ErrNoKernelHashes, SectionSNPKernelHashes)
	}
	vmm := l.VMM
	if vmm == "" {
		vmm = VMMQEMU
	}
	g := NewGCTX(l.Firmware)
	var cpuid []Section
	for _, s := range l.Metadata.Sections {
		gpa, size := uint64(s.GPA), uint64(s.Size)
		var err error
		switch s.Type {
		case SectionSNPSecMem:
			t := PageZero
			if vmm == VMMGCE {
				t = PageUnmeasured
			}
			err = g.UpdateEmptyPages(t, gpa, size)
		case SectionSNPSecrets:
			g.Update(PageSecrets, gpa, Digest{})
		case SectionCPUID:
			if vmm == VMMEC2 {
				cpuid = append(cpuid, s)
				continue
			}
			g.Update(PageCPUID, gpa, Digest{})
		case SectionSVSMCAA:
			err = g.UpdateEmptyPages(PageZero, gpa, size)
		case SectionSNPKernelHashes:
			if l.Kernel == nil {
				err = g.UpdateEmptyPages(PageZero, gpa, size)
				break
			}
			page := make([]byte, max(size, PageSize))
			t := l.Kernel.Table()
			copy(page[l.Metadata.HashTableGPA&(PageSize-1):], t[:])
			err = g.UpdateNormalPages(gpa, page)
		default:
			err = fmt.Errorf("unknown SEV metadata section type %#x at %#x", uint32(s.Type), s.GPA)
		}
		if err != nil {
			return Digest{}, fmt.Errorf("measuring %s at %#x: %w", s.Type, s.GPA, err)
		}
	}
	// EC2 measures the CPUID pages after every other section.
	for _, s := range cpuid {
		g.Update(PageCPUID, uint64(s.GPA), Digest{})
	}
	for i := range l.VCPUs {
		eip := uint32(BSPEIP)
		if i > 0 {
			eip = l.Metadata.ResetEIP
		}
		g.UpdateVMSA(VMSAGPA, VMSA(vmm, eip, l.VCPUSig, l.GuestFeatures))
	}
	return g.Digest(), nil
}

// SEVESDigest is the SEV-ES launch digest: SHA-256 of the firmware, the
// padded hash table (when a kernel is given) and one VMSA page per vCPU
// (SEV_FEATURES 0, QEMU reset state).
func SEVESDigest(fw []byte, m Metadata, kernel *KernelHashes, vcpus int, vcpuSig uint32) ([sha256.Size]byte, error) {
	if vcpus < 1 {
		return [32]byte{}, fmt.Errorf("SEV-ES launch with %d vCPUs: want at least 1", vcpus)
	}
	if vcpus > 1 && m.ResetEIP == 0 {
		return [32]byte{}, fmt.Errorf("SEV-ES launch with %d vCPUs: the firmware has no SEV-ES reset block", vcpus)
	}
	h := sha256.New()
	if err := sevPrefix(h, fw, m, kernel); err != nil {
		return [32]byte{}, err
	}
	for i := range vcpus {
		eip := uint32(BSPEIP)
		if i > 0 {
			eip = m.ResetEIP
		}
		h.Write(VMSA(VMMQEMU, eip, vcpuSig, 0))
	}
	var d [32]byte
	h.Sum(d[:0])
	return d, nil
}

// SEVDigest is the SEV launch digest: SHA-256 of the firmware and the
// padded hash table (when a kernel is given).
func SEVDigest(fw []byte, m Metadata, kernel *KernelHashes) ([sha256.Size]byte, error) {
	h := sha256.New()
	if err := sevPrefix(h, fw, m, kernel); err != nil {
		return [32]byte{}, err
	}
	var d [32]byte
	h.Sum(d[:0])
	return d, nil
}

// sevPrefix hashes what SEV and SEV-ES measure first: the firmware and,
// with a kernel, the padded hash table. A hash.Hash never fails to write.
func sevPrefix(h hash.Hash, fw []byte, m Metadata, kernel *KernelHashes) error {
	if kernel != nil && m.HashTableGPA == 0 {
		return fmt.Errorf("measuring SEV kernel hashes: %w: no SEV hash table in the firmware's footer", ErrNoKernelHashes)
	}
	h.Write(fw)
	if kernel != nil {
		t := kernel.Table()
		h.Write(t[:])
	}
	return nil
}
