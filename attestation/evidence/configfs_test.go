package evidence

import (
	"context"
	"crypto/rand"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-configfs-tsm/configfs/configfsi"
	"github.com/google/go-configfs-tsm/configfs/faketsm"
	"github.com/google/go-sev-guest/abi"
	tdxdata "github.com/google/go-tdx-guest/testing/testdata"

	"github.com/veil-runtime/veil/attestation/internal/snptest"
)

// fakeTSM emulates the configfs-tsm report subsystem of a guest whose
// provider is provider and whose reports outblob renders.
func fakeTSM(provider string, outblob func(inblob []byte) ([]byte, error), auxblob []byte) *faketsm.Client {
	sub := &faketsm.ReportSubsystem{
		MakeEntry: func() *faketsm.ReportEntry {
			return &faketsm.ReportEntry{InAttrs: map[string]*faketsm.ReportAttributeState{
				"privlevel": {Value: []byte("0\n")},
				"inblob":    {},
			}}
		},
		CheckInAttr: func(*faketsm.ReportEntry, string, []byte) error { return nil },
		ReadAttr: func(e *faketsm.ReportEntry, attr string) ([]byte, error) {
			switch attr {
			case "provider":
				return []byte(provider + "\n"), nil
			case "auxblob":
				return auxblob, nil
			case "outblob":
				return outblob(e.InAttrs["inblob"].Value)
			}
			return nil, os.ErrNotExist
		},
		Random: rand.Reader,
	}
	return &faketsm.Client{Subsystems: map[string]configfsi.Client{"report": sub}}
}

func TestConfigFSSNP(t *testing.T) {
	s, err := snptest.NewSigner(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	sign := func(inblob []byte) ([]byte, error) {
		r := snptest.Report{VMPL: 0}
		copy(r.ReportData[:], inblob)
		return s.Sign(r)
	}
	qp := NewConfigFSSNP(fakeTSM("sev_guest", sign, s.Certs))
	if !qp.IsSupported() {
		t.Fatal("sev_guest provider not supported")
	}
	a := NewSNP(qp, discard)
	raw, err := a.Evidence(context.Background(), [64]byte{0x5a})
	if err != nil {
		t.Fatal(err)
	}
	ev := decodeTrusteeSNP(t, raw)
	var table abi.CertTable
	if err := table.Unmarshal(s.Certs); err != nil {
		t.Fatal(err)
	}
	vcek, _ := table.GetByGUIDString(abi.VcekGUID)
	if len(ev.AttestationReport.ReportData) != 64 || ev.AttestationReport.ReportData[0] != 0x5a || string(ev.certsOf()[`"VCEK"`]) != string(vcek) {
		t.Fatalf("configfs evidence: report data %v, %d certificates", ev.AttestationReport.ReportData, len(ev.CertChain))
	}
	// A TDX guest's configfs is not an SNP report source.
	if NewConfigFSSNP(fakeTSM("tdx_guest", sign, nil)).IsSupported() {
		t.Fatal("tdx_guest provider taken for sev_guest")
	}
}

func TestConfigFSTDX(t *testing.T) {
	quote := func([]byte) ([]byte, error) { return tdxdata.RawQuote, nil }
	qp := NewConfigFSTDX(fakeTSM("tdx_guest", quote, nil))
	if err := qp.IsSupported(); err != nil {
		t.Fatal(err)
	}
	got, err := qp.GetRawQuote([64]byte{})
	if err != nil || string(got) != string(tdxdata.RawQuote) {
		t.Fatalf("GetRawQuote = %d bytes, %v", len(got), err)
	}
	if err := NewConfigFSTDX(fakeTSM("sev_guest", quote, nil)).IsSupported(); err == nil || !strings.Contains(err.Error(), "expected tdx_guest") {
		t.Fatalf("sev_guest provider taken for tdx_guest: %v", err)
	}
}
