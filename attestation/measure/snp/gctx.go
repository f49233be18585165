package snp

import (
	"crypto/sha512"
	"encoding/binary"
	"fmt"
)

// PageSize is the granularity of every SNP measurement.
const PageSize = 4096

// DigestSize is the size of an SNP launch digest (SHA-384).
const DigestSize = sha512.Size384

// Digest is an SNP launch digest (MEASUREMENT in the attestation report).
type Digest [DigestSize]byte

// PageType is the type of a page in SNP_LAUNCH_UPDATE (SNP ABI, PAGE_INFO).
type PageType uint8

// Page types.
const (
	PageNormal     PageType = 1
	PageVMSA       PageType = 2
	PageZero       PageType = 3
	PageUnmeasured PageType = 4
	PageSecrets    PageType = 5
	PageCPUID      PageType = 6
)

// pageInfoLen is the size of the PAGE_INFO structure that is hashed.
const pageInfoLen = 0x70

// GCTX is the guest context's launch digest as the platform extends it.
// The zero value starts from 48 zero bytes.
type GCTX struct {
	ld Digest
}

// NewGCTX starts from seed (an OVMF-only digest, see OVMFDigest).
func NewGCTX(seed Digest) *GCTX { return &GCTX{ld: seed} }

// Digest is the launch digest so far.
func (g *GCTX) Digest() Digest { return g.ld }

// Update extends the digest with one page: ld = SHA-384(PAGE_INFO), where
// PAGE_INFO is ld, contents, its own length, the page type, is_imi and the
// VMPL permissions (all 0 here), and the guest physical address.
func (g *GCTX) Update(t PageType, gpa uint64, contents Digest) {
	var b [pageInfoLen]byte
	copy(b[0:48], g.ld[:])
	copy(b[48:96], contents[:])
	binary.LittleEndian.PutUint16(b[96:], pageInfoLen)
	b[98] = byte(t)
	// b[99] is_imi, b[100..103] VMPL3..1 permissions and a reserved byte: 0.
	binary.LittleEndian.PutUint64(b[104:], gpa)
	g.ld = sha512.Sum384(b[:])
}

// UpdateNormalPages measures data, whose length must be a multiple of
// PageSize, as normal pages from gpa up.
func (g *GCTX) UpdateNormalPages(gpa uint64, data []byte) error {
	if len(data)%PageSize != 0 {
		return fmt.Errorf("measuring %d bytes at %#x: not a multiple of the %d-byte page", len(data), gpa, PageSize)
	}
	for off := 0; off < len(data); off += PageSize {
		g.Update(PageNormal, gpa+uint64(off), sha512.Sum384(data[off:off+PageSize]))
	}
	return nil
}

// UpdateVMSA measures one VMSA page at gpa.
func (g *GCTX) UpdateVMSA(gpa uint64, page []byte) {
	g.Update(PageVMSA, gpa, sha512.Sum384(page))
}

// UpdateEmptyPages measures size bytes from gpa as pages of type t whose
// contents field is zero (zero, unmeasured, secrets and CPUID pages).
func (g *GCTX) UpdateEmptyPages(t PageType, gpa uint64, size uint64) error {
	if size%PageSize != 0 {
		return fmt.Errorf("measuring %d bytes of page type %d at %#x: not a multiple of the %d-byte page", size, t, gpa, PageSize)
	}
	for off := uint64(0); off < size; off += PageSize {
		g.Update(t, gpa+off, Digest{})
	}
	return nil
}

// OVMFDigest is the digest of the firmware alone: every page of fw as a
// normal page at 4 GiB minus its size, from 48 zero bytes. It seeds the
// rest of the measurement (sev-snp-measure's --snp-ovmf-hash).
func OVMFDigest(fw []byte) (Digest, error) {
	var g GCTX
	if err := g.UpdateNormalPages(FirmwareGPA(len(fw)), fw); err != nil {
		return Digest{}, fmt.Errorf("measuring the firmware: %w", err)
	}
	return g.Digest(), nil
}

// FirmwareGPA is where QEMU maps a firmware image of size bytes: it ends at
// 4 GiB.
func FirmwareGPA(size int) uint64 { return 1<<32 - uint64(size) }
