package evidence

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	tdxdata "github.com/google/go-tdx-guest/testing/testdata"

	"github.com/veil-runtime/veil/attestation/initdata"
	"github.com/veil-runtime/veil/attestation/internal/snptest"
	"github.com/veil-runtime/veil/attestation/kbs"
)

var discard = slog.New(slog.DiscardHandler)

var doc = []byte("version = \"0.1.0\"\nalgorithm = \"sha256\"\n")

func TestSNPEvidenceBindsReportData(t *testing.T) {
	s, err := snptest.NewSigner(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	a := NewSNP(&snptest.QuoteProvider{Signer: s, Template: snptest.Report{HostData: initdata.SNPHostData(doc)}}, discard)
	raw, err := a.Evidence(context.Background(), [64]byte{0x42})
	if err != nil {
		t.Fatal(err)
	}
	ev := decodeTrusteeSNP(t, raw)
	if len(ev.AttestationReport.ReportData) != 64 || ev.AttestationReport.ReportData[0] != 0x42 || len(ev.certsOf()[`"VCEK"`]) == 0 || a.Tee() != kbs.TeeSNP {
		t.Fatalf("evidence = report data %v, %d certificates", ev.AttestationReport.ReportData, len(ev.CertChain))
	}
	if err := CheckInitData(context.Background(), a, doc); err != nil {
		t.Fatalf("CheckInitData with the launched document: %v", err)
	}
	err = CheckInitData(context.Background(), a, append([]byte("# swapped\n"), doc...))
	if err == nil || !strings.Contains(err.Error(), "SNP HOSTDATA") {
		t.Fatalf("CheckInitData with a swapped document: %v", err)
	}
	if err := CheckInitData(context.Background(), a, nil); err == nil {
		t.Fatal("CheckInitData accepted a missing document while HOSTDATA is set")
	}
}

type fakeTDX struct{ quote []byte }

func (f fakeTDX) IsSupported() error                   { return nil }
func (f fakeTDX) GetRawQuote([64]byte) ([]byte, error) { return f.quote, nil }

func TestTDXEvidence(t *testing.T) {
	a := NewTDX(fakeTDX{quote: tdxdata.RawQuote}, nil, discard)
	raw, err := a.Evidence(context.Background(), [64]byte{})
	if err != nil {
		t.Fatal(err)
	}
	// Trustee's TDX verifier reads exactly these members.
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	if _, ok := m["cc_eventlog"]; !ok || m["quote"] != base64.StdEncoding.EncodeToString(tdxdata.RawQuote) {
		t.Fatalf("tdx evidence = %s", raw)
	}
}

func TestSampleEvidence(t *testing.T) {
	d := initdata.Digest(doc)
	a := NewSample(d[:], discard)
	raw, err := a.Evidence(context.Background(), [64]byte{7})
	if err != nil {
		t.Fatal(err)
	}
	var ev SampleEvidence
	if err := json.Unmarshal(raw, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Insecure != SampleWarning || ev.InitData != base64.StdEncoding.EncodeToString(d[:]) {
		t.Fatalf("sample evidence = %+v", ev)
	}
	if err := CheckInitData(context.Background(), a, doc); err != nil {
		t.Fatal(err)
	}
	if err := CheckInitData(context.Background(), NewSample(nil, discard), doc); err == nil {
		t.Fatal("CheckInitData accepted a document the sample was not launched with")
	}
	if err := CheckInitData(context.Background(), NewSample(nil, discard), nil); err != nil {
		t.Fatalf("no document, nothing bound: %v", err)
	}
}
