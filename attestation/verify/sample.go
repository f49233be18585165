package verify

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/veil-runtime/veil/attestation/evidence"
	"github.com/veil-runtime/veil/attestation/kbs"
)

// Sample reads sample evidence. It checks nothing, because there is
// nothing to check: anyone can write sample evidence. The broker uses it
// only in dev mode, and the claims say so.
type Sample struct{}

var _ Verifier = Sample{}

// Verify implements Verifier.
func (Sample) Verify(_ context.Context, raw json.RawMessage) (Claims, error) {
	var ev evidence.SampleEvidence
	if err := json.Unmarshal(raw, &ev); err != nil {
		return Claims{}, fmt.Errorf("decoding sample evidence: %w", err)
	}
	rd, err := base64.StdEncoding.DecodeString(ev.ReportData)
	if err != nil || len(rd) == 0 || len(rd) > 64 {
		return Claims{}, fmt.Errorf("sample evidence report_data: want up to 64 bytes of standard base64")
	}
	// Trustee's sample attester sends the bare digest; hardware pads it
	// to the 64-byte field, and so do we.
	rd = append(rd, make([]byte, 64-len(rd))...)
	c := Claims{
		Tee:        kbs.TeeSample,
		Insecure:   evidence.SampleWarning,
		ReportData: hex.EncodeToString(rd),
		VMPL:       -1,
		SVN:        ev.SVN,
	}
	if ev.InitData != "" {
		hd, err := base64.StdEncoding.DecodeString(ev.InitData)
		if err != nil {
			return Claims{}, fmt.Errorf("sample evidence init_data: %w", err)
		}
		c.HostData = hex.EncodeToString(hd)
	}
	return c, nil
}
