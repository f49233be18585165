package verify

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-sev-guest/abi"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	tdxdata "github.com/google/go-tdx-guest/testing/testdata"

	"github.com/veil-runtime/veil/attestation/evidence"
	"github.com/veil-runtime/veil/attestation/internal/snptest"
	"github.com/veil-runtime/veil/attestation/kbs"
)

var update = flag.Bool("update", false, "rewrite testdata/trustee-snp/milan-evidence.json from the raw report")

// trusteeSNPJSON encodes a raw report the way guest-components' SNP
// attester does, with snptest's encoder (written apart from this
// package's decoder, so the two check each other).
func trusteeSNPJSON(t *testing.T, raw []byte, chain []snptest.TrusteeCert) []byte {
	t.Helper()
	out, err := snptest.TrusteeEvidence(raw, chain)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func certEntry(kind string, der []byte) snptest.TrusteeCert {
	return snptest.TrusteeCert{Kind: kind, DER: der}
}

// TestTrusteeSNPRealMilanReport: a real SEV-SNP report from an AMD EPYC
// Milan host (dstack's CC0 fixture, captured 2026-06-17, report data
// "attest-test-fixture-2026"), in the encoding a Confidential Containers
// guest sends, verifies against AMD's real roots, and the report veil
// rebuilds from the JSON is the hardware's bytes exactly.
func TestTrusteeSNPRealMilanReport(t *testing.T) {
	dir := filepath.Join("testdata", "trustee-snp")
	raw, err := os.ReadFile(filepath.Join(dir, "milan-report.bin"))
	if err != nil {
		t.Fatal(err)
	}
	vcek, err := os.ReadFile(filepath.Join(dir, "milan-vcek.der"))
	if err != nil {
		t.Fatal(err)
	}
	fixture := filepath.Join(dir, "milan-evidence.json")
	if *update {
		if err := os.WriteFile(fixture, append(trusteeSNPJSON(t, raw, []snptest.TrusteeCert{certEntry("VCEK", vcek)}), '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ev, err := os.ReadFile(fixture)
	if err != nil {
		t.Fatal(err)
	}
	// The serde shape, as the sev crate writes it.
	for _, want := range []string{`{"attestation_report":{"version":3,"guest_svn":`, `"current_tcb":{"fmc":null,"bootloader":`, `"cpuid_fam_id":25,`, `"signature":{"r":[`, `"cert_chain":[{"cert_type":"VCEK","data":[48,`} {
		if !bytes.Contains(ev, []byte(want)) {
			t.Fatalf("fixture lacks %s", want)
		}
	}
	var parsed trusteeSNPEvidence
	if err := json.Unmarshal(ev, &parsed); err != nil {
		t.Fatal(err)
	}
	rebuilt, err := trusteeReportBytes(parsed.AttestationReport)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(rebuilt, raw) {
		t.Fatalf("rebuilt report differs from the hardware's bytes")
	}
	captured := func() time.Time { return time.Date(2026, 6, 18, 0, 0, 0, 0, time.UTC) }
	v := &SNP{Now: captured} // AMD's embedded roots
	c, err := v.Verify(context.Background(), ev)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if c.Tee != kbs.TeeSNP || c.Measurement != hex.EncodeToString(raw[0x90:0xC0]) || !strings.HasPrefix(c.ReportData, hex.EncodeToString([]byte("attest-test-fixture-2026"))) {
		t.Fatalf("claims = %+v", c)
	}

	// The raw-bytes forms of attestation_report give the same claims.
	var obj map[string]json.RawMessage
	_ = json.Unmarshal(ev, &obj)
	for name, form := range map[string]json.RawMessage{
		"base64":      json.RawMessage(`"` + base64.StdEncoding.EncodeToString(raw) + `"`),
		"byte values": must(json.Marshal(byteSeq(raw))),
	} {
		obj["attestation_report"] = form
		alt, _ := json.Marshal(obj)
		c2, err := v.Verify(context.Background(), alt)
		if err != nil || c2.Measurement != c.Measurement || c2.ReportData != c.ReportData {
			t.Errorf("attestation_report as %s: claims %+v, %v", name, c2, err)
		}
	}

	// A changed field no longer verifies, and a member the sev crate does
	// not write is refused by name.
	tampered := bytes.Replace(ev, []byte(`"guest_svn":`), []byte(`"guest_svn":1`), 1)
	if !bytes.Equal(tampered, ev) {
		if _, err := v.Verify(context.Background(), tampered); err == nil || !strings.Contains(err.Error(), "verifying sev-snp report signature") {
			t.Errorf("tampered guest_svn: %v", err)
		}
	}
	extra := bytes.Replace(ev, []byte(`"guest_svn":`), []byte(`"guest_nsvn":0,"guest_svn":`), 1)
	if _, err := v.Verify(context.Background(), extra); err == nil || !strings.Contains(err.Error(), `"guest_nsvn"`) {
		t.Errorf("unknown report member: %v", err)
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

// TestTrusteeSNPPolicyClaims: Trustee-encoded evidence signed by the test
// chain yields the same claims as veil's own encoding of the same report,
// and the broker's checks (pinned roots, endorsement TCB) apply to it.
func TestTrusteeSNPPolicyClaims(t *testing.T) {
	signer, err := snptest.NewSigner(created)
	if err != nil {
		t.Fatal(err)
	}
	report := snptest.Report{Measurement: [48]byte{7}, HostData: [32]byte{5}, Debug: true}
	report.ReportData[0] = 0xbb
	raw, err := signer.Sign(report)
	if err != nil {
		t.Fatal(err)
	}
	ev := trusteeSNPJSON(t, raw, []snptest.TrusteeCert{certEntry("VCEK", signer.VCEK()), certEntry("CRL", []byte{1})})
	// The sev crate writes CertType::OTHER(guid) as {"OTHER": "<guid>"}.
	ev = bytes.Replace(ev, []byte(`{"cert_type":"CRL"`), []byte(`{"cert_type":{"OTHER":"00000000-0000-0000-0000-000000000000"}`), 1)
	v := &SNP{Roots: signer.Roots(), Now: later}
	got, err := v.Verify(context.Background(), ev)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	want, err := v.Verify(context.Background(), snpEvidence(t, signer, report, true, false))
	if err != nil {
		t.Fatal(err)
	}
	gj, _ := json.Marshal(got)
	wj, _ := json.Marshal(want)
	if string(gj) != string(wj) || !got.Debug || got.HostData[:2] != "05" {
		t.Fatalf("trustee-encoded claims %s, veil-encoded %s", gj, wj)
	}
	rejects := []struct {
		name string
		v    *SNP
		ev   []byte
		want string
	}{
		{"no vcek anywhere", v, trusteeSNPJSON(t, raw, nil), "missing VCEK certificate"},
		{"real amd roots, test chain", &SNP{Now: later}, ev, "verifying sev-snp report signature"},
		{"unknown cert type", v, trusteeSNPJSON(t, raw, []snptest.TrusteeCert{certEntry("PEK", []byte{1})}), `cert_type: expected ARK, ASK, VCEK, VLEK, CRL, Empty or OTHER, seen "PEK"`},
		{"short measurement", v, bytes.Replace(ev, []byte(`"measurement":[7,`), []byte(`"measurement":[`), 1), "measurement: expected 48 bytes, seen 47"},
		{"byte out of range", v, bytes.Replace(ev, []byte(`"measurement":[7,`), []byte(`"measurement":[700,`), 1), "want 0..255"},
		{"report of wrong size", v, []byte(`{"attestation_report":"AAAA","cert_chain":null}`), "3 bytes, want 1184"},
		{"no report", v, []byte(`{"attestation_report":null,"cert_chain":null}`), "attestation_report: missing"},
	}
	for _, tt := range rejects {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.v.Verify(context.Background(), tt.ev)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Verify error = %v, want containing %q", err, tt.want)
			}
		})
	}
}

// TestSevTCBLayouts pins the TCB_VERSION byte layouts the sev crate
// decodes: Milan/Genoa without fmc, Turin with it.
func TestSevTCBLayouts(t *testing.T) {
	fmc := uint8(1)
	tests := []struct {
		tcb  sevTCB
		want uint64
	}{
		{sevTCB{Bootloader: 3, TEE: 0, SNP: 20, Microcode: 209}, 0xd114000000000003},
		{sevTCB{FMC: &fmc, Bootloader: 3, TEE: 2, SNP: 20, Microcode: 209}, 0xd100000014020301},
	}
	for _, tt := range tests {
		if got := tt.tcb.raw(); got != tt.want {
			t.Errorf("%+v.raw() = %#016x, want %#016x", tt.tcb, got, tt.want)
		}
	}
}

// TestTrusteeTDXEvidence: TDX evidence as guest-components' TDX attester
// sends it ({"cc_eventlog": base64 CCEL or null, "quote": base64}, members
// in that order) verifies; the event log is carried, not replayed.
func TestTrusteeTDXEvidence(t *testing.T) {
	quoteTime := func() time.Time { return time.Date(2023, time.July, 1, 1, 0, 0, 0, time.UTC) }
	q := base64.StdEncoding.EncodeToString(tdxdata.RawQuote)
	for _, ev := range []string{
		`{"cc_eventlog":"` + base64.StdEncoding.EncodeToString([]byte("CCEL table bytes")) + `","quote":"` + q + `"}`,
		`{"cc_eventlog":null,"quote":"` + q + `"}`,
	} {
		c, err := (&TDX{Now: quoteTime}).Verify(context.Background(), json.RawMessage(ev))
		if err != nil || c.Tee != kbs.TeeTDX || len(c.RTMRs) != 4 {
			t.Fatalf("Verify(%.60s...) = %+v, %v", ev, c, err)
		}
	}
	if _, err := (&TDX{Now: quoteTime}).Verify(context.Background(), json.RawMessage(`{"cc_eventlog":null,"quote":"not base64!"}`)); err == nil || !strings.Contains(err.Error(), "decoding tdx evidence quote") {
		t.Fatalf("bad quote: %v", err)
	}
}

// TestTrusteeSNPRoundTrip: what veil's guests send (evidence.TrusteeSNPEvidence)
// rebuilds to the same report bytes, for each report layout the sev crate
// knows: v2, v3 Milan, v5 Turin (fmc in the TCB, mitigation vectors).
func TestTrusteeSNPRoundTrip(t *testing.T) {
	milan, err := os.ReadFile(filepath.Join("testdata", "trustee-snp", "milan-report.bin"))
	if err != nil {
		t.Fatal(err)
	}
	turinTCB := binary.LittleEndian.Uint64([]byte{1, 4, 2, 27, 0, 0, 0, 88}) // fmc, bl, tee, snp, ..., ucode
	turin := &spb.Report{
		Version: 5, GuestSvn: 2, Policy: 0x30000, FamilyId: make([]byte, 16), ImageId: make([]byte, 16),
		SignatureAlgo: 1, CurrentTcb: turinTCB, PlatformInfo: 0x25, ReportData: bytes.Repeat([]byte{7}, 64),
		Measurement: bytes.Repeat([]byte{8}, 48), HostData: make([]byte, 32), IdKeyDigest: make([]byte, 48),
		AuthorKeyDigest: make([]byte, 48), ReportId: make([]byte, 32), ReportIdMa: make([]byte, 32),
		ReportedTcb: turinTCB, Cpuid1EaxFms: abi.FmsToCpuid1Eax(0x1A, 0x11, 0), ChipId: bytes.Repeat([]byte{9}, 64),
		CommittedTcb: turinTCB, CurrentMajor: 1, CurrentMinor: 55, CurrentBuild: 30, CommittedMajor: 1, CommittedMinor: 55,
		CommittedBuild: 29, LaunchTcb: turinTCB, LaunchMitVector: 3, CurrentMitVector: 7, Signature: bytes.Repeat([]byte{5}, abi.SignatureSize),
	}
	for i := 144; i < abi.SignatureSize; i++ {
		turin.Signature[i] = 0 // r and s only
	}
	turinRaw, err := abi.ReportToAbiBytes(turin)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := snptest.NewSigner(created)
	if err != nil {
		t.Fatal(err)
	}
	v2, err := signer.Sign(snptest.Report{Measurement: [48]byte{1}})
	if err != nil {
		t.Fatal(err)
	}
	for name, raw := range map[string][]byte{"v2": v2, "v3 milan": milan, "v5 turin": turinRaw} {
		ev, err := evidence.TrusteeSNPEvidence(raw, nil)
		if err != nil {
			t.Fatal(err)
		}
		if name == "v5 turin" && !bytes.Contains(ev, []byte(`"current_tcb":{"fmc":1,"bootloader":4,"tee":2,"snp":27,"microcode":88}`)) {
			t.Errorf("turin tcb not in the sev crate's form: %.300s", ev)
		}
		var parsed trusteeSNPEvidence
		if err := json.Unmarshal(ev, &parsed); err != nil {
			t.Fatal(err)
		}
		back, err := trusteeReportBytes(parsed.AttestationReport)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !bytes.Equal(back, raw) {
			t.Errorf("%s: rebuilt report differs", name)
		}
	}
}
