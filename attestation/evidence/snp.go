package evidence

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"

	"github.com/google/go-sev-guest/abi"
	sevclient "github.com/google/go-sev-guest/client"

	"github.com/veil-runtime/veil/attestation/kbs"
)

// SNPEvidence is veil's first JSON encoding of SEV-SNP evidence: the raw
// attestation report and the certificate table the host attached (VCEK or
// VLEK and, when the host provides them, ASK and ARK), both standard
// base64. veil-kbs still reads it; guests now send TrusteeSNPEvidence,
// which Trustee's brokers read too.
type SNPEvidence struct {
	Report    string `json:"report"`
	CertTable string `json:"cert_table,omitempty"`
}

// SNP produces SEV-SNP attestation reports.
type SNP struct {
	qp  sevclient.QuoteProvider
	log *slog.Logger
}

var _ Attester = (*SNP)(nil)

// NewSNP returns an SNP attester over a go-sev-guest quote provider.
func NewSNP(qp sevclient.QuoteProvider, log *slog.Logger) *SNP {
	return &SNP{qp: qp, log: log.With("tee", kbs.TeeSNP)}
}

// OpenSNP finds the guest's report interface: configfs-tsm
// (/sys/kernel/config/tsm/report) when the kernel has it, else
// /dev/sev-guest.
func OpenSNP(log *slog.Logger) (*SNP, error) {
	if c, err := linuxConfigFS(); err == nil {
		if qp := NewConfigFSSNP(c); qp.IsSupported() {
			return NewSNP(qp, log), nil
		}
	}
	qp := &sevclient.LinuxIoctlQuoteProvider{}
	if !qp.IsSupported() {
		return nil, fmt.Errorf("opening sev-snp report interface: no configfs-tsm provider %s and no %s", providerSNP, sevGuestDevice)
	}
	return NewSNP(qp, log), nil
}

// Tee implements Attester.
func (*SNP) Tee() kbs.Tee { return kbs.TeeSNP }

func (s *SNP) rawReport(reportData [64]byte) (report, certs []byte, err error) {
	raw, err := s.qp.GetRawQuote(reportData)
	if err != nil {
		return nil, nil, fmt.Errorf("getting sev-snp report: %w", err)
	}
	if len(raw) < abi.ReportSize {
		return nil, nil, fmt.Errorf("sev-snp report is %d bytes, want at least %d", len(raw), abi.ReportSize)
	}
	return raw[:abi.ReportSize], raw[abi.ReportSize:], nil
}

// Evidence implements Attester.
func (s *SNP) Evidence(_ context.Context, reportData [64]byte) (json.RawMessage, error) {
	report, certs, err := s.rawReport(reportData)
	if err != nil {
		return nil, err
	}
	s.log.Debug("produced sev-snp report", "report_bytes", len(report), "cert_table_bytes", len(certs))
	return TrusteeSNPEvidence(report, certs)
}

// BoundInitData implements Attester: the report's HOSTDATA.
func (s *SNP) BoundInitData(context.Context) ([]byte, error) {
	report, _, err := s.rawReport([64]byte{})
	if err != nil {
		return nil, err
	}
	pb, err := abi.ReportToProto(report)
	if err != nil {
		return nil, fmt.Errorf("parsing sev-snp report: %w", err)
	}
	return pb.GetHostData(), nil
}
