package policy

import (
	"errors"
	"strings"
	"testing"

	"github.com/veil-runtime/veil/attestation/kbs"
	"github.com/veil-runtime/veil/attestation/verify"
)

const (
	meas   = "aa"
	rdata  = "11"
	digest = "0102"
)

func goodSNP() verify.Claims {
	return verify.Claims{Tee: kbs.TeeSNP, Measurement: meas, ReportData: rdata, HostData: "01020000", VMPL: 0,
		SNPTCB: &verify.SNPTCB{BootLoader: 3, TEE: 0, SNP: 8, Microcode: 115}}
}

func goodTDX() verify.Claims {
	return verify.Claims{Tee: kbs.TeeTDX, Measurement: meas, ReportData: rdata, HostData: "010200", VMPL: -1,
		RTMRs: []string{"r0", "r1", "r2", "r3"}, TeeTCBSVN: "0301"}
}

func basePolicy() Attestation {
	return Attestation{
		SNP:    &SNP{Measurements: []string{"AA"}, MinTCB: &verify.SNPTCB{BootLoader: 3, SNP: 8, Microcode: 115}},
		TDX:    &TDX{MRTDs: []string{meas}, RTMRs: [4][]string{1: {"r1"}}, MinTeeTCBSVN: "0300"},
		Sample: &Sample{},
	}
}

func TestEvaluate(t *testing.T) {
	bind := Binding{ReportData: rdata, InitDataDigest: digest}
	tests := []struct {
		name   string
		policy func(*Attestation)
		claims func(*verify.Claims)
		tdx    bool
		bind   *Binding
		want   []string // fields of the expected violations, in order
	}{
		{name: "snp good"},
		{name: "tdx good", tdx: true},
		{name: "report data mismatch", claims: func(c *verify.Claims) { c.ReportData = "22" }, want: []string{"report_data"}},
		{name: "host data mismatch", claims: func(c *verify.Claims) { c.HostData = "09090000" }, want: []string{"snp.host_data"}},
		{name: "mrconfigid mismatch", tdx: true, claims: func(c *verify.Claims) { c.HostData = "ffffff" }, want: []string{"tdx.mr_config_id"}},
		{name: "host data set but no init-data sent", bind: &Binding{ReportData: rdata}, want: []string{"snp.host_data"}},
		{name: "init-data required", policy: func(p *Attestation) { p.RequireInitData = true }, claims: func(c *verify.Claims) { c.HostData = "0000" }, bind: &Binding{ReportData: rdata}, want: []string{"init-data"}},
		{name: "init-data digest not allowed", policy: func(p *Attestation) { p.InitDataDigests = []string{"ffff"} }, want: []string{"init-data digest"}},
		{name: "measurement", claims: func(c *verify.Claims) { c.Measurement = "bb" }, want: []string{"snp.measurement"}},
		{name: "no reference values", policy: func(p *Attestation) { p.SNP.Measurements = nil }, want: []string{"snp.measurement"}},
		{name: "debug", claims: func(c *verify.Claims) { c.Debug = true }, want: []string{"snp.policy.debug"}},
		{name: "debug allowed", policy: func(p *Attestation) { p.SNP.AllowDebug = true }, claims: func(c *verify.Claims) { c.Debug = true }},
		{name: "migration", claims: func(c *verify.Claims) { c.Migration = true }, want: []string{"snp.policy.migrate_ma"}},
		{name: "vmpl 1", claims: func(c *verify.Claims) { c.VMPL = 1 }, want: []string{"snp.vmpl"}},
		{name: "tcb below", claims: func(c *verify.Claims) { c.SNPTCB.SNP = 7; c.SNPTCB.Microcode = 100 }, want: []string{"snp.reported_tcb.snp", "snp.reported_tcb.microcode"}},
		{name: "tdx mrtd", tdx: true, claims: func(c *verify.Claims) { c.Measurement = "bb" }, want: []string{"tdx.mrtd"}},
		{name: "tdx rtmr1", tdx: true, claims: func(c *verify.Claims) { c.RTMRs[1] = "x" }, want: []string{"tdx.rtmr1"}},
		{name: "tdx svn below", tdx: true, claims: func(c *verify.Claims) { c.TeeTCBSVN = "0201" }, want: []string{"tdx.tee_tcb_svn"}},
		{name: "tdx debug", tdx: true, claims: func(c *verify.Claims) { c.Debug = true }, want: []string{"tdx.td_attributes.debug"}},
		{name: "no snp section", policy: func(p *Attestation) { p.SNP = nil }, want: []string{"tee"}},
		{name: "several at once", claims: func(c *verify.Claims) { c.Debug = true; c.VMPL = 2 }, want: []string{"snp.policy.debug", "snp.vmpl"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := basePolicy()
			if tt.policy != nil {
				tt.policy(&p)
			}
			c := goodSNP()
			if tt.tdx {
				c = goodTDX()
			}
			if tt.claims != nil {
				tt.claims(&c)
			}
			b := bind
			if tt.bind != nil {
				b = *tt.bind
			}
			vs := Evaluate(p, c, b)
			var got []string
			for _, v := range vs {
				got = append(got, v.Field)
				if v.Expected == "" || (v.Seen == "" && v.Field != "tdx.rtmr1") {
					t.Errorf("violation %+v misses expected or seen", v)
				}
			}
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Fatalf("violations = %v, want fields %v", vs, tt.want)
			}
		})
	}
}

func TestRejectionNamesFieldExpectedSeen(t *testing.T) {
	err := Reject([]Violation{{"snp.vmpl", "0", "1"}})
	var rej *Rejection
	if !errors.As(err, &rej) || err.Error() != "rejected: snp.vmpl: expected 0, seen 1" {
		t.Fatalf("Reject = %v", err)
	}
	if Reject(nil) != nil {
		t.Fatal("Reject(nil) != nil")
	}
}

func TestResources(t *testing.T) {
	p := Resources{Rules: []ResourceRule{
		{Resource: "default/key/*", Tees: []kbs.Tee{kbs.TeeSNP, kbs.TeeTDX}, Measurements: []string{meas}},
		{Resource: "dev/key/*", Tees: []kbs.Tee{kbs.TeeSample}},
		{Resource: "pinned/key/one", Tees: []kbs.Tee{kbs.TeeSNP}, InitDataDigests: []string{digest}},
	}}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	sample := verify.Claims{Tee: kbs.TeeSample}
	tests := []struct {
		name, resource string
		claims         verify.Claims
		digest         string
		want           string // "" allows
	}{
		{"snp reads default key", "default/key/a", goodSNP(), "", ""},
		{"wrong measurement", "default/key/a", verify.Claims{Tee: kbs.TeeSNP, Measurement: "bb"}, "", "measurement"},
		{"sample cannot read default", "default/key/a", sample, "", "tee"},
		{"sample reads dev key", "dev/key/a", sample, "", ""},
		{"no rule", "other/key/a", goodSNP(), "", "a resource policy rule for other/key/a"},
		{"init-data pinned", "pinned/key/one", goodSNP(), digest, ""},
		{"init-data pinned mismatch", "pinned/key/one", goodSNP(), "ffff", "init-data digest"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := p.Allow(tt.resource, tt.claims, tt.digest)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Allow: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Allow error = %v, want %q", err, tt.want)
			}
		})
	}
	bad := []Resources{
		{Rules: []ResourceRule{{Resource: "a/b", Tees: []kbs.Tee{kbs.TeeSNP}}}},
		{Rules: []ResourceRule{{Resource: "a/b/c"}}},
		{Rules: []ResourceRule{{Resource: "a/b/c", Tees: []kbs.Tee{"sgx"}}}},
	}
	for i, b := range bad {
		if b.Validate() == nil {
			t.Errorf("bad policy %d validated", i)
		}
	}
}
