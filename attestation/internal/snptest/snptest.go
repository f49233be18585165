// Package snptest signs SEV-SNP attestation reports with go-sev-guest's
// test-only AMD certificate chain, for tests of the evidence, verify and
// broker packages. Nothing it signs verifies against AMD's real roots.
package snptest

import (
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"math/big"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	sevtest "github.com/google/go-sev-guest/testing"
	"github.com/google/go-sev-guest/verify/trust"
)

// Signer is a fake AMD secure processor.
type Signer struct {
	amd *sevtest.AmdSigner
	// Certs is the certificate table a host would attach (ARK, ASK, VCEK).
	Certs []byte
}

// NewSigner builds a test-only ARK -> ASK -> VCEK chain valid from
// created for seven years.
func NewSigner(created time.Time) (*Signer, error) {
	amd, err := sevtest.DefaultTestOnlyCertChain(kds.ProductName(abi.DefaultSevProduct()), created)
	if err != nil {
		return nil, fmt.Errorf("creating test amd chain: %w", err)
	}
	certs, err := amd.CertTableBytes()
	if err != nil {
		return nil, fmt.Errorf("encoding test cert table: %w", err)
	}
	return &Signer{amd: amd, Certs: certs}, nil
}

// ProductLine is the product line of the test chain.
func (s *Signer) ProductLine() string {
	return kds.ProductLine(abi.DefaultSevProduct())
}

// Roots pins this signer's ARK and ASK, as a broker configured to trust
// the test chain would.
func (s *Signer) Roots() map[string][]*trust.AMDRootCerts {
	r := trust.AMDRootCertsProduct(s.ProductLine())
	r.ProductCerts = &trust.ProductCerts{Ark: s.amd.Ark, Ask: s.amd.Ask, Asvk: s.amd.Asvk}
	return map[string][]*trust.AMDRootCerts{s.ProductLine(): {r}}
}

// VCEK is the DER of the test VCEK.
func (s *Signer) VCEK() []byte { return s.amd.Vcek.Raw }

// Report is what a test wants the fake secure processor to report.
type Report struct {
	ReportData  [64]byte
	Measurement [48]byte
	HostData    [32]byte
	ChipID      [64]byte
	Debug       bool
	MigrateMA   bool
	VMPL        uint32
	// ReportedTCB must equal the VCEK's TCB (zero for the default chain)
	// for the report to verify.
	ReportedTCB uint64
}

// Sign returns the raw, signed 1184-byte report.
func (s *Signer) Sign(r Report) ([]byte, error) {
	pb := &spb.Report{
		Version:         2,
		GuestSvn:        1,
		Policy:          abi.SnpPolicyToBytes(abi.SnpPolicy{SMT: true, Debug: r.Debug, MigrateMA: r.MigrateMA}),
		FamilyId:        make([]byte, 16),
		ImageId:         make([]byte, 16),
		Vmpl:            r.VMPL,
		SignatureAlgo:   abi.SignEcdsaP384Sha384,
		CurrentTcb:      r.ReportedTCB,
		SignerInfo:      abi.ComposeSignerInfo(abi.SignerInfo{SigningKey: abi.VcekReportSigner}),
		ReportData:      r.ReportData[:],
		Measurement:     r.Measurement[:],
		HostData:        r.HostData[:],
		IdKeyDigest:     make([]byte, 48),
		AuthorKeyDigest: make([]byte, 48),
		ReportId:        make([]byte, 32),
		ReportIdMa:      make([]byte, 32),
		ReportedTcb:     r.ReportedTCB,
		ChipId:          r.ChipID[:],
		CommittedTcb:    r.ReportedTCB,
		LaunchTcb:       r.ReportedTCB,
		Signature:       make([]byte, abi.SignatureSize),
	}
	raw, err := abi.ReportToAbiBytes(pb)
	if err != nil {
		return nil, fmt.Errorf("encoding test report: %w", err)
	}
	rr, ss, err := s.amd.Sign(abi.SignedComponent(raw))
	if err != nil {
		return nil, fmt.Errorf("signing test report: %w", err)
	}
	if err := abi.SetSignature(rr, ss, raw); err != nil {
		return nil, fmt.Errorf("setting test report signature: %w", err)
	}
	return raw, nil
}

// QuoteProvider implements go-sev-guest's client.QuoteProvider with the
// fake secure processor: each quote is Template with the requested report
// data, followed by the certificate table.
type QuoteProvider struct {
	Signer   *Signer
	Template Report
	// Tamper flips a measurement bit after signing.
	Tamper bool
}

// IsSupported implements client.QuoteProvider.
func (*QuoteProvider) IsSupported() bool { return true }

// Product implements client.QuoteProvider.
func (*QuoteProvider) Product() *spb.SevProduct { return abi.DefaultSevProduct() }

// GetRawQuote implements client.QuoteProvider.
func (q *QuoteProvider) GetRawQuote(reportData [64]byte) ([]byte, error) {
	r := q.Template
	r.ReportData = reportData
	raw, err := q.Signer.Sign(r)
	if err != nil {
		return nil, err
	}
	if q.Tamper {
		raw[0x90] ^= 1 // first byte of MEASUREMENT
	}
	return append(raw, q.Signer.Certs...), nil
}

// CRL is a CRL the test ARK signs, valid from now for a month, revoking
// the ASK and the VCEK when asked (DER, as AMD's KDS serves it).
func (s *Signer) CRL(now time.Time, revokeASK, revokeVCEK bool) ([]byte, error) {
	var revoked []x509.RevocationListEntry
	if revokeASK {
		revoked = append(revoked, x509.RevocationListEntry{SerialNumber: s.amd.Ask.SerialNumber, RevocationTime: now})
	}
	if revokeVCEK {
		revoked = append(revoked, x509.RevocationListEntry{SerialNumber: s.amd.Vcek.SerialNumber, RevocationTime: now})
	}
	issuer := *s.amd.Ark
	if len(issuer.SubjectKeyId) == 0 {
		issuer.SubjectKeyId = []byte("veil test ark")
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(1), ThisUpdate: now, NextUpdate: now.AddDate(0, 1, 0),
		SignatureAlgorithm: x509.SHA384WithRSAPSS, RevokedCertificateEntries: revoked,
	}, &issuer, s.amd.Keys.Ark)
	if err != nil {
		return nil, fmt.Errorf("signing test crl: %w", err)
	}
	return der, nil
}
