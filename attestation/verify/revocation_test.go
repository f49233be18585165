package verify

import (
	"context"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tdx-guest/pcs"

	"github.com/veil-runtime/veil/attestation/internal/snptest"
)

// TestSNPRecordedCRL: with a recorded AMD CRL the broker refuses reports
// whose VCEK or ASK it revokes, and a CRL the pinned ARK did not sign.
func TestSNPRecordedCRL(t *testing.T) {
	signer, err := snptest.NewSigner(created)
	if err != nil {
		t.Fatal(err)
	}
	report := snptest.Report{Measurement: [48]byte{1}}
	crl := func(ask, vcek, forge bool) *x509.RevocationList {
		der, err := signer.CRL(later(), ask, vcek)
		if err != nil {
			t.Fatal(err)
		}
		if forge {
			der[len(der)-1] ^= 1 // the signature's last byte
		}
		// Through the file loader, as serve --snp-crl reads it.
		path := filepath.Join(t.TempDir(), "crl.der")
		if err := os.WriteFile(path, der, 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := LoadCRL(path)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	tests := []struct {
		name string
		crl  *x509.RevocationList
		want string // "" accepts
	}{
		{"nothing revoked", crl(false, false, false), ""},
		{"vcek revoked", crl(false, true, false), "sev-snp endorsement key: expected a certificate the AMD CRL does not revoke, seen serial"},
		{"ask revoked", crl(true, false, false), "ASK was revoked"},
		{"crl not signed by the pinned ark", crl(false, false, true), "CRL is not signed by ARK"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Fresh roots each time: go-sev-guest caches the CRL in them.
			v := &SNP{Roots: signer.Roots(), Now: later, CRL: tt.crl}
			_, err := v.Verify(context.Background(), snpEvidence(t, signer, report, true, false))
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Verify = %v, want %q", err, tt.want)
			}
		})
	}
	if _, err := LoadCRL(filepath.Join(t.TempDir(), "none")); err == nil {
		t.Fatal("missing crl file loaded")
	}
	// A CRL past its next update (a month after later()) could miss a
	// revocation since: every report is refused until a fresh one is
	// recorded.
	stale := &SNP{Roots: signer.Roots(), Now: func() time.Time { return later().AddDate(0, 1, 1) }, CRL: crl(false, false, false)}
	if _, err := stale.Verify(context.Background(), snpEvidence(t, signer, report, true, false)); err == nil || !strings.Contains(err.Error(), "expected to be current, seen next update") {
		t.Fatalf("Verify with a stale CRL = %v, want a refusal naming its next update", err)
	}
}

// TestCollateralComplete: a production broker wants all four kinds of
// TDX collateral and names the missing ones.
func TestCollateralComplete(t *testing.T) {
	full := map[string]CollateralResponse{
		pcs.TcbInfoURL("50806f000000"): {},
		pcs.QeIdentityURL():            {},
		pcs.PckCrlURL("platform"):      {},
		"https://certificates.trustedservices.intel.com/IntelSGXRootCA.der": {},
	}
	if err := (&Collateral{Responses: full}).Complete(); err != nil {
		t.Fatalf("Complete: %v", err)
	}
	delete(full, pcs.QeIdentityURL())
	delete(full, pcs.PckCrlURL("platform"))
	err := (&Collateral{Responses: full}).Complete()
	if err == nil || !strings.Contains(err.Error(), "missing QE identity") || !strings.Contains(err.Error(), "PCK CRL") || strings.Contains(err.Error(), "TCB info (") {
		t.Fatalf("Complete = %v", err)
	}
	if !(&TDX{Collateral: &Collateral{}}).ChecksCollateral() || (&TDX{}).ChecksCollateral() {
		t.Fatal("ChecksCollateral")
	}
}
