package evidence

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"

	tdxclient "github.com/google/go-tdx-guest/client"
	labi "github.com/google/go-tdx-guest/client/linuxabi"

	"github.com/veil-runtime/veil/attestation/kbs"
)

// TDXEvidence is the JSON of TDX evidence, in the shape Trustee's TDX
// verifier reads: the quote (standard base64) and an optional CC event log.
type TDXEvidence struct {
	Quote      string  `json:"quote"`
	CCEventLog *string `json:"cc_eventlog"`
}

// TDX produces TDX quotes, and reads the init-data digest bound at launch
// from the TDREPORT.
type TDX struct {
	qp     tdxclient.QuoteProvider
	report TDReporter
	log    *slog.Logger
}

var _ Attester = (*TDX)(nil)

// TDReporter returns the TDREPORT (TDREPORT_STRUCT, 1024 bytes) for the
// given report data. The TDX module writes it into the guest's memory
// (TDG.MR.REPORT) without the VMM in the path, which is why the guest
// trusts it for its own MRCONFIGID; a quote is signed by the host's
// quoting enclave and handed back through the VMM, which could return a
// fabricated one (the guest does not verify quote signatures, the broker
// does).
type TDReporter interface {
	TDReport(reportData [64]byte) ([]byte, error)
}

// DeviceReporter reads the TDREPORT through the tdx_guest driver's
// TDX_CMD_GET_REPORT0 ioctl (/dev/tdx_guest), over go-tdx-guest's device
// interface (its test Device fakes it).
type DeviceReporter struct {
	Device tdxclient.Device
}

// TDReport implements TDReporter.
func (d DeviceReporter) TDReport(reportData [64]byte) ([]byte, error) {
	req := labi.TdxReportReq{ReportData: reportData}
	res, err := d.Device.Ioctl(labi.IocTdxGetReport, &req)
	if err != nil {
		return nil, fmt.Errorf("tdx_guest TDX_CMD_GET_REPORT0: %w", err)
	}
	if res != uintptr(labi.TdxAttestSuccess) {
		return nil, fmt.Errorf("tdx_guest TDX_CMD_GET_REPORT0: status %d", res)
	}
	return req.TdReport[:], nil
}

// TDREPORT_STRUCT layout (Intel TDX Module ABI specification: 256 bytes
// of REPORTMACSTRUCT, 239 of TEE_TCB_INFO, 17 reserved, then TDINFO_STRUCT
// with ATTRIBUTES (8), XFAM (8), MRTD (48), MRCONFIGID (48), ...).
const (
	tdReportSize     = 1024
	tdInfoOffset     = 512
	tdMRConfigIDOff  = tdInfoOffset + 8 + 8 + 48
	tdMRConfigIDSize = 48
)

// MRConfigIDFromTDReport returns a TDREPORT's MRCONFIGID.
func MRConfigIDFromTDReport(report []byte) ([]byte, error) {
	if len(report) != tdReportSize {
		return nil, fmt.Errorf("tdreport: %d bytes, want %d", len(report), tdReportSize)
	}
	return append([]byte(nil), report[tdMRConfigIDOff:tdMRConfigIDOff+tdMRConfigIDSize]...), nil
}

// NewTDX returns a TDX attester over a go-tdx-guest quote provider and a
// TDREPORT source. Without a TDREPORT source BoundInitData fails: the
// bound init-data digest is never taken from a quote.
func NewTDX(qp tdxclient.QuoteProvider, report TDReporter, log *slog.Logger) *TDX {
	return &TDX{qp: qp, report: report, log: log.With("tee", kbs.TeeTDX)}
}

// OpenTDX uses configfs-tsm (/sys/kernel/config/tsm/report) for quotes
// and /dev/tdx_guest for the TDREPORT.
func OpenTDX(log *slog.Logger) (*TDX, error) {
	c, err := linuxConfigFS()
	if err != nil {
		return nil, fmt.Errorf("opening tdx quote interface: %w", err)
	}
	qp := NewConfigFSTDX(c)
	if err := qp.IsSupported(); err != nil {
		return nil, fmt.Errorf("opening tdx quote interface: %w", err)
	}
	dev, err := tdxclient.OpenDevice()
	if err != nil {
		return nil, fmt.Errorf("opening %s for the TDREPORT: %w", tdxGuestDevice, err)
	}
	return NewTDX(qp, DeviceReporter{Device: dev}, log), nil
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

// BoundInitData implements Attester: MRCONFIGID from the TDREPORT the
// TDX module wrote, never from a quote (which the VMM could fabricate).
func (t *TDX) BoundInitData(context.Context) ([]byte, error) {
	if t.report == nil {
		return nil, fmt.Errorf("tdx: no TDREPORT source (%s): MRCONFIGID is read from the TDREPORT, never from a quote the host returns", tdxGuestDevice)
	}
	r, err := t.report.TDReport([64]byte{})
	if err != nil {
		return nil, fmt.Errorf("getting the tdreport: %w", err)
	}
	return MRConfigIDFromTDReport(r)
}
