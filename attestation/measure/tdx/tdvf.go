package tdx

import (
	"encoding/binary"
	"fmt"
)

// SectionType is the type of a TDVF metadata section (TDVF design guide,
// "TDVF Metadata", table "TDVF_SECTION.Type").
type SectionType uint32

// TDVF section types.
const (
	SectionBFV          SectionType = 0
	SectionCFV          SectionType = 1
	SectionTDHOB        SectionType = 2
	SectionTempMem      SectionType = 3
	SectionPermMem      SectionType = 4
	SectionPayload      SectionType = 5
	SectionPayloadParam SectionType = 6
	SectionTDInfo       SectionType = 7
)

func (t SectionType) String() string {
	switch t {
	case SectionBFV:
		return "BFV"
	case SectionCFV:
		return "CFV"
	case SectionTDHOB:
		return "TD_HOB"
	case SectionTempMem:
		return "TEMP_MEM"
	case SectionPermMem:
		return "PERM_MEM"
	case SectionPayload:
		return "PAYLOAD"
	case SectionPayloadParam:
		return "PAYLOAD_PARAM"
	case SectionTDInfo:
		return "TD_INFO"
	}
	return fmt.Sprintf("type %d", uint32(t))
}

// Section attributes.
const (
	// AttrMRExtend: the VMM extends MRTD with the section's content
	// (TDH.MR.EXTEND over every 256-byte chunk).
	AttrMRExtend uint32 = 1
	// AttrPageAug: the pages are added after boot (TDH.MEM.PAGE.AUG), so
	// they are not part of MRTD.
	AttrPageAug uint32 = 2
)

// Section is one TDVF metadata section: where its bytes are in the
// firmware file and where the VMM puts them in guest memory.
type Section struct {
	DataOffset     uint32 // file offset of the raw data
	RawDataSize    uint32 // bytes taken from the file (0 for memory-only sections)
	MemoryAddress  uint64 // guest physical address, page aligned
	MemoryDataSize uint64 // bytes of guest memory, page aligned, >= RawDataSize
	Type           SectionType
	Attributes     uint32
}

const (
	pageSize = 4096
	// The OVMF GUIDed table footer (OvmfPkg/ResetVector): its GUID ends
	// 32 bytes before the end of the image, with the table's u16 length in
	// front of it.
	footerGUID = "96b582de-1fb2-45f7-baea-a366c55a082d"
	// The footer-table entry holding the u32 offset, from the end of the
	// image, of the TDVF metadata descriptor.
	metadataOffsetGUID = "e47a6535-984a-4798-865e-4685a7bf8ec2"
	descriptorHeader   = 16 // "TDVF", length, version, number of sections
	sectionSize        = 32
	maxSections        = 256
)

// ParseTDVF finds the TDVF metadata of a TDX firmware image (an OVMF/TDVF
// .fd file as given to QEMU's -bios) and returns its sections in table
// order. It checks what QEMU checks before it launches the image (page
// alignment, raw data inside the file and inside the memory size) so a
// section list it returns describes a launch QEMU would perform.
func ParseTDVF(fw []byte) ([]Section, error) {
	entry, err := footerEntry(fw, mustGUID(metadataOffsetGUID))
	if err != nil {
		return nil, err
	}
	if len(entry) < 4 {
		return nil, fmt.Errorf("reading the TDX metadata offset entry: %d bytes, want 4", len(entry))
	}
	fromEnd := uint64(binary.LittleEndian.Uint32(entry))
	if fromEnd > uint64(len(fw)) || uint64(len(fw))-fromEnd+descriptorHeader > uint64(len(fw)) {
		return nil, fmt.Errorf("reading the TDVF descriptor: offset %#x from the end is outside the %d-byte image", fromEnd, len(fw))
	}
	off := uint64(len(fw)) - fromEnd
	d := fw[off:]
	if string(d[:4]) != "TDVF" {
		return nil, fmt.Errorf("reading the TDVF descriptor at %#x: signature %q, want \"TDVF\"", off, d[:4])
	}
	length := binary.LittleEndian.Uint32(d[4:])
	version := binary.LittleEndian.Uint32(d[8:])
	n := binary.LittleEndian.Uint32(d[12:])
	if version != 1 {
		return nil, fmt.Errorf("reading the TDVF descriptor: version %d, want 1", version)
	}
	if n == 0 || n > maxSections {
		return nil, fmt.Errorf("reading the TDVF descriptor: %d sections, want 1..%d", n, maxSections)
	}
	if uint64(length) != descriptorHeader+uint64(n)*sectionSize {
		return nil, fmt.Errorf("reading the TDVF descriptor: length %d, want %d for %d sections", length, descriptorHeader+n*sectionSize, n)
	}
	if uint64(len(d)) < uint64(length) {
		return nil, fmt.Errorf("reading the TDVF descriptor: %d sections run past the end of the image", n)
	}
	secs := make([]Section, n)
	for i := range secs {
		b := d[descriptorHeader+i*sectionSize:]
		s := Section{
			DataOffset:     binary.LittleEndian.Uint32(b[0:]),
			RawDataSize:    binary.LittleEndian.Uint32(b[4:]),
			MemoryAddress:  binary.LittleEndian.Uint64(b[8:]),
			MemoryDataSize: binary.LittleEndian.Uint64(b[16:]),
			Type:           SectionType(binary.LittleEndian.Uint32(b[24:])),
			Attributes:     binary.LittleEndian.Uint32(b[28:]),
		}
		if err := s.check(len(fw)); err != nil {
			return nil, fmt.Errorf("reading TDVF section %d (%s): %w", i, s.Type, err)
		}
		secs[i] = s
	}
	return secs, nil
}

func (s Section) check(fwLen int) error {
	switch {
	case s.MemoryAddress%pageSize != 0:
		return fmt.Errorf("memory address %#x is not page aligned", s.MemoryAddress)
	case s.MemoryDataSize%pageSize != 0:
		return fmt.Errorf("memory size %#x is not a whole number of pages", s.MemoryDataSize)
	case s.MemoryDataSize == 0:
		return fmt.Errorf("memory size is 0")
	case s.MemoryAddress+s.MemoryDataSize < s.MemoryAddress:
		return fmt.Errorf("memory range %#x+%#x wraps around", s.MemoryAddress, s.MemoryDataSize)
	case uint64(s.RawDataSize) > s.MemoryDataSize:
		return fmt.Errorf("raw size %#x is larger than the memory size %#x", s.RawDataSize, s.MemoryDataSize)
	case uint64(s.DataOffset)+uint64(s.RawDataSize) > uint64(fwLen):
		return fmt.Errorf("raw data %#x+%#x is outside the %d-byte image", s.DataOffset, s.RawDataSize, fwLen)
	case s.Attributes&^(AttrMRExtend|AttrPageAug) != 0:
		return fmt.Errorf("unknown attributes %#x", s.Attributes)
	}
	return nil
}

// footerEntry returns the data of the OVMF GUIDed footer table entry with
// the given GUID. The table sits right before the last 32 bytes of the
// image and is read backwards: each entry is data, u16 entry size (data +
// 18), GUID; the footer itself is u16 table size, footer GUID.
func footerEntry(fw []byte, want [16]byte) ([]byte, error) {
	const tail = 32
	if len(fw) < tail+18 {
		return nil, fmt.Errorf("reading the firmware footer table: image is %d bytes, too small", len(fw))
	}
	footerEnd := len(fw) - tail
	if [16]byte(fw[footerEnd-16:footerEnd]) != mustGUID(footerGUID) {
		return nil, fmt.Errorf("reading the firmware footer table: no table GUID %s at %#x (not an OVMF/TDVF image?)", footerGUID, footerEnd-16)
	}
	total := int(binary.LittleEndian.Uint16(fw[footerEnd-18:]))
	if total < 18 || total > footerEnd {
		return nil, fmt.Errorf("reading the firmware footer table: size %d does not fit the image", total)
	}
	start := footerEnd - total
	for pos := footerEnd - 18; pos > start; {
		if pos-start < 18 {
			return nil, fmt.Errorf("reading the firmware footer table: %d stray bytes at %#x", pos-start, start)
		}
		guid := [16]byte(fw[pos-16 : pos])
		size := int(binary.LittleEndian.Uint16(fw[pos-18:]))
		if size < 18 || size > pos-start {
			return nil, fmt.Errorf("reading the firmware footer table: entry %s at %#x has size %d", formatGUID(guid), pos-16, size)
		}
		if guid == want {
			return fw[pos-size : pos-18], nil
		}
		pos -= size
	}
	return nil, fmt.Errorf("reading the firmware footer table: no entry %s (not a TDX firmware image?)", formatGUID(want))
}

// mustGUID encodes a textual GUID the way EFI stores it (the first three
// fields little endian).
func mustGUID(s string) [16]byte {
	g, err := parseGUID(s)
	if err != nil {
		panic(err)
	}
	return g
}

func parseGUID(s string) ([16]byte, error) {
	var g [16]byte
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return g, fmt.Errorf("parsing GUID %q: want xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", s)
	}
	hex := s[0:8] + s[9:13] + s[14:18] + s[19:23] + s[24:36]
	var raw [16]byte
	for i := range raw {
		hi, ok1 := unhex(hex[2*i])
		lo, ok2 := unhex(hex[2*i+1])
		if !ok1 || !ok2 {
			return g, fmt.Errorf("parsing GUID %q: not hexadecimal", s)
		}
		raw[i] = hi<<4 | lo
	}
	g = raw
	g[0], g[1], g[2], g[3] = raw[3], raw[2], raw[1], raw[0]
	g[4], g[5] = raw[5], raw[4]
	g[6], g[7] = raw[7], raw[6]
	return g, nil
}

func formatGUID(g [16]byte) string {
	return fmt.Sprintf("%02x%02x%02x%02x-%02x%02x-%02x%02x-%x-%x",
		g[3], g[2], g[1], g[0], g[5], g[4], g[7], g[6], g[8:10], g[10:16])
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
