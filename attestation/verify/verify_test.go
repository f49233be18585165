package verify

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	tdxtest "github.com/google/go-tdx-guest/testing"
	tdxdata "github.com/google/go-tdx-guest/testing/testdata"

	"github.com/veil-runtime/veil/attestation/evidence"
	"github.com/veil-runtime/veil/attestation/internal/snptest"
	"github.com/veil-runtime/veil/attestation/kbs"
)

var (
	created = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	later   = func() time.Time { return time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC) }
)

func snpEvidence(t *testing.T, s *snptest.Signer, r snptest.Report, withCerts, tamper bool) json.RawMessage {
	t.Helper()
	raw, err := s.Sign(r)
	if err != nil {
		t.Fatal(err)
	}
	if tamper {
		raw[0x90] ^= 1
	}
	ev := evidence.SNPEvidence{Report: base64.StdEncoding.EncodeToString(raw)}
	if withCerts {
		ev.CertTable = base64.StdEncoding.EncodeToString(s.Certs)
	}
	out, _ := json.Marshal(ev)
	return out
}

func TestSNP(t *testing.T) {
	signer, err := snptest.NewSigner(created)
	if err != nil {
		t.Fatal(err)
	}
	cache := t.TempDir()
	var chip [64]byte
	chip[0] = 0xc1
	if err := os.WriteFile(filepath.Join(cache, "vcek-"+hex.EncodeToString(chip[:])+"-0000000000000000.der"), signer.VCEK(), 0o600); err != nil {
		t.Fatal(err)
	}
	report := snptest.Report{Measurement: [48]byte{1, 2, 3}, HostData: [32]byte{9}, VMPL: 0, Debug: true, MigrateMA: true, ChipID: chip}
	report.ReportData[0] = 0xaa

	t.Run("signed by pinned test chain", func(t *testing.T) {
		v := &SNP{Roots: signer.Roots(), Now: later}
		c, err := v.Verify(context.Background(), snpEvidence(t, signer, report, true, false))
		if err != nil {
			t.Fatalf("Verify: %v", err)
		}
		if c.Tee != kbs.TeeSNP || !strings.HasPrefix(c.Measurement, "010203") || !strings.HasPrefix(c.HostData, "09") ||
			!strings.HasPrefix(c.ReportData, "aa") || !c.Debug || !c.Migration || c.VMPL != 0 || c.SNPTCB == nil || c.Insecure != "" {
			t.Fatalf("claims = %+v", c)
		}
	})
	t.Run("vcek from cache", func(t *testing.T) {
		v := &SNP{Roots: signer.Roots(), Now: later, VCEKCache: cache}
		if _, err := v.Verify(context.Background(), snpEvidence(t, signer, report, false, false)); err != nil {
			t.Fatalf("Verify: %v", err)
		}
	})
	rejects := []struct {
		name string
		v    *SNP
		ev   json.RawMessage
		want string
	}{
		{"tampered signature", &SNP{Roots: signer.Roots(), Now: later}, snpEvidence(t, signer, report, true, true), "signature"},
		{"unknown root (AMD's real roots pinned)", &SNP{Now: later}, snpEvidence(t, signer, report, true, false), "certificate chain"},
		{"no vcek anywhere", &SNP{Roots: signer.Roots(), Now: later}, snpEvidence(t, signer, report, false, false), "VCEK"},
		{"expired chain", &SNP{Roots: signer.Roots(), Now: func() time.Time { return created.AddDate(30, 0, 0) }}, snpEvidence(t, signer, report, true, false), "certificate"},
		{"reported tcb above the vcek's", &SNP{Roots: signer.Roots(), Now: later}, snpEvidence(t, signer, snptest.Report{ReportedTCB: 0x0300000000000003}, true, false), "reported_tcb"},
		{"not json", &SNP{}, json.RawMessage(`[`), "decoding"},
		{"short report", &SNP{}, json.RawMessage(`{"report":"AAAA"}`), "bytes"},
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

func tdxEvidence(quote []byte) json.RawMessage {
	out, _ := json.Marshal(evidence.TDXEvidence{Quote: base64.StdEncoding.EncodeToString(quote)})
	return out
}

func sampleCollateral(t *testing.T) *Collateral {
	t.Helper()
	c := &Collateral{Responses: map[string]CollateralResponse{}}
	for url, r := range tdxtest.TestGetter.Responses {
		c.Responses[url] = CollateralResponse{Header: r.Header, Body: r.Body}
	}
	// Round trip through the file format the broker reads.
	raw, err := json.Marshal(c.Responses)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "collateral.json")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	loaded, err := LoadCollateral(path)
	if err != nil {
		t.Fatal(err)
	}
	return loaded
}

func TestTDX(t *testing.T) {
	// go-tdx-guest's sample quote and collateral are valid on this date.
	quoteTime := func() time.Time { return time.Date(2023, time.July, 1, 1, 0, 0, 0, time.UTC) }
	t.Run("sample quote, chain to pinned intel root", func(t *testing.T) {
		v := &TDX{Now: quoteTime}
		c, err := v.Verify(context.Background(), tdxEvidence(tdxdata.RawQuote))
		if err != nil {
			t.Fatalf("Verify: %v", err)
		}
		if c.Tee != kbs.TeeTDX || len(c.Measurement) != 96 || len(c.RTMRs) != 4 || len(c.HostData) != 96 || len(c.ReportData) != 128 || c.VMPL != -1 {
			t.Fatalf("claims = %+v", c)
		}
	})
	tampered := append([]byte(nil), tdxdata.RawQuote...)
	tampered[48+200] ^= 1 // inside the TD quote body (MRTD)
	rejects := []struct {
		name string
		v    *TDX
		ev   json.RawMessage
		want string
	}{
		{"tampered quote", &TDX{Now: quoteTime}, tdxEvidence(tampered), "verifying tdx quote"},
		// go-tdx-guest's sample TCB info lists higher SVNs than its sample
		// quote carries: the collateral read from the file rejects the quote's
		// TCB as below every known level.
		{"tcb below collateral levels", &TDX{Collateral: sampleCollateral(t), Now: quoteTime}, tdxEvidence(tdxdata.RawQuote), "no matching TCB level"},
		{"collateral expired", &TDX{Collateral: sampleCollateral(t), Now: func() time.Time { return time.Date(2053, 7, 1, 0, 0, 0, 0, time.UTC) }}, tdxEvidence(tdxdata.RawQuote), "verifying tdx quote"},
		{"collateral missing", &TDX{Collateral: &Collateral{}, Now: quoteTime}, tdxEvidence(tdxdata.RawQuote), "no recorded response"},
		{"not a quote", &TDX{}, tdxEvidence([]byte("junk")), "parsing tdx quote"},
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

func TestSampleClaimsAreMarkedInsecure(t *testing.T) {
	ev := evidence.SampleEvidence{SVN: "1", ReportData: base64.StdEncoding.EncodeToString(make([]byte, 64)), InitData: base64.StdEncoding.EncodeToString([]byte{7})}
	raw, _ := json.Marshal(ev)
	c, err := Sample{}.Verify(context.Background(), raw)
	if err != nil {
		t.Fatal(err)
	}
	if c.Insecure == "" || c.Tee != kbs.TeeSample || c.HostData != "07" {
		t.Fatalf("claims = %+v", c)
	}
	short, _ := json.Marshal(evidence.SampleEvidence{SVN: "1", ReportData: base64.StdEncoding.EncodeToString([]byte{1, 2})})
	c, err = Sample{}.Verify(context.Background(), short)
	if err != nil || c.ReportData != "0102"+strings.Repeat("00", 62) {
		t.Fatalf("bare digest report data = %q, %v; want it zero padded to 64 bytes", c.ReportData, err)
	}
	long, _ := json.Marshal(evidence.SampleEvidence{ReportData: base64.StdEncoding.EncodeToString(make([]byte, 65))})
	if _, err := (Sample{}).Verify(context.Background(), long); err == nil {
		t.Fatal("65 bytes of report data accepted")
	}
}
