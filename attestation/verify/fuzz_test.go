package verify

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// FuzzSNPEvidence feeds the SNP verifier what a guest controls: evidence
// in veil's or Trustee's encoding. It never panics, and anything it
// accepts is a report that verifies against the pinned roots — with the
// real AMD roots pinned, only the recorded Milan report does, so an
// accepted input must carry that report's measurement.
func FuzzSNPEvidence(f *testing.F) {
	ev, err := os.ReadFile(filepath.Join("testdata", "trustee-snp", "milan-evidence.json"))
	if err != nil {
		f.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join("testdata", "trustee-snp", "milan-report.bin"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(ev)
	f.Add(bytes.Replace(ev, []byte(`"cert_chain":[`), []byte(`"cert_chain":null,"x":[`), 1))
	f.Add([]byte(`{"attestation_report":"AAAA","cert_chain":null}`))
	f.Add([]byte(`{"attestation_report":[1,2,300],"cert_chain":[{"cert_type":{"OTHER":"x"},"data":"AA=="}]}`))
	f.Add([]byte(`{"report":"AAAA","cert_table":""}`))
	v := &SNP{Now: func() time.Time { return time.Date(2026, 6, 18, 0, 0, 0, 0, time.UTC) }}
	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := v.Verify(context.Background(), json.RawMessage(in))
		if err != nil {
			return
		}
		if c.Measurement != hex.EncodeToString(raw[0x90:0xC0]) {
			t.Fatalf("accepted evidence with measurement %s: %s", c.Measurement, in)
		}
	})
}
