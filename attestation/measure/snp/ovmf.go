package snp

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// SectionType is the type of an OVMF SEV metadata section.
type SectionType uint32

// Metadata section types (OvmfPkg/ResetVector SEV metadata).
const (
	SectionSNPSecMem       SectionType = 1
	SectionSNPSecrets      SectionType = 2
	SectionCPUID           SectionType = 3
	SectionSVSMCAA         SectionType = 4
	SectionSNPKernelHashes SectionType = 0x10
)

func (t SectionType) String() string {
	switch t {
	case SectionSNPSecMem:
		return "SNP_SEC_MEM"
	case SectionSNPSecrets:
		return "SNP_SECRETS"
	case SectionCPUID:
		return "CPUID"
	case SectionSVSMCAA:
		return "SVSM_CAA"
	case SectionSNPKernelHashes:
		return "SNP_KERNEL_HASHES"
	}
	return fmt.Sprintf("section type %#x", uint32(t))
}

// Section is one entry of OVMF's SEV metadata: a guest physical range the
// platform measures (or validates) before the firmware runs.
type Section struct {
	GPA  uint32      `json:"gpa"`
	Size uint32      `json:"size"`
	Type SectionType `json:"type"`
}

// Metadata is what the launch takes from the firmware besides its bytes.
type Metadata struct {
	// HashTableGPA is where QEMU writes the SEV hash table (footer entry
	// SEV_HASH_TABLE_RV); 0 when the firmware has none.
	HashTableGPA uint32 `json:"hash_table_gpa"`
	// ResetEIP is where application processors start (footer entry
	// SEV_ES_RESET_BLOCK); 0 when the firmware has none.
	ResetEIP uint32 `json:"reset_eip"`
	// Sections are the SEV metadata sections, in table order.
	Sections []Section `json:"sections"`
}

// HasKernelHashes reports whether the firmware measures the kernel, initrd
// and command line (a SNP_KERNEL_HASHES section).
func (m Metadata) HasKernelHashes() bool {
	for _, s := range m.Sections {
		if s.Type == SectionSNPKernelHashes {
			return true
		}
	}
	return false
}

// GUIDs of the OVMF footer table and of QEMU's SEV hash table, in the
// canonical text form; guidBytes gives the mixed-endian form stored in
// binaries.
const (
	guidFooter          = "96b582de-1fb2-45f7-baea-a366c55a082d"
	guidSEVHashTableRV  = "7255371f-3a3b-4b04-927b-1da6efa8d454"
	guidSEVESResetBlock = "00f771de-1a7e-4fcb-890e-68c77e2fb44e"
	guidSEVMetadata     = "dc886566-984a-4798-a75e-5585a7bf67cc"
	guidHashTableHeader = "9438d606-4f22-4cc9-b479-a793d411fd21"
	guidKernelEntry     = "4de79437-abd2-427f-b835-d5b172d2045b"
	guidInitrdEntry     = "44baf731-3a2f-4bd7-9af1-41e29169781d"
	guidCmdlineEntry    = "97d02dd8-bd20-4c94-aa78-e7714d36ab2a"
)

// guidBytes is the EFI (mixed-endian) encoding of a GUID: the first three
// groups little-endian, the rest as written.
func guidBytes(s string) [16]byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	if err != nil || len(b) != 16 {
		panic("snp: bad GUID constant " + s)
	}
	var g [16]byte
	g[0], g[1], g[2], g[3] = b[3], b[2], b[1], b[0]
	g[4], g[5] = b[5], b[4]
	g[6], g[7] = b[7], b[6]
	copy(g[8:], b[8:])
	return g
}

// footerGUIDOffset is where the footer GUID ends, counted from the end of
// the image: the table sits right before the last 32 bytes (the reset
// vector).
const footerGUIDOffset = 32

// ErrNoFooter is returned by ParseMetadata for an image without OVMF's
// GUIDed footer table.
var ErrNoFooter = errors.New("no OVMF footer table (GUID " + guidFooter + ")")

// footerTable returns the entries of the OVMF footer table by GUID (the data
// of each entry, without its size and GUID).
func footerTable(fw []byte) (map[[16]byte][]byte, error) {
	end := len(fw) - footerGUIDOffset
	if end < 18 {
		return nil, ErrNoFooter
	}
	if g := guidBytes(guidFooter); !bytes.Equal(fw[end-16:end], g[:]) {
		return nil, ErrNoFooter
	}
	size := int(binary.LittleEndian.Uint16(fw[end-18:]))
	if size < 18 || size > end {
		return nil, fmt.Errorf("OVMF footer table size %d does not fit the %d-byte image", size, len(fw))
	}
	start := end - size
	entries := map[[16]byte][]byte{}
	for pos := end - 18; pos > start; {
		if pos-start < 18 {
			return nil, fmt.Errorf("OVMF footer table: truncated entry at offset %d", pos)
		}
		var g [16]byte
		copy(g[:], fw[pos-16:pos])
		n := int(binary.LittleEndian.Uint16(fw[pos-18:]))
		if n < 18 || n > pos-start {
			return nil, fmt.Errorf("OVMF footer table: entry at offset %d has size %d", pos, n)
		}
		entries[g] = fw[pos-n : pos-18]
		pos -= n
	}
	return entries, nil
}

// u32Entry reads a footer entry holding a little-endian u32.
func u32Entry(entries map[[16]byte][]byte, guid string) (uint32, bool, error) {
	d, ok := entries[guidBytes(guid)]
	if !ok {
		return 0, false, nil
	}
	if len(d) < 4 {
		return 0, false, fmt.Errorf("OVMF footer entry %s: %d bytes, want 4", guid, len(d))
	}
	return binary.LittleEndian.Uint32(d), true, nil
}

// ParseMetadata reads the OVMF footer table of fw: the SEV hash table
// address, the SEV-ES reset block and the SEV metadata sections. A firmware
// with a footer but no SEV metadata has no sections (plain SEV or SEV-ES
// can still measure it).
//
// The metadata header's own size field is not trusted to bound the items
// (some builds leave it 0); the item count and the image bound them.
func ParseMetadata(fw []byte) (Metadata, error) {
	var m Metadata
	entries, err := footerTable(fw)
	if err != nil {
		return m, err
	}
	if m.HashTableGPA, _, err = u32Entry(entries, guidSEVHashTableRV); err != nil {
		return m, err
	}
	if m.ResetEIP, _, err = u32Entry(entries, guidSEVESResetBlock); err != nil {
		return m, err
	}
	off, ok, err := u32Entry(entries, guidSEVMetadata)
	if err != nil || !ok {
		return m, err
	}
	if off < 16 || int(off) > len(fw) {
		return m, fmt.Errorf("OVMF SEV metadata offset %d does not fit the %d-byte image", off, len(fw))
	}
	h := fw[len(fw)-int(off):]
	if string(h[:4]) != "ASEV" {
		return m, fmt.Errorf("OVMF SEV metadata at offset %d from the end: signature %q, want \"ASEV\"", off, h[:4])
	}
	if v := binary.LittleEndian.Uint32(h[8:]); v != 1 {
		return m, fmt.Errorf("OVMF SEV metadata version %d, want 1", v)
	}
	n := int(binary.LittleEndian.Uint32(h[12:]))
	if n > (len(h)-16)/12 {
		return m, fmt.Errorf("OVMF SEV metadata: %d sections do not fit the image", n)
	}
	for i := range n {
		item := h[16+12*i:]
		m.Sections = append(m.Sections, Section{
			GPA:  binary.LittleEndian.Uint32(item[0:]),
			Size: binary.LittleEndian.Uint32(item[4:]),
			Type: SectionType(binary.LittleEndian.Uint32(item[8:])),
		})
	}
	return m, nil
}

// IsIGVM reports whether a firmware path names an IGVM file (QEMU's
// igvm-cfg) rather than an OVMF image; this package measures OVMF only.
func IsIGVM(path string) bool { return strings.HasSuffix(path, ".igvm") }
