package tdx

import (
	"encoding/binary"
	"fmt"
	"sort"
)

// q35 guest RAM layout (QEMU hw/i386/pc_q35.c): RAM below 4 GiB ends at
// lowmem; with 0xB0000000 bytes or more the low part is 2 GiB and the rest
// is mapped from 4 GiB.
const (
	q35LowmemSplit = 0xB0000000
	q35LowmemLarge = 0x80000000
	fourGiB        = 1 << 32
)

// belowAbove4G splits a q35 guest's RAM into its parts below and above
// 4 GiB.
func belowAbove4G(memorySize uint64) (below, above uint64) {
	lowmem := uint64(q35LowmemSplit)
	if memorySize >= q35LowmemSplit {
		lowmem = q35LowmemLarge
	}
	if memorySize >= lowmem {
		return lowmem, memorySize - lowmem
	}
	return memorySize, 0
}

// HOB constants (UEFI PI spec vol. 3, "HOB Code Definitions").
const (
	hobTypeHandoff          = 0x0001
	hobTypeResource         = 0x0003
	hobHandoffVersion       = 9
	hobHandoffSize          = 56
	hobResourceSize         = 48
	resourceSystemMemory    = 0x00000000
	resourceUnaccepted      = 0x00000007
	resourceAttrPrivateInit = 0x00000007 // PRESENT | INITIALIZED | TESTED
	hobEndSize              = 8          // the EFI_HOB_TYPE_END_OF_HOB_LIST entry
)

type ramRange struct {
	start, length uint64
	accepted      bool
}

// QEMUTDHOB returns the TD HOB QEMU writes into the TD_HOB section before
// the TD starts (QEMU hw/i386/tdvf-hob.c), the bytes TDVF measures into
// RTMR0 as its first event: a PHIT handoff table, then one resource
// descriptor per RAM range in address order. The ranges are q35's RAM
// (below 4 GiB up to 2 GiB or 0xB0000000, the rest from 4 GiB) split at the
// firmware's TD_HOB and TEMP_MEM sections, which QEMU adds as accepted
// memory (resource type system memory); the rest is unaccepted (type 7).
// The end-of-list entry QEMU appends is not part of the measured bytes; the
// PHIT's EfiEndOfHobList points past it.
//
// The HOB depends on the firmware's section layout and the guest memory
// size only (not on the vCPU count). Its bytes are hardware-confirmed for
// QEMU 8.2.2 (the dstack tdx-lite quote); that upstream QEMU 10.1 writes
// the same bytes (no MMIO resource descriptors, attribute 7 for both
// types) is assumed from its tdvf-hob.c, not checked against a quote.
func QEMUTDHOB(sections []Section, memorySize uint64) ([]byte, error) {
	below, above := belowAbove4G(memorySize)
	if below == 0 {
		return nil, fmt.Errorf("building the TD HOB: memory size is 0")
	}
	ram := []ramRange{{start: 0, length: below}}
	if above > 0 {
		ram = append(ram, ramRange{start: fourGiB, length: above})
	}
	var hob *Section
	for i := range sections {
		s := sections[i]
		switch s.Type {
		case SectionTDHOB:
			if hob != nil {
				return nil, fmt.Errorf("building the TD HOB: the firmware has more than one TD_HOB section")
			}
			hob = &sections[i]
		case SectionTempMem:
		case SectionBFV, SectionCFV:
			continue
		default:
			return nil, fmt.Errorf("building the TD HOB: QEMU does not support TDVF section type %s (section %d)", s.Type, i)
		}
		var err error
		if ram, err = accept(ram, s.MemoryAddress, s.MemoryDataSize); err != nil {
			return nil, fmt.Errorf("building the TD HOB: %s section %#x+%#x: %w", s.Type, s.MemoryAddress, s.MemoryDataSize, err)
		}
	}
	if hob == nil {
		return nil, fmt.Errorf("building the TD HOB: the firmware has no TD_HOB section")
	}
	sort.Slice(ram, func(i, j int) bool { return ram[i].start < ram[j].start })

	size := hobHandoffSize + hobResourceSize*len(ram)
	if uint64(size+hobEndSize) > hob.MemoryDataSize {
		return nil, fmt.Errorf("building the TD HOB: %d bytes do not fit the %#x-byte TD_HOB section", size+hobEndSize, hob.MemoryDataSize)
	}
	b := make([]byte, size)
	binary.LittleEndian.PutUint16(b[0:], hobTypeHandoff)
	binary.LittleEndian.PutUint16(b[2:], hobHandoffSize)
	binary.LittleEndian.PutUint32(b[8:], hobHandoffVersion)
	// BootMode 0 (BOOT_WITH_FULL_CONFIGURATION); memory top/bottom fields 0.
	binary.LittleEndian.PutUint64(b[48:], hob.MemoryAddress+uint64(size)+hobEndSize)
	for i, r := range ram {
		d := b[hobHandoffSize+i*hobResourceSize:]
		binary.LittleEndian.PutUint16(d[0:], hobTypeResource)
		binary.LittleEndian.PutUint16(d[2:], hobResourceSize)
		// Owner GUID (d[8:24]) zero.
		typ := uint32(resourceUnaccepted)
		if r.accepted {
			typ = resourceSystemMemory
		}
		binary.LittleEndian.PutUint32(d[24:], typ)
		binary.LittleEndian.PutUint32(d[28:], resourceAttrPrivateInit)
		binary.LittleEndian.PutUint64(d[32:], r.start)
		binary.LittleEndian.PutUint64(d[40:], r.length)
	}
	return b, nil
}

// accept marks [start, start+length) accepted, splitting the unaccepted
// range that holds it (QEMU tdx_accept_ram_range).
func accept(ram []ramRange, start, length uint64) ([]ramRange, error) {
	end := start + length
	for i, r := range ram {
		rEnd := r.start + r.length
		if r.accepted || start < r.start || end > rEnd {
			continue
		}
		out := append([]ramRange(nil), ram[:i]...)
		if start > r.start {
			out = append(out, ramRange{start: r.start, length: start - r.start})
		}
		out = append(out, ramRange{start: start, length: length, accepted: true})
		if end < rEnd {
			out = append(out, ramRange{start: end, length: rEnd - end})
		}
		return append(out, ram[i+1:]...), nil
	}
	return nil, fmt.Errorf("not inside one unaccepted RAM range (guest memory too small, or sections overlap)")
}
