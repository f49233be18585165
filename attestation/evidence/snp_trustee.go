package evidence

import (
	"encoding/binary"
	"encoding/json"
	"fmt"

	"github.com/google/go-sev-guest/abi"
)

// SEV-SNP evidence goes out in the encoding Confidential Containers'
// guests use, so a Trustee broker reads it as well as veil-kbs:
// guest-components' SNP attester (attestation-agent/attester/src/snp)
// sends serde_json of {attestation_report: the virtee/sev crate's (v6/v7)
// AttestationReport, cert_chain: Option<Vec<CertTableEntry>>}, which
// Trustee's SNP verifier deserialises and re-encodes to check the
// signature. The Go types below follow those structs' serde form: the
// report's fields in the crate's order, byte arrays as arrays of integers,
// the policy/platform-info/key-info bitfields as integers, TCB versions as
// objects. veil-kbs rebuilds the raw report from it (verify package).

// serdeBytes is a byte string as serde writes a Rust array or Vec<u8>.
type serdeBytes []byte

// MarshalJSON writes an array of byte values.
func (b serdeBytes) MarshalJSON() ([]byte, error) {
	ints := make([]int, len(b))
	for i, v := range b {
		ints[i] = int(v)
	}
	return json.Marshal(ints)
}

type serdeTCB struct {
	FMC        *uint8 `json:"fmc"`
	Bootloader uint8  `json:"bootloader"`
	TEE        uint8  `json:"tee"`
	SNP        uint8  `json:"snp"`
	Microcode  uint8  `json:"microcode"`
}

type serdeVersion struct {
	Major uint8 `json:"major"`
	Minor uint8 `json:"minor"`
	Build uint8 `json:"build"`
}

type serdeSignature struct {
	R serdeBytes `json:"r"`
	S serdeBytes `json:"s"`
}

type serdeReport struct {
	Version          uint32         `json:"version"`
	GuestSVN         uint32         `json:"guest_svn"`
	Policy           uint64         `json:"policy"`
	FamilyID         serdeBytes     `json:"family_id"`
	ImageID          serdeBytes     `json:"image_id"`
	VMPL             uint32         `json:"vmpl"`
	SigAlgo          uint32         `json:"sig_algo"`
	CurrentTCB       serdeTCB       `json:"current_tcb"`
	PlatInfo         uint64         `json:"plat_info"`
	KeyInfo          uint32         `json:"key_info"`
	ReportData       serdeBytes     `json:"report_data"`
	Measurement      serdeBytes     `json:"measurement"`
	HostData         serdeBytes     `json:"host_data"`
	IDKeyDigest      serdeBytes     `json:"id_key_digest"`
	AuthorKeyDigest  serdeBytes     `json:"author_key_digest"`
	ReportID         serdeBytes     `json:"report_id"`
	ReportIDMA       serdeBytes     `json:"report_id_ma"`
	ReportedTCB      serdeTCB       `json:"reported_tcb"`
	CPUIDFamID       *uint8         `json:"cpuid_fam_id"`
	CPUIDModID       *uint8         `json:"cpuid_mod_id"`
	CPUIDStep        *uint8         `json:"cpuid_step"`
	ChipID           serdeBytes     `json:"chip_id"`
	CommittedTCB     serdeTCB       `json:"committed_tcb"`
	Current          serdeVersion   `json:"current"`
	Committed        serdeVersion   `json:"committed"`
	LaunchTCB        serdeTCB       `json:"launch_tcb"`
	LaunchMitVector  *uint64        `json:"launch_mit_vector"`
	CurrentMitVector *uint64        `json:"current_mit_vector"`
	Signature        serdeSignature `json:"signature"`
}

// serdeCert is a CertTableEntry: cert_type is the CertType variant, a
// name or {"OTHER": "<guid>"}.
type serdeCert struct {
	CertType any        `json:"cert_type"`
	Data     serdeBytes `json:"data"`
}

// Names of the sev crate's CertType variants by GHCB certificate GUID.
var certTypes = map[string]string{
	abi.VcekGUID: "VCEK",
	abi.VlekGUID: "VLEK",
	abi.AskGUID:  "ASK",
	abi.ArkGUID:  "ARK",
}

// TrusteeSNPEvidence encodes a raw report and the host's GHCB certificate
// table (may be empty) in Confidential Containers' SNP evidence encoding.
// The TCB versions are decoded by the report's CPU family: Turin (family
// 0x1A, from a v3+ report's cpuid fields) has an FMC byte and another
// layout, as the sev crate decodes it.
func TrusteeSNPEvidence(report, certTable []byte) (json.RawMessage, error) {
	if len(report) != abi.ReportSize {
		return nil, fmt.Errorf("sev-snp report is %d bytes, want %d", len(report), abi.ReportSize)
	}
	le32 := func(off int) uint32 { return binary.LittleEndian.Uint32(report[off:]) }
	le64 := func(off int) uint64 { return binary.LittleEndian.Uint64(report[off:]) }
	b := func(lo, hi int) serdeBytes { return serdeBytes(report[lo:hi]) }
	version := le32(0x00)
	turin := version >= 3 && report[0x188] == 0x1A
	tcb := func(off int) serdeTCB {
		t := report[off : off+8]
		if turin {
			fmc := t[0]
			return serdeTCB{FMC: &fmc, Bootloader: t[1], TEE: t[2], SNP: t[3], Microcode: t[7]}
		}
		return serdeTCB{Bootloader: t[0], TEE: t[1], SNP: t[6], Microcode: t[7]}
	}
	r := serdeReport{
		Version: version, GuestSVN: le32(0x04), Policy: le64(0x08),
		FamilyID: b(0x10, 0x20), ImageID: b(0x20, 0x30), VMPL: le32(0x30), SigAlgo: le32(0x34),
		CurrentTCB: tcb(0x38), PlatInfo: le64(0x40), KeyInfo: le32(0x48),
		ReportData: b(0x50, 0x90), Measurement: b(0x90, 0xC0), HostData: b(0xC0, 0xE0),
		IDKeyDigest: b(0xE0, 0x110), AuthorKeyDigest: b(0x110, 0x140),
		ReportID: b(0x140, 0x160), ReportIDMA: b(0x160, 0x180), ReportedTCB: tcb(0x180),
		ChipID: b(0x1A0, 0x1E0), CommittedTCB: tcb(0x1E0),
		Current:   serdeVersion{Build: report[0x1E8], Minor: report[0x1E9], Major: report[0x1EA]},
		Committed: serdeVersion{Build: report[0x1EC], Minor: report[0x1ED], Major: report[0x1EE]},
		LaunchTCB: tcb(0x1F0),
		Signature: serdeSignature{R: b(0x2A0, 0x2A0+72), S: b(0x2A0+72, 0x2A0+144)},
	}
	if version >= 3 {
		fam, mod, step := report[0x188], report[0x189], report[0x18A]
		r.CPUIDFamID, r.CPUIDModID, r.CPUIDStep = &fam, &mod, &step
	}
	if version >= 5 {
		l, c := le64(0x1F8), le64(0x200)
		r.LaunchMitVector, r.CurrentMitVector = &l, &c
	}
	var chain []serdeCert
	if len(certTable) > 0 {
		var table abi.CertTable
		if err := table.Unmarshal(certTable); err != nil {
			return nil, fmt.Errorf("parsing the host's sev-snp certificate table: %w", err)
		}
		for _, e := range table.Entries {
			var kind any = map[string]string{"OTHER": e.GUID.String()}
			if name, ok := certTypes[e.GUID.String()]; ok {
				kind = name
			}
			chain = append(chain, serdeCert{CertType: kind, Data: e.RawCert})
		}
	}
	raw, err := json.Marshal(struct {
		AttestationReport serdeReport `json:"attestation_report"`
		CertChain         []serdeCert `json:"cert_chain"`
	}{r, chain})
	if err != nil {
		return nil, fmt.Errorf("encoding sev-snp evidence: %w", err)
	}
	return raw, nil
}
