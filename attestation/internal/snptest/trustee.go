package snptest

import (
	"encoding/binary"
	"encoding/json"
	"fmt"

	"github.com/google/go-sev-guest/abi"
)

// TrusteeCert is one cert_chain entry of TrusteeEvidence: Kind is the sev
// crate's CertType name (ARK, ASK, VCEK, VLEK, CRL).
type TrusteeCert struct {
	Kind string
	DER  []byte
}

// bytesJSON is a byte string as serde writes a Rust array or Vec<u8>.
type bytesJSON []byte

func (b bytesJSON) MarshalJSON() ([]byte, error) {
	ints := make([]int, len(b))
	for i, v := range b {
		ints[i] = int(v)
	}
	return json.Marshal(ints)
}

type tcbJSON struct {
	FMC        *uint8 `json:"fmc"`
	Bootloader uint8  `json:"bootloader"`
	TEE        uint8  `json:"tee"`
	SNP        uint8  `json:"snp"`
	Microcode  uint8  `json:"microcode"`
}

type versionJSON struct {
	Major uint8 `json:"major"`
	Minor uint8 `json:"minor"`
	Build uint8 `json:"build"`
}

// reportJSON follows the field order of the sev crate's (v7)
// firmware::guest::AttestationReport.
type reportJSON struct {
	Version          uint32      `json:"version"`
	GuestSVN         uint32      `json:"guest_svn"`
	Policy           uint64      `json:"policy"`
	FamilyID         bytesJSON   `json:"family_id"`
	ImageID          bytesJSON   `json:"image_id"`
	VMPL             uint32      `json:"vmpl"`
	SigAlgo          uint32      `json:"sig_algo"`
	CurrentTCB       tcbJSON     `json:"current_tcb"`
	PlatInfo         uint64      `json:"plat_info"`
	KeyInfo          uint32      `json:"key_info"`
	ReportData       bytesJSON   `json:"report_data"`
	Measurement      bytesJSON   `json:"measurement"`
	HostData         bytesJSON   `json:"host_data"`
	IDKeyDigest      bytesJSON   `json:"id_key_digest"`
	AuthorKeyDigest  bytesJSON   `json:"author_key_digest"`
	ReportID         bytesJSON   `json:"report_id"`
	ReportIDMA       bytesJSON   `json:"report_id_ma"`
	ReportedTCB      tcbJSON     `json:"reported_tcb"`
	CPUIDFamID       *uint8      `json:"cpuid_fam_id"`
	CPUIDModID       *uint8      `json:"cpuid_mod_id"`
	CPUIDStep        *uint8      `json:"cpuid_step"`
	ChipID           bytesJSON   `json:"chip_id"`
	CommittedTCB     tcbJSON     `json:"committed_tcb"`
	Current          versionJSON `json:"current"`
	Committed        versionJSON `json:"committed"`
	LaunchTCB        tcbJSON     `json:"launch_tcb"`
	LaunchMitVector  *uint64     `json:"launch_mit_vector"`
	CurrentMitVector *uint64     `json:"current_mit_vector"`
	Signature        struct {
		R bytesJSON `json:"r"`
		S bytesJSON `json:"s"`
	} `json:"signature"`
}

type certJSON struct {
	CertType string    `json:"cert_type"`
	Data     bytesJSON `json:"data"`
}

// TrusteeEvidence encodes a raw report and certificates as a Confidential
// Containers guest sends SEV-SNP evidence (guest-components' SNP attester:
// serde_json of {attestation_report: sev AttestationReport, cert_chain:
// Option<Vec<CertTableEntry>>}), for a Milan or Genoa report (TCB
// versions without fmc). A nil certs writes cert_chain null.
func TrusteeEvidence(raw []byte, certs []TrusteeCert) ([]byte, error) {
	if len(raw) != abi.ReportSize {
		return nil, fmt.Errorf("report is %d bytes, want %d", len(raw), abi.ReportSize)
	}
	le32 := func(off int) uint32 { return binary.LittleEndian.Uint32(raw[off:]) }
	le64 := func(off int) uint64 { return binary.LittleEndian.Uint64(raw[off:]) }
	tcb := func(off int) tcbJSON {
		return tcbJSON{Bootloader: raw[off], TEE: raw[off+1], SNP: raw[off+6], Microcode: raw[off+7]}
	}
	b := func(lo, hi int) bytesJSON { return bytesJSON(raw[lo:hi]) }
	r := reportJSON{
		Version: le32(0x00), GuestSVN: le32(0x04), Policy: le64(0x08),
		FamilyID: b(0x10, 0x20), ImageID: b(0x20, 0x30), VMPL: le32(0x30), SigAlgo: le32(0x34),
		CurrentTCB: tcb(0x38), PlatInfo: le64(0x40), KeyInfo: le32(0x48),
		ReportData: b(0x50, 0x90), Measurement: b(0x90, 0xC0), HostData: b(0xC0, 0xE0),
		IDKeyDigest: b(0xE0, 0x110), AuthorKeyDigest: b(0x110, 0x140),
		ReportID: b(0x140, 0x160), ReportIDMA: b(0x160, 0x180), ReportedTCB: tcb(0x180),
		ChipID: b(0x1A0, 0x1E0), CommittedTCB: tcb(0x1E0),
		Current:   versionJSON{Build: raw[0x1E8], Minor: raw[0x1E9], Major: raw[0x1EA]},
		Committed: versionJSON{Build: raw[0x1EC], Minor: raw[0x1ED], Major: raw[0x1EE]},
		LaunchTCB: tcb(0x1F0),
	}
	if r.Version >= 3 {
		r.CPUIDFamID, r.CPUIDModID, r.CPUIDStep = &raw[0x188], &raw[0x189], &raw[0x18A]
	}
	if r.Version >= 5 {
		l, c := le64(0x1F8), le64(0x200)
		r.LaunchMitVector, r.CurrentMitVector = &l, &c
	}
	r.Signature.R, r.Signature.S = b(0x2A0, 0x2A0+72), b(0x2A0+72, 0x2A0+144)
	var chain []certJSON
	for _, c := range certs {
		chain = append(chain, certJSON{CertType: c.Kind, Data: c.DER})
	}
	return json.Marshal(struct {
		AttestationReport reportJSON `json:"attestation_report"`
		CertChain         []certJSON `json:"cert_chain"`
	}{r, chain})
}
