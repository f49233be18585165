package verify

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	sevverify "github.com/google/go-sev-guest/verify"
	"github.com/google/go-sev-guest/verify/trust"

	"github.com/veil-runtime/veil/attestation/evidence"
	"github.com/veil-runtime/veil/attestation/kbs"
)

// SNP verifies SEV-SNP evidence.
type SNP struct {
	// Roots pins the AMD root (ARK) and intermediate (ASK/ASVK)
	// certificates per product line. Nil means the AMD roots embedded in
	// go-sev-guest; the certificates a guest sends are never trusted as
	// roots.
	Roots map[string][]*trust.AMDRootCerts
	// VCEKCache is a directory of endorsement key certificates (DER) named
	// vcek-<chip id hex>-<reported tcb hex>.der, used when a report's
	// certificate table has none. The broker never fetches from AMD.
	VCEKCache string
	// CRL, when set, is AMD's CRL for the product line, recorded from
	// the KDS (LoadCRL): it must be signed by the pinned ARK, and reports
	// whose ASK or VCEK it revokes are refused. The broker never fetches
	// it.
	CRL *x509.RevocationList
	// Now is the time certificates are checked against; nil is time.Now.
	Now func() time.Time
}

var _ Verifier = (*SNP)(nil)

// recordedCRL answers go-sev-guest's CRL requests with the recorded CRL.
type recordedCRL []byte

func (c recordedCRL) Get(string) ([]byte, error) { return c, nil }

// LoadCRL reads a CRL recorded from AMD's KDS (DER, or PEM "X509 CRL").
func LoadCRL(path string) (*x509.RevocationList, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading amd crl: %w", err)
	}
	if b, _ := pem.Decode(raw); b != nil {
		raw = b.Bytes
	}
	crl, err := x509.ParseRevocationList(raw)
	if err != nil {
		return nil, fmt.Errorf("parsing amd crl %s: %w", path, err)
	}
	return crl, nil
}

// Verify implements Verifier. It reads veil's encoding
// (evidence.SNPEvidence: raw report and GHCB certificate table) and the
// encoding of Confidential Containers' guests (trusteeSNPEvidence).
func (s *SNP) Verify(_ context.Context, raw json.RawMessage) (Claims, error) {
	var att *spb.Attestation
	var err error
	if isTrusteeSNP(raw) {
		att, err = decodeTrusteeSNP(raw)
	} else {
		att, err = decodeVeilSNP(raw)
	}
	if err != nil {
		return Claims{}, err
	}
	if err := s.fillFromCache(att); err != nil {
		return Claims{}, err
	}
	now := time.Now()
	if s.Now != nil {
		now = s.Now()
	}
	opts := &sevverify.Options{
		DisableCertFetching: true,
		TrustedRoots:        s.Roots,
		Now:                 now,
	}
	if s.CRL != nil {
		// A stale list could miss a revocation since: fail closed, as a
		// relying party must once a CRL is past its next update.
		if now.After(s.CRL.NextUpdate) {
			return Claims{}, fmt.Errorf("sev-snp revocation: the recorded AMD CRL (--snp-crl) expected to be current, seen next update %s, now %s: record a fresh one from AMD's KDS", s.CRL.NextUpdate.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
		}
		opts.CheckRevocations = true
		opts.Getter = recordedCRL(s.CRL.Raw)
	}
	if err := sevverify.SnpAttestation(att, opts); err != nil {
		return Claims{}, fmt.Errorf("verifying sev-snp report signature and certificate chain: %w", err)
	}
	if err := s.notRevoked(att); err != nil {
		return Claims{}, err
	}
	if err := checkEndorsementTCB(att); err != nil {
		return Claims{}, err
	}
	return snpClaims(att.GetReport())
}

// decodeVeilSNP reads evidence.SNPEvidence.
func decodeVeilSNP(raw json.RawMessage) (*spb.Attestation, error) {
	var ev evidence.SNPEvidence
	if err := json.Unmarshal(raw, &ev); err != nil {
		return nil, fmt.Errorf("decoding sev-snp evidence: %w", err)
	}
	report, err := base64.StdEncoding.DecodeString(ev.Report)
	if err != nil {
		return nil, fmt.Errorf("decoding sev-snp evidence report: %w", err)
	}
	if len(report) != abi.ReportSize {
		return nil, fmt.Errorf("sev-snp evidence report: %d bytes, want %d", len(report), abi.ReportSize)
	}
	certs, err := base64.StdEncoding.DecodeString(ev.CertTable)
	if err != nil {
		return nil, fmt.Errorf("decoding sev-snp evidence cert_table: %w", err)
	}
	att, err := abi.ReportCertsToProto(append(report, certs...))
	if err != nil {
		return nil, fmt.Errorf("parsing sev-snp report and certificate table: %w", err)
	}
	return att, nil
}

func (s *SNP) fillFromCache(att *spb.Attestation) error {
	if att.CertificateChain == nil {
		att.CertificateChain = &spb.CertificateChain{}
	}
	if len(att.CertificateChain.GetVcekCert()) > 0 || len(att.CertificateChain.GetVlekCert()) > 0 || s.VCEKCache == "" {
		return nil
	}
	r := att.GetReport()
	name := fmt.Sprintf("vcek-%x-%016x.der", r.GetChipId(), r.GetReportedTcb())
	der, err := os.ReadFile(filepath.Join(s.VCEKCache, name))
	if err != nil {
		return fmt.Errorf("sev-snp report has no VCEK in its certificate table and the cache has none: %w", err)
	}
	att.CertificateChain.VcekCert = der
	return nil
}

// notRevoked refuses an endorsement key (VCEK or VLEK) the recorded CRL
// lists; go-sev-guest checks the ASK and the CRL's signature.
func (s *SNP) notRevoked(att *spb.Attestation) error {
	if s.CRL == nil {
		return nil
	}
	for _, der := range [][]byte{att.GetCertificateChain().GetVcekCert(), att.GetCertificateChain().GetVlekCert()} {
		if len(der) == 0 {
			continue
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return fmt.Errorf("parsing sev-snp endorsement key certificate: %w", err)
		}
		for _, e := range s.CRL.RevokedCertificateEntries {
			if e.SerialNumber.Cmp(cert.SerialNumber) == 0 {
				return fmt.Errorf("sev-snp endorsement key: expected a certificate the AMD CRL does not revoke, seen serial %s revoked at %s",
					cert.SerialNumber, e.RevocationTime.UTC().Format(time.RFC3339))
			}
		}
	}
	return nil
}

// checkEndorsementTCB ties the report's REPORTED_TCB to the TCB the
// endorsement key was issued for, so a host cannot claim a TCB the key
// does not vouch for.
func checkEndorsementTCB(att *spb.Attestation) error {
	info, err := abi.ParseSignerInfo(att.GetReport().GetSignerInfo())
	if err != nil {
		return fmt.Errorf("parsing sev-snp signer info: %w", err)
	}
	var exts *kds.Extensions
	switch info.SigningKey {
	case abi.VcekReportSigner:
		cert, perr := x509.ParseCertificate(att.GetCertificateChain().GetVcekCert())
		if perr != nil {
			return fmt.Errorf("parsing vcek certificate: %w", perr)
		}
		exts, err = kds.VcekCertificateExtensions(cert)
	case abi.VlekReportSigner:
		cert, perr := x509.ParseCertificate(att.GetCertificateChain().GetVlekCert())
		if perr != nil {
			return fmt.Errorf("parsing vlek certificate: %w", perr)
		}
		exts, err = kds.VlekCertificateExtensions(cert)
	default:
		return fmt.Errorf("sev-snp signer: %v is not a VCEK or VLEK", info.SigningKey)
	}
	if err != nil {
		return fmt.Errorf("reading endorsement key certificate extensions: %w", err)
	}
	if uint64(exts.TCBVersion) != att.GetReport().GetReportedTcb() {
		return fmt.Errorf("snp.reported_tcb: expected %#016x (the endorsement key's TCB), seen %#016x",
			uint64(exts.TCBVersion), att.GetReport().GetReportedTcb())
	}
	return nil
}

func snpClaims(r *spb.Report) (Claims, error) {
	pol, err := abi.ParseSnpPolicy(r.GetPolicy())
	if err != nil {
		return Claims{}, fmt.Errorf("parsing sev-snp guest policy: %w", err)
	}
	tcb := kds.DecomposeTCBVersion(kds.TCBVersion(r.GetReportedTcb()))
	return Claims{
		Tee:         kbs.TeeSNP,
		Measurement: hex.EncodeToString(r.GetMeasurement()),
		ReportData:  hex.EncodeToString(r.GetReportData()),
		HostData:    hex.EncodeToString(r.GetHostData()),
		Debug:       pol.Debug,
		Migration:   pol.MigrateMA,
		VMPL:        int(r.GetVmpl()),
		SNPTCB: &SNPTCB{
			BootLoader: tcb.BlSpl,
			TEE:        tcb.TeeSpl,
			SNP:        tcb.SnpSpl,
			Microcode:  tcb.UcodeSpl,
		},
	}, nil
}

// LoadAMDRoots reads a KDS certificate chain file (PEM: ASK then ARK, as
// https://kdsintf.amd.com/vcek/v1/<product>/cert_chain serves it) and pins
// it for productLine (Milan, Genoa, Turin...).
func LoadAMDRoots(path, productLine string) (map[string][]*trust.AMDRootCerts, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading amd root certificates: %w", err)
	}
	r := trust.AMDRootCertsProduct(productLine)
	if err := r.FromKDSCertBytes(raw); err != nil {
		return nil, fmt.Errorf("parsing amd root certificates %s: %w", path, err)
	}
	return map[string][]*trust.AMDRootCerts{productLine: {r}}, nil
}
