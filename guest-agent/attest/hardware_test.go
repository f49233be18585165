package attest

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/veil-runtime/veil/attestation/evidence"
	"github.com/veil-runtime/veil/attestation/kbs"
)

// fakeAttester is an attester of a given TEE that is never asked for
// evidence here.
type fakeAttester struct{ tee kbs.Tee }

func (f fakeAttester) Tee() kbs.Tee { return f.tee }
func (f fakeAttester) Evidence(context.Context, [64]byte) (json.RawMessage, error) {
	return nil, errors.New("fake: no evidence")
}
func (f fakeAttester) BoundInitData(context.Context) ([]byte, error) { return nil, nil }

func cpuinfo(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func paths(have ...string) func(string) bool {
	return func(p string) bool { return slices.Contains(have, p) }
}

func TestReadHardware(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cpuinfo string
		exists  func(string) bool
		want    string
	}{
		// This machine: a plain VM with "hypervisor" but no TEE.
		{"plain vm", cpuinfo(t, "cpuinfo-plain-vm"), paths(), None},
		// An SNP guest: the core kernel registers the sev-guest platform
		// device before any driver loads; /dev/sev-guest comes later.
		{"snp guest", cpuinfo(t, "cpuinfo-snp-guest"), paths(SNPPlatformDevice), SNP},
		// The sev_snp flag alone is not taken as SNP: a plain VM on an SNP
		// host may see the host's CPUID bits.
		{"sev flags without the platform device", cpuinfo(t, "cpuinfo-snp-guest"), paths(), None},
		{"tdx guest", cpuinfo(t, "cpuinfo-tdx-guest"), paths(), TDX},
		// "tdx_guest" in the model name is not a flag.
		{"tdx in another line", "model name\t: tdx_guest\nflags\t\t: fpu hypervisor\n", paths(), None},
		{"both", cpuinfo(t, "cpuinfo-tdx-guest"), paths(SNPPlatformDevice), "snp+tdx"},
		{"no cpuinfo", "", paths(), None},
	} {
		if got := ReadHardware(tc.cpuinfo, tc.exists); got.Name() != tc.want {
			t.Errorf("%s: %s (%v), want %s", tc.name, got.Name(), got.Evidence, tc.want)
		}
	}
}

func TestDecideTEE(t *testing.T) {
	plain := ReadHardware(cpuinfo(t, "cpuinfo-plain-vm"), paths())
	snp := ReadHardware(cpuinfo(t, "cpuinfo-snp-guest"), paths(SNPPlatformDevice))
	tdx := ReadHardware(cpuinfo(t, "cpuinfo-tdx-guest"), paths())
	both := ReadHardware(cpuinfo(t, "cpuinfo-tdx-guest"), paths(SNPPlatformDevice))
	param := func(v string) map[string]string { return map[string]string{TEEParam: v} }
	for _, tc := range []struct {
		name     string
		params   map[string]string
		hw       Hardware
		wantTEE  string
		wantLock []string // all in the lock reason; nil: not locked
		wantErr  string
	}{
		{"plain vm, no param: ordinary pod", map[string]string{}, plain, None, nil, ""},
		{"plain vm, empty param", param(""), plain, None, nil, ""},
		{"plain vm, none", param(None), plain, None, nil, ""},
		{"plain vm, sample (veil-dev)", param(Sample), plain, Sample, nil, ""},
		{"plain vm, snp: checked when the drivers load", param(SNP), plain, SNP, nil, ""},
		{"plain vm, unknown", param("sgx"), plain, "", nil, `veil.tee="sgx"`},
		{"snp guest, snp", param(SNP), snp, SNP, nil, ""},
		{"snp guest, param dropped: still enforced", map[string]string{}, snp, SNP, nil, ""},
		{"snp guest, none", param(None), snp, SNP, []string{"veil.tee=none", "runs in snp", SNPPlatformDevice}, ""},
		{"snp guest, sample", param(Sample), snp, SNP, []string{"veil.tee=sample", "runs in snp"}, ""},
		{"snp guest, tdx", param(TDX), snp, SNP, []string{"veil.tee=tdx", "runs in snp"}, ""},
		{"snp guest, unknown", param("sgx"), snp, SNP, []string{"veil.tee=sgx", "runs in snp"}, ""},
		{"tdx guest, tdx", param(TDX), tdx, TDX, nil, ""},
		{"tdx guest, param dropped", map[string]string{}, tdx, TDX, nil, ""},
		{"tdx guest, snp", param(SNP), tdx, TDX, []string{"veil.tee=snp", "runs in tdx", "cpu flag tdx_guest"}, ""},
		{"tdx guest, none", param(None), tdx, TDX, []string{"veil.tee=none", "runs in tdx"}, ""},
		{"both", param(TDX), both, TDX, []string{"both SEV-SNP and TDX"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := DecideTEE(tc.params, tc.hw)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d.TEE != tc.wantTEE {
				t.Errorf("TEE %q, want %q", d.TEE, tc.wantTEE)
			}
			if (d.Lock != "") != (tc.wantLock != nil) {
				t.Fatalf("lock %q, want one containing %q", d.Lock, tc.wantLock)
			}
			for _, w := range tc.wantLock {
				if !strings.Contains(d.Lock, w) {
					t.Errorf("lock %q does not name %q", d.Lock, w)
				}
			}
		})
	}
}

// TestNewOnTEEHardware: New enforces and locks as DecideTEE says, before
// looking for any report interface for a mismatch.
func TestNewOnTEEHardware(t *testing.T) {
	snp := func() Hardware { return Hardware{SNP: true, Evidence: []string{SNPPlatformDevice}} }
	detected := false
	detect := func() (evidence.Attester, error) { detected = true; return fakeAttester{kbs.TeeSNP}, nil }
	s, err := New(Config{Params: map[string]string{TEEParam: None}, Hardware: snp, Detect: detect})
	if err != nil {
		t.Fatal(err)
	}
	if s.TEE() != SNP || !s.Enforcer().Confidential() || !strings.Contains(s.Enforcer().Locked(), "veil.tee=none") {
		t.Fatalf("tee %s confidential %v locked %q", s.TEE(), s.Enforcer().Confidential(), s.Enforcer().Locked())
	}
	if detected {
		t.Error("report interface looked for in a locked-down guest")
	}
	// The parameter dropped: confidential, attester found.
	s, err = New(Config{Params: map[string]string{}, Hardware: snp, Detect: detect})
	if err != nil {
		t.Fatal(err)
	}
	if s.TEE() != SNP || !s.Enforcer().Confidential() || s.Enforcer().Locked() != "" || !detected {
		t.Fatalf("tee %s confidential %v locked %q detected %v", s.TEE(), s.Enforcer().Confidential(), s.Enforcer().Locked(), detected)
	}
}
