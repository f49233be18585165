package evidence

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"

	"github.com/veil-runtime/veil/attestation/kbs"
)

// SampleWarning marks sample evidence, its claims and every log line about
// it: it comes from software and protects nothing.
const SampleWarning = "INSECURE sample evidence: software only, no hardware protection"

// SampleEvidence is the JSON of sample evidence.
type SampleEvidence struct {
	// SVN is a fixed software version.
	SVN string `json:"svn"`
	// ReportData is the bound report data, standard base64.
	ReportData string `json:"report_data"`
	// InitData is the init-data digest the guest was given, standard base64.
	InitData string `json:"init_data,omitempty"`
	// Insecure is always SampleWarning.
	Insecure string `json:"insecure"`
}

// Sample produces software evidence for veil-dev.
type Sample struct {
	initData []byte
	log      *slog.Logger
}

var _ Attester = (*Sample)(nil)

// NewSample returns a sample attester that reports initDataDigest as if
// the host had bound it at launch.
func NewSample(initDataDigest []byte, log *slog.Logger) *Sample {
	return &Sample{initData: append([]byte(nil), initDataDigest...), log: log.With("tee", kbs.TeeSample, "insecure", SampleWarning)}
}

// Tee implements Attester.
func (*Sample) Tee() kbs.Tee { return kbs.TeeSample }

// Evidence implements Attester.
func (s *Sample) Evidence(_ context.Context, reportData [64]byte) (json.RawMessage, error) {
	s.log.Warn("producing sample evidence")
	ev := SampleEvidence{
		SVN:        "1",
		ReportData: base64.StdEncoding.EncodeToString(reportData[:]),
		Insecure:   SampleWarning,
	}
	if len(s.initData) > 0 {
		ev.InitData = base64.StdEncoding.EncodeToString(s.initData)
	}
	raw, err := json.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("encoding sample evidence: %w", err)
	}
	return raw, nil
}

// BoundInitData implements Attester.
func (s *Sample) BoundInitData(context.Context) ([]byte, error) {
	return append([]byte(nil), s.initData...), nil
}
