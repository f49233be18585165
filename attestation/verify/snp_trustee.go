package verify

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/google/go-sev-guest/abi"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
)

// trusteeSNPEvidence is SEV-SNP evidence as Confidential Containers'
// guests send it and Trustee's SNP verifier reads it: guest-components'
// attester (attestation-agent/attester/src/snp) serialises
// {attestation_report: sev::firmware::guest::AttestationReport,
// cert_chain: Option<Vec<sev::firmware::host::CertTableEntry>>} with
// serde_json, where the report is the virtee/sev crate's (v6/v7) parsed
// struct, not its bytes. veil rebuilds the 1184 bytes from it — the
// signature is over those bytes, so a field decoded wrongly cannot verify —
// and then verifies exactly as for its own encoding. attestation_report may
// also be the raw report, as standard base64 or an array of byte values.
type trusteeSNPEvidence struct {
	AttestationReport json.RawMessage  `json:"attestation_report"`
	CertChain         []trusteeSNPCert `json:"cert_chain"`
}

// trusteeSNPCert is the sev crate's CertTableEntry: cert_type is a unit
// variant name ("ARK", "ASK", "VCEK", "VLEK", "CRL", "Empty") or
// {"OTHER": "<guid>"}; data is the DER as an array of byte values.
type trusteeSNPCert struct {
	CertType json.RawMessage `json:"cert_type"`
	Data     byteSeq         `json:"data"`
}

// sevReport is the serde form of the sev crate's AttestationReport:
// fixed-size arrays are arrays of byte values, the policy, platform info
// and key info bitfields are their integers, TCB versions are objects
// (fmc is set on Turin, whose TCB layout differs), cpuid_* (report v3+)
// and the mitigation vectors (v5+) may be null.
type sevReport struct {
	Version          uint32       `json:"version"`
	GuestSVN         uint32       `json:"guest_svn"`
	Policy           uint64       `json:"policy"`
	FamilyID         byteSeq      `json:"family_id"`
	ImageID          byteSeq      `json:"image_id"`
	VMPL             uint32       `json:"vmpl"`
	SigAlgo          uint32       `json:"sig_algo"`
	CurrentTCB       sevTCB       `json:"current_tcb"`
	PlatInfo         uint64       `json:"plat_info"`
	KeyInfo          uint32       `json:"key_info"`
	ReportData       byteSeq      `json:"report_data"`
	Measurement      byteSeq      `json:"measurement"`
	HostData         byteSeq      `json:"host_data"`
	IDKeyDigest      byteSeq      `json:"id_key_digest"`
	AuthorKeyDigest  byteSeq      `json:"author_key_digest"`
	ReportID         byteSeq      `json:"report_id"`
	ReportIDMA       byteSeq      `json:"report_id_ma"`
	ReportedTCB      sevTCB       `json:"reported_tcb"`
	CPUIDFamID       *uint8       `json:"cpuid_fam_id"`
	CPUIDModID       *uint8       `json:"cpuid_mod_id"`
	CPUIDStep        *uint8       `json:"cpuid_step"`
	ChipID           byteSeq      `json:"chip_id"`
	CommittedTCB     sevTCB       `json:"committed_tcb"`
	Current          sevVersion   `json:"current"`
	Committed        sevVersion   `json:"committed"`
	LaunchTCB        sevTCB       `json:"launch_tcb"`
	LaunchMitVector  *uint64      `json:"launch_mit_vector"`
	CurrentMitVector *uint64      `json:"current_mit_vector"`
	Signature        sevSignature `json:"signature"`
}

type sevTCB struct {
	FMC        *uint8 `json:"fmc"`
	Bootloader uint8  `json:"bootloader"`
	TEE        uint8  `json:"tee"`
	SNP        uint8  `json:"snp"`
	Microcode  uint8  `json:"microcode"`
}

// raw is the TCB_VERSION as the report holds it: Milan and Genoa
// [bootloader, tee, 0, 0, 0, 0, snp, microcode], Turin
// [fmc, bootloader, tee, snp, 0, 0, 0, microcode] (little-endian u64).
func (t sevTCB) raw() uint64 {
	b := [8]byte{t.Bootloader, t.TEE, 0, 0, 0, 0, t.SNP, t.Microcode}
	if t.FMC != nil {
		b = [8]byte{*t.FMC, t.Bootloader, t.TEE, t.SNP, 0, 0, 0, t.Microcode}
	}
	return binary.LittleEndian.Uint64(b[:])
}

type sevVersion struct {
	Major uint8 `json:"major"`
	Minor uint8 `json:"minor"`
	Build uint8 `json:"build"`
}

type sevSignature struct {
	R byteSeq `json:"r"`
	S byteSeq `json:"s"`
}

// byteSeq is bytes as serde writes a Rust byte array or Vec<u8>: a JSON
// array of integers 0..255. A standard base64 string is read too.
type byteSeq []byte

// MarshalJSON writes the serde form, an array of byte values.
func (b byteSeq) MarshalJSON() ([]byte, error) {
	ints := make([]int, len(b))
	for i, v := range b {
		ints[i] = int(v)
	}
	return json.Marshal(ints)
}

// UnmarshalJSON reads an array of byte values or a base64 string.
func (b *byteSeq) UnmarshalJSON(raw []byte) error {
	raw = bytes.TrimSpace(raw)
	if len(raw) > 0 && raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return err
		}
		d, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return fmt.Errorf("decoding base64 bytes: %w", err)
		}
		*b = d
		return nil
	}
	var ints []int
	if err := json.Unmarshal(raw, &ints); err != nil {
		return fmt.Errorf("want an array of byte values or base64: %w", err)
	}
	out := make([]byte, len(ints))
	for i, v := range ints {
		if v < 0 || v > 255 {
			return fmt.Errorf("byte %d is %d, want 0..255", i, v)
		}
		out[i] = byte(v)
	}
	*b = out
	return nil
}

// isTrusteeSNP reports whether evidence is in Trustee's encoding.
func isTrusteeSNP(raw json.RawMessage) bool {
	var probe map[string]json.RawMessage
	if json.Unmarshal(raw, &probe) != nil {
		return false
	}
	_, ok := probe["attestation_report"]
	return ok
}

// decodeTrusteeSNP turns Trustee-encoded evidence into go-sev-guest's
// attestation: the rebuilt raw report and the certificates by kind.
func decodeTrusteeSNP(raw json.RawMessage) (*spb.Attestation, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var ev trusteeSNPEvidence
	if err := dec.Decode(&ev); err != nil {
		return nil, fmt.Errorf("decoding sev-snp evidence (trustee encoding): %w", err)
	}
	report, err := trusteeReportBytes(ev.AttestationReport)
	if err != nil {
		return nil, err
	}
	pb, err := abi.ReportToProto(report)
	if err != nil {
		return nil, fmt.Errorf("parsing sev-snp attestation_report: %w", err)
	}
	chain := &spb.CertificateChain{}
	for i, c := range ev.CertChain {
		var kind string
		if json.Unmarshal(c.CertType, &kind) != nil {
			// {"OTHER": "<guid>"}: not a certificate veil uses.
			continue
		}
		switch kind {
		case "VCEK":
			chain.VcekCert = c.Data
		case "VLEK":
			chain.VlekCert = c.Data
		case "ASK":
			chain.AskCert = c.Data
		case "ARK":
			chain.ArkCert = c.Data
		case "CRL", "Empty":
		default:
			return nil, fmt.Errorf("sev-snp evidence cert_chain[%d].cert_type: expected ARK, ASK, VCEK, VLEK, CRL, Empty or OTHER, seen %q", i, kind)
		}
	}
	return &spb.Attestation{Report: pb, CertificateChain: chain}, nil
}

// trusteeReportBytes rebuilds the 1184-byte report from the
// attestation_report member.
func trusteeReportBytes(raw json.RawMessage) ([]byte, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, errors.New("sev-snp evidence attestation_report: missing")
	}
	if raw[0] != '{' {
		var b byteSeq
		if err := json.Unmarshal(raw, &b); err != nil {
			return nil, fmt.Errorf("decoding sev-snp evidence attestation_report: %w", err)
		}
		if len(b) != abi.ReportSize {
			return nil, fmt.Errorf("sev-snp evidence attestation_report: %d bytes, want %d", len(b), abi.ReportSize)
		}
		return b, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var r sevReport
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("decoding sev-snp evidence attestation_report (sev crate form): %w", err)
	}
	sizes := []struct {
		name string
		b    []byte
		n    int
	}{
		{"family_id", r.FamilyID, abi.FamilyIDSize}, {"image_id", r.ImageID, abi.ImageIDSize},
		{"report_data", r.ReportData, abi.ReportDataSize}, {"measurement", r.Measurement, abi.MeasurementSize},
		{"host_data", r.HostData, abi.HostDataSize}, {"id_key_digest", r.IDKeyDigest, abi.IDKeyDigestSize},
		{"author_key_digest", r.AuthorKeyDigest, abi.AuthorKeyDigestSize}, {"report_id", r.ReportID, abi.ReportIDSize},
		{"report_id_ma", r.ReportIDMA, abi.ReportIDMASize}, {"chip_id", r.ChipID, abi.ChipIDSize},
		{"signature.r", r.Signature.R, 72}, {"signature.s", r.Signature.S, 72},
	}
	var bad []string
	for _, s := range sizes {
		if len(s.b) != s.n {
			bad = append(bad, fmt.Sprintf("%s: expected %d bytes, seen %d", s.name, s.n, len(s.b)))
		}
	}
	if len(bad) > 0 {
		return nil, fmt.Errorf("sev-snp evidence attestation_report: %s", strings.Join(bad, "; "))
	}
	sig := make([]byte, abi.SignatureSize)
	copy(sig, r.Signature.R)
	copy(sig[72:], r.Signature.S)
	pb := &spb.Report{
		Version:          r.Version,
		GuestSvn:         r.GuestSVN,
		Policy:           r.Policy,
		FamilyId:         r.FamilyID,
		ImageId:          r.ImageID,
		Vmpl:             r.VMPL,
		SignatureAlgo:    r.SigAlgo,
		CurrentTcb:       r.CurrentTCB.raw(),
		PlatformInfo:     r.PlatInfo,
		SignerInfo:       r.KeyInfo,
		ReportData:       r.ReportData,
		Measurement:      r.Measurement,
		HostData:         r.HostData,
		IdKeyDigest:      r.IDKeyDigest,
		AuthorKeyDigest:  r.AuthorKeyDigest,
		ReportId:         r.ReportID,
		ReportIdMa:       r.ReportIDMA,
		ReportedTcb:      r.ReportedTCB.raw(),
		ChipId:           r.ChipID,
		CommittedTcb:     r.CommittedTCB.raw(),
		CurrentBuild:     uint32(r.Current.Build),
		CurrentMinor:     uint32(r.Current.Minor),
		CurrentMajor:     uint32(r.Current.Major),
		CommittedBuild:   uint32(r.Committed.Build),
		CommittedMinor:   uint32(r.Committed.Minor),
		CommittedMajor:   uint32(r.Committed.Major),
		LaunchTcb:        r.LaunchTCB.raw(),
		LaunchMitVector:  deref(r.LaunchMitVector),
		CurrentMitVector: deref(r.CurrentMitVector),
		Signature:        sig,
	}
	if r.CPUIDFamID != nil && r.CPUIDModID != nil && r.CPUIDStep != nil {
		pb.Cpuid1EaxFms = abi.FmsToCpuid1Eax(*r.CPUIDFamID, *r.CPUIDModID, *r.CPUIDStep)
	}
	out, err := abi.ReportToAbiBytes(pb)
	if err != nil {
		return nil, fmt.Errorf("rebuilding sev-snp report from attestation_report: %w", err)
	}
	return out, nil
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
