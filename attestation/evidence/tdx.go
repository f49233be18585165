package evidence

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"

	tdxabi "github.com/google/go-tdx-guest/abi"
	tdxclient "github.com/google/go-tdx-guest/client"
	tdxpb "github.com/google/go-tdx-guest/proto/tdx"

	"github.com/veil-runtime/veil/attestation/kbs"
)

// TDXEvidence is the JSON of TDX evidence, in the shape Trustee's TDX
// verifier reads: the quote (standard base64) and an optional CC event log.
type TDXEvidence struct {
	Quote      string  `json:"quote"`
	CCEventLog *string `json:"cc_eventlog"`
}

// TDX produces TDX quotes.
type TDX struct {
	qp  tdxclient.QuoteProvider
	log *slog.Logger
}

var _ Attester = (*TDX)(nil)

// NewTDX returns a TDX attester over a go-tdx-guest quote provider.
func NewTDX(qp tdxclient.QuoteProvider, log *slog.Logger) *TDX {
	return &TDX{qp: qp, log: log.With("tee", kbs.TeeTDX)}
}

// OpenTDX uses configfs-tsm (/sys/kernel/config/tsm/report).
func OpenTDX(log *slog.Logger) (*TDX, error) {
	c, err := linuxConfigFS()
	if err != nil {
		return nil, fmt.Errorf("opening tdx quote interface: %w", err)
	}
	qp := NewConfigFSTDX(c)
	if err := qp.IsSupported(); err != nil {
		return nil, fmt.Errorf("opening tdx quote interface: %w", err)
	}
	return NewTDX(qp, log), nil
}

// Tee implements Attester.
func (*TDX) Tee() kbs.Tee { return kbs.TeeTDX }

// Evidence implements Attester.
func (t *TDX) Evidence(_ context.Context, reportData [64]byte) (json.RawMessage, error) {
	quote, err := t.qp.GetRawQuote(reportData)
	if err != nil {
		return nil, fmt.Errorf("getting tdx quote: %w", err)
	}
	t.log.Debug("produced tdx quote", "quote_bytes", len(quote))
	raw, err := json.Marshal(TDXEvidence{Quote: base64.StdEncoding.EncodeToString(quote)})
	if err != nil {
		return nil, fmt.Errorf("encoding tdx evidence: %w", err)
	}
	return raw, nil
}

// BoundInitData implements Attester: the quote's MRCONFIGID.
func (t *TDX) BoundInitData(context.Context) ([]byte, error) {
	raw, err := t.qp.GetRawQuote([64]byte{})
	if err != nil {
		return nil, fmt.Errorf("getting tdx quote: %w", err)
	}
	q, err := tdxabi.QuoteToProto(raw)
	if err != nil {
		return nil, fmt.Errorf("parsing tdx quote: %w", err)
	}
	v4, ok := q.(*tdxpb.QuoteV4)
	if !ok {
		return nil, fmt.Errorf("parsing tdx quote: unsupported quote type %T", q)
	}
	return v4.GetTdQuoteBody().GetMrConfigId(), nil
}
