package evidence

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	tdxabi "github.com/google/go-tdx-guest/abi"
	tdxclient "github.com/google/go-tdx-guest/client"
	labi "github.com/google/go-tdx-guest/client/linuxabi"
	tdxpb "github.com/google/go-tdx-guest/proto/tdx"
	tdxtest "github.com/google/go-tdx-guest/testing"
	tdxdata "github.com/google/go-tdx-guest/testing/testdata"

	"github.com/veil-runtime/veil/attestation/initdata"
)

// tdReport is go-tdx-guest's sample TDREPORT with mrconfigid written at
// MRCONFIGID's place in TDINFO_STRUCT.
func tdReport(mrconfigid []byte) [labi.TdReportSize]byte {
	var r [labi.TdReportSize]byte
	copy(r[:], tdxdata.RawReport)
	copy(r[tdMRConfigIDOff:tdMRConfigIDOff+tdMRConfigIDSize], mrconfigid)
	return r
}

// reportDevice is go-tdx-guest's fake tdx_guest device answering
// TDX_CMD_GET_REPORT0 for all-zero report data with report.
func reportDevice(t *testing.T, report [labi.TdReportSize]byte) tdxclient.Device {
	t.Helper()
	d, err := tdxtest.TcDevice([]tdxtest.TestCase{{Name: "tdreport", Report: report}})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestTDXInitDataFromTDReport: the guest takes its MRCONFIGID from the
// TDREPORT, so a host that hands it a quote claiming the right MRCONFIGID
// (here: a quote whose body the host rewrote; the guest verifies no quote
// signature) cannot make a swapped document pass.
func TestTDXInitDataFromTDReport(t *testing.T) {
	ctx := context.Background()
	d := initdata.Digest(doc)
	bound, err := initdata.Pad(d[:], 48)
	if err != nil {
		t.Fatal(err)
	}
	swapped := append([]byte("# swapped by the host\n"), doc...)
	sd := initdata.Digest(swapped)
	swappedID, _ := initdata.Pad(sd[:], 48)
	// The host's forged quote names the swapped document's digest.
	q, err := tdxabi.QuoteToProto(tdxdata.RawQuote)
	if err != nil {
		t.Fatal(err)
	}
	q.(*tdxpb.QuoteV4).GetTdQuoteBody().MrConfigId = swappedID
	forged, err := tdxabi.QuoteToAbiBytes(q)
	if err != nil {
		t.Fatal(err)
	}

	a := NewTDX(fakeTDX{quote: forged}, DeviceReporter{Device: reportDevice(t, tdReport(bound))}, discard)
	got, err := a.BoundInitData(ctx)
	if err != nil || !bytes.Equal(got, bound) {
		t.Fatalf("BoundInitData = %x, %v; want the TDREPORT's %x", got, err, bound)
	}
	if err := CheckInitData(ctx, a, doc); err != nil {
		t.Fatalf("CheckInitData with the launched document: %v", err)
	}
	err = CheckInitData(ctx, a, swapped)
	if err == nil || !strings.Contains(err.Error(), "TDX MRCONFIGID is "+hexOf(bound)) {
		t.Fatalf("CheckInitData with the swapped document and a forged quote = %v", err)
	}
	// Without a TDREPORT source the guest refuses rather than read the quote.
	err = CheckInitData(ctx, NewTDX(fakeTDX{quote: forged}, nil, discard), swapped)
	if err == nil || !strings.Contains(err.Error(), "never from a quote") {
		t.Fatalf("CheckInitData without a TDREPORT = %v", err)
	}
	// A device that fails is an error, not a pass.
	err = CheckInitData(ctx, NewTDX(fakeTDX{quote: forged}, failingReporter{}, discard), doc)
	if err == nil || !strings.Contains(err.Error(), "getting the tdreport") {
		t.Fatalf("CheckInitData with a failing device = %v", err)
	}
	if _, err := MRConfigIDFromTDReport(make([]byte, 10)); err == nil {
		t.Fatal("short tdreport accepted")
	}
}

type failingReporter struct{}

func (failingReporter) TDReport([64]byte) ([]byte, error) { return nil, errors.New("ioctl: EIO") }

func hexOf(b []byte) string { return hex.EncodeToString(b) }
