package tdx

import (
	"encoding/binary"
	"testing"
)

// tdvfImage builds a small firmware image the way OVMF lays one out: the
// TDVF descriptor (after its metadata GUID) at descAt, and the GUIDed
// footer table, with the metadata-offset entry, ending 32 bytes before the
// end.
func tdvfImage(size, descAt int, secs []Section) []byte {
	b := make([]byte, size)
	g := mustGUID("e9eaf9f3-168e-44d5-a8eb-7f4d8738f6ae") // TDX metadata GUID
	copy(b[descAt-16:], g[:])
	d := b[descAt:]
	copy(d, "TDVF")
	binary.LittleEndian.PutUint32(d[4:], uint32(descriptorHeader+sectionSize*len(secs)))
	binary.LittleEndian.PutUint32(d[8:], 1)
	binary.LittleEndian.PutUint32(d[12:], uint32(len(secs)))
	for i, s := range secs {
		e := d[descriptorHeader+sectionSize*i:]
		binary.LittleEndian.PutUint32(e[0:], s.DataOffset)
		binary.LittleEndian.PutUint32(e[4:], s.RawDataSize)
		binary.LittleEndian.PutUint64(e[8:], s.MemoryAddress)
		binary.LittleEndian.PutUint64(e[16:], s.MemoryDataSize)
		binary.LittleEndian.PutUint32(e[24:], uint32(s.Type))
		binary.LittleEndian.PutUint32(e[28:], s.Attributes)
	}
	end := size - 32
	footer := mustGUID(footerGUID)
	copy(b[end-16:], footer[:])
	binary.LittleEndian.PutUint16(b[end-18:], 18+22)
	entry := mustGUID(metadataOffsetGUID)
	copy(b[end-18-16:], entry[:])
	binary.LittleEndian.PutUint16(b[end-18-18:], 22)
	binary.LittleEndian.PutUint32(b[end-18-22:], uint32(size-descAt))
	return b
}

// smallTDVF is a 8 KiB image with the CleanExample's kinds of sections:
// an extended BFV (the image's second page), a CFV, a TD HOB, TEMP_MEM.
func smallTDVF() []byte {
	return tdvfImage(0x2000, 0x110, []Section{
		{DataOffset: 0x1000, RawDataSize: 0x1000, MemoryAddress: 0xFFFFF000, MemoryDataSize: 0x1000, Type: SectionBFV, Attributes: AttrMRExtend},
		{DataOffset: 0, RawDataSize: 0x1000, MemoryAddress: 0xFFFFE000, MemoryDataSize: 0x1000, Type: SectionCFV},
		{MemoryAddress: 0x809000, MemoryDataSize: 0x2000, Type: SectionTDHOB},
		{MemoryAddress: 0x800000, MemoryDataSize: 0x6000, Type: SectionTempMem},
	})
}

func TestSmallTDVF(t *testing.T) {
	fw := smallTDVF()
	secs, err := ParseTDVF(fw)
	if err != nil || len(secs) != 4 || secs[0].Type != SectionBFV || secs[3].MemoryAddress != 0x800000 {
		t.Fatalf("parsing the builder's image: %+v, %v", secs, err)
	}
	if _, err := Measure(Inputs{Firmware: fw, Kernel: syntheticBzImage(0), MemoryBytes: 1 << 30, ACPI: &ACPIDigests{}}); err != nil {
		t.Fatal(err)
	}
}

// FuzzParseTDVF feeds ParseTDVF what an operator (or whoever handed them
// the firmware) controls: it never panics, and what it accepts is a
// section list QEMU would launch: page-aligned ranges, raw data inside the
// image and inside the section, known attributes. MRTD and the TD HOB then
// compute (or the HOB refuses) without panicking.
func FuzzParseTDVF(f *testing.F) {
	f.Add(smallTDVF())
	f.Add(tdvfImage(0x1000, 0x40, []Section{{MemoryAddress: 0x1000, MemoryDataSize: 0x1000, Type: SectionTDHOB}}))
	f.Add(tdvfImage(0x1000, 0x40, []Section{{DataOffset: 0xFFFFFFFF, RawDataSize: 2, MemoryAddress: 0, MemoryDataSize: 0x1000, Type: SectionBFV, Attributes: AttrMRExtend}}))
	f.Add(tdvfImage(0x1000, 0xF00, nil))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, fw []byte) {
		secs, err := ParseTDVF(fw)
		if err != nil {
			return
		}
		var pages uint64
		for i, s := range secs {
			if s.MemoryAddress%pageSize != 0 || s.MemoryDataSize%pageSize != 0 || s.MemoryDataSize == 0 ||
				uint64(s.RawDataSize) > s.MemoryDataSize || uint64(s.DataOffset)+uint64(s.RawDataSize) > uint64(len(fw)) {
				t.Fatalf("accepted section %d %+v of a %d-byte image", i, s, len(fw))
			}
			pages += s.MemoryDataSize / pageSize
		}
		if pages <= 1024 { // larger sections are valid but slow to hash here
			if _, err := MRTD(fw, secs, SinglePass); err != nil {
				t.Fatalf("MRTD of accepted sections: %v", err)
			}
		}
		if hob, err := QEMUTDHOB(secs, 1<<30); err == nil && (len(hob)-hobHandoffSize)%hobResourceSize != 0 {
			t.Fatalf("HOB of %d bytes", len(hob))
		}
	})
}

// FuzzPEImageDigest: the PE hash and QEMU's header patching never panic on
// whatever file is passed as the kernel.
func FuzzPEImageDigest(f *testing.F) {
	f.Add(syntheticBzImage(0x10), uint32(4096))
	f.Add(syntheticBzImage(0)[:0x400], uint32(0))
	f.Add([]byte("MZ"), uint32(1))
	f.Fuzz(func(t *testing.T, img []byte, initrd uint32) {
		if _, err := PEImageDigest(img); err != nil {
			return
		}
		_, _ = KernelDigest(img, "console=hvc0", uint64(initrd), initrd%2 == 0, 1<<30)
	})
}
