package evidence

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/go-sev-guest/abi"

	"github.com/veil-runtime/veil/attestation/internal/snptest"
)

// trusteeSNP is what a test reads back from TrusteeSNPEvidence.
type trusteeSNP struct {
	AttestationReport struct {
		ReportData []int `json:"report_data"`
	} `json:"attestation_report"`
	CertChain []struct {
		CertType json.RawMessage `json:"cert_type"`
		Data     []int           `json:"data"`
	} `json:"cert_chain"`
}

func decodeTrusteeSNP(t *testing.T, raw []byte) trusteeSNP {
	t.Helper()
	var ev trusteeSNP
	if err := json.Unmarshal(raw, &ev); err != nil {
		t.Fatalf("decoding evidence: %v\n%s", err, raw)
	}
	return ev
}

// certsOf returns the evidence's certificates by kind.
func (ev trusteeSNP) certsOf() map[string][]byte {
	out := map[string][]byte{}
	for _, c := range ev.CertChain {
		b := make([]byte, len(c.Data))
		for i, v := range c.Data {
			b[i] = byte(v)
		}
		out[string(c.CertType)] = b
	}
	return out
}

// TestTrusteeSNPEvidenceIsSevCrateForm: veil's guest encoding and the
// test-side encoder (snptest, written apart) agree byte for byte on a
// signed report, and the host's certificate table becomes cert_chain
// entries by kind.
func TestTrusteeSNPEvidenceIsSevCrateForm(t *testing.T) {
	s, err := snptest.NewSigner(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := s.Sign(snptest.Report{Measurement: [48]byte{3}, ReportData: [64]byte{0x42}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := TrusteeSNPEvidence(raw, nil)
	if err != nil {
		t.Fatal(err)
	}
	want, err := snptest.TrusteeEvidence(raw, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("encodings differ:\n%s\n%s", got, want)
	}
	withCerts, err := TrusteeSNPEvidence(raw, s.Certs)
	if err != nil {
		t.Fatal(err)
	}
	var table abi.CertTable
	if err := table.Unmarshal(s.Certs); err != nil {
		t.Fatal(err)
	}
	certs := decodeTrusteeSNP(t, withCerts).certsOf()
	for guid, name := range map[string]string{abi.VcekGUID: `"VCEK"`, abi.AskGUID: `"ASK"`, abi.ArkGUID: `"ARK"`} {
		der, err := table.GetByGUIDString(guid)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(certs[name], der) {
			t.Errorf("cert_chain %s: %d bytes, want the table's %d", name, len(certs[name]), len(der))
		}
	}
	if _, err := TrusteeSNPEvidence(raw[:100], nil); err == nil {
		t.Error("short report accepted")
	}
	if _, err := TrusteeSNPEvidence(raw, []byte{1, 2, 3}); err == nil {
		t.Error("garbage certificate table accepted")
	}
}
