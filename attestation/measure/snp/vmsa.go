package snp

import (
	"encoding/binary"
	"fmt"
)

// VMMType is the virtual machine monitor whose reset state the VMSA pages
// carry.
type VMMType string

// VMM types.
const (
	// VMMQEMU is QEMU/KVM, what veil launches.
	VMMQEMU VMMType = "QEMU"
	// VMMEC2 is Amazon EC2.
	VMMEC2 VMMType = "ec2"
	// VMMGCE is Google Compute Engine.
	VMMGCE VMMType = "gce"
)

// ParseVMMType reads a VMM type name ("" is QEMU).
func ParseVMMType(s string) (VMMType, error) {
	switch VMMType(s) {
	case "", VMMQEMU, "qemu":
		return VMMQEMU, nil
	case VMMEC2, VMMGCE:
		return VMMType(s), nil
	}
	return "", fmt.Errorf("unknown VMM type %q (want QEMU, ec2 or gce)", s)
}

// VMSAGPA is the guest physical address the platform measures VMSA pages
// at.
const VMSAGPA = 0xFFFFFFFFF000

// BSPEIP is the boot processor's reset vector.
const BSPEIP = 0xFFFFFFF0

// Offsets in the VMSA page (AMD APM vol. 2, table B-4, "VMSA Layout, State
// Save Area for SEV-ES").
const (
	vmsaES          = 0x000 // ES CS SS DS FS GS GDTR LDTR IDTR TR, 16 bytes each
	vmsaEFER        = 0x0D0
	vmsaCR4         = 0x148
	vmsaCR0         = 0x158
	vmsaDR7         = 0x160
	vmsaDR6         = 0x168
	vmsaRFLAGS      = 0x170
	vmsaRIP         = 0x178
	vmsaGPAT        = 0x268
	vmsaRDX         = 0x310
	vmsaSEVFeatures = 0x3B0
	vmsaXCR0        = 0x3E8
	vmsaMXCSR       = 0x408
	vmsaX87FCW      = 0x410
)

// segment is a VMSA segment register.
type segment struct {
	sel, attrib uint16
	limit       uint32
	base        uint64
}

// VMSA is the page the platform measures for one vCPU starting at eip in
// real mode: the reset state of the VMM's vCPU, with RDX = vcpuSig (QEMU)
// and SEV_FEATURES = features (0 for SEV-ES).
func VMSA(vmm VMMType, eip uint32, vcpuSig uint32, features uint64) []byte {
	page := make([]byte, PageSize)
	le := binary.LittleEndian
	cs := segment{0xf000, 0x9b, 0xffff, uint64(eip & 0xffff0000)}
	ss := segment{0, 0x93, 0xffff, 0}
	tr := segment{0, 0x8b, 0xffff, 0}
	gpat := uint64(0x0007040600070406)
	rdx := uint64(vcpuSig)
	mxcsr, fcw := uint64(0x1f80), uint64(0x37f)
	switch vmm {
	case VMMEC2:
		cs.attrib, ss.attrib, tr.attrib = 0x9a, 0x92, 0x83
		rdx, mxcsr, fcw = 0x600, 0, 0
	case VMMGCE:
		gpat = 0x00070106
		rdx, mxcsr, fcw = 0x600, 0, 0
	}
	data := segment{0, 0x93, 0xffff, 0}
	segs := []segment{
		data,                 // ES
		cs,                   // CS
		ss,                   // SS
		data,                 // DS
		data,                 // FS
		data,                 // GS
		{0, 0, 0xffff, 0},    // GDTR
		{0, 0x82, 0xffff, 0}, // LDTR
		{0, 0, 0xffff, 0},    // IDTR
		tr,                   // TR
	}
	for i, s := range segs {
		o := vmsaES + 16*i
		le.PutUint16(page[o:], s.sel)
		le.PutUint16(page[o+2:], s.attrib)
		le.PutUint32(page[o+4:], s.limit)
		le.PutUint64(page[o+8:], s.base)
	}
	for _, f := range []struct {
		off int
		v   uint64
	}{
		{vmsaEFER, 0x1000},
		{vmsaCR4, 0x40},
		{vmsaCR0, 0x10},
		{vmsaDR7, 0x400},
		{vmsaDR6, 0xffff0ff0},
		{vmsaRFLAGS, 0x2},
		{vmsaRIP, uint64(eip & 0xffff)},
		{vmsaGPAT, gpat},
		{vmsaRDX, rdx},
		{vmsaSEVFeatures, features},
		{vmsaXCR0, 0x1},
		{vmsaMXCSR, mxcsr},
		{vmsaX87FCW, fcw},
	} {
		le.PutUint64(page[f.off:], f.v)
	}
	return page
}
