package policy

import (
	"errors"
	"strings"
	"testing"

	"github.com/veil-runtime/veil/attestation/kbs"
	"github.com/veil-runtime/veil/attestation/verify"
)

func productionPolicy() (Attestation, Resources) {
	a := Attestation{
		SNP:             &SNP{Measurements: []string{"aa"}, MinTCB: &verify.SNPTCB{BootLoader: 3, SNP: 20, Microcode: 209}},
		TDX:             &TDX{MRTDs: []string{"bb"}, RTMRs: [4][]string{1: {"r1"}, 2: {"r2"}}, MinTeeTCBSVN: "03000000000000000000000000000000"},
		RequireInitData: true,
		InitDataDigests: []string{"0102"},
	}
	r := Resources{Rules: []ResourceRule{{Resource: "default/key/*", Tees: []kbs.Tee{kbs.TeeSNP, kbs.TeeTDX}}}}
	return a, r
}

// TestProduction has a row per refusal a production broker makes; each
// names the field and what it wants.
func TestProduction(t *testing.T) {
	tests := []struct {
		name   string
		mod    func(*Attestation, *Resources, *Broker)
		fields []string // fields of the expected violations, in order
		want   string   // a phrase the first violation carries
	}{
		{name: "complete policy"},
		{name: "empty store", mod: func(a *Attestation, r *Resources, _ *Broker) { *a, *r = Attestation{}, Resources{} }},
		{name: "sample section", mod: func(a *Attestation, _ *Resources, _ *Broker) { a.Sample = &Sample{} },
			fields: []string{"sample"}, want: "--dev"},
		{name: "sample resource rule", mod: func(_ *Attestation, r *Resources, _ *Broker) {
			r.Rules = append(r.Rules, ResourceRule{Resource: "dev/key/*", Tees: []kbs.Tee{kbs.TeeSample}})
		}, fields: []string{"resource rule dev/key/* tees"}, want: "sample only with --dev"},
		{name: "snp without measurement", mod: func(a *Attestation, _ *Resources, _ *Broker) { a.SNP.Measurements = nil },
			fields: []string{"snp.measurements"}, want: "launch measurement"},
		{name: "snp without min tcb", mod: func(a *Attestation, _ *Resources, _ *Broker) { a.SNP.MinTCB = nil },
			fields: []string{"snp.min_tcb"}, want: "lowest reported TCB"},
		{name: "snp min tcb all zero", mod: func(a *Attestation, _ *Resources, _ *Broker) { a.SNP.MinTCB = &verify.SNPTCB{} },
			fields: []string{"snp.min_tcb"}, want: "all zero"},
		{name: "snp debug", mod: func(a *Attestation, _ *Resources, _ *Broker) { a.SNP.AllowDebug = true },
			fields: []string{"snp.allow_debug"}},
		{name: "tdx without mrtd", mod: func(a *Attestation, _ *Resources, _ *Broker) { a.TDX.MRTDs = nil },
			fields: []string{"tdx.mrtds"}, want: "MRTD"},
		{name: "tdx without rtmr1 and rtmr2", mod: func(a *Attestation, _ *Resources, _ *Broker) { a.TDX.RTMRs = [4][]string{} },
			fields: []string{"tdx.rtmrs[1]", "tdx.rtmrs[2]"}, want: "RTMR1"},
		{name: "tdx without min svn", mod: func(a *Attestation, _ *Resources, _ *Broker) { a.TDX.MinTeeTCBSVN = "" },
			fields: []string{"tdx.min_tee_tcb_svn"}, want: "TEE_TCB_SVN"},
		{name: "tdx min svn zero", mod: func(a *Attestation, _ *Resources, _ *Broker) { a.TDX.MinTeeTCBSVN = strings.Repeat("0", 32) },
			fields: []string{"tdx.min_tee_tcb_svn"}, want: "TEE_TCB_SVN"},
		{name: "tdx debug", mod: func(a *Attestation, _ *Resources, _ *Broker) { a.TDX.AllowDebug = true },
			fields: []string{"tdx.allow_debug"}},
		{name: "tdx without collateral", mod: func(_ *Attestation, _ *Resources, b *Broker) { b.TDXCollateral = false },
			fields: []string{"tdx collateral"}, want: "--tdx-collateral"},
		{name: "snp only needs no collateral", mod: func(a *Attestation, _ *Resources, b *Broker) { a.TDX, b.TDXCollateral = nil, false }},
		{name: "init-data not required", mod: func(a *Attestation, _ *Resources, _ *Broker) { a.RequireInitData = false },
			fields: []string{"require_init_data"}},
		{name: "init-data not pinned", mod: func(a *Attestation, _ *Resources, _ *Broker) { a.InitDataDigests = nil },
			fields: []string{"resource rule default/key/* init_data_digests"}, want: "pinned init-data"},
		{name: "init-data pinned per rule", mod: func(a *Attestation, r *Resources, _ *Broker) {
			a.InitDataDigests = nil
			r.Rules[0].InitDataDigests = []string{"0102"}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, r := productionPolicy()
			b := Broker{TDXCollateral: true}
			if tt.mod != nil {
				tt.mod(&a, &r, &b)
			}
			vs := Production(a, r, b)
			var got []string
			for _, v := range vs {
				got = append(got, v.Field)
				if v.Expected == "" || v.Seen == "" {
					t.Errorf("violation %+v misses expected or seen", v)
				}
			}
			if strings.Join(got, ",") != strings.Join(tt.fields, ",") {
				t.Fatalf("violations = %v, want fields %v", vs, tt.fields)
			}
			if tt.want != "" && !strings.Contains(vs[0].String(), tt.want) {
				t.Fatalf("violation %v does not say %q", vs[0], tt.want)
			}
			err := CheckProduction(a, r, b)
			var unfit *Unfit
			if (len(vs) == 0) != (err == nil) || (err != nil && !errors.As(err, &unfit)) {
				t.Fatalf("CheckProduction = %v", err)
			}
		})
	}
}

// TestExplainShowsEveryCheck: Explain lists passed checks too, and
// Evaluate is exactly its failures.
func TestExplainShowsEveryCheck(t *testing.T) {
	p := basePolicy()
	p.RequireInitData = true
	c := goodSNP()
	c.VMPL = 1
	cs := Explain(p, c, Binding{ReportData: rdata, InitDataDigest: digest})
	var fields, failed []string
	for _, ch := range cs {
		fields = append(fields, ch.Field)
		if !ch.OK {
			failed = append(failed, ch.Field)
		}
	}
	want := "report_data,init-data,snp.host_data,tee,snp.measurement,snp.policy.debug,snp.policy.migrate_ma,snp.vmpl," +
		"snp.reported_tcb.bootloader,snp.reported_tcb.tee,snp.reported_tcb.snp,snp.reported_tcb.microcode"
	if strings.Join(fields, ",") != want {
		t.Fatalf("checks = %v\nwant %s", fields, want)
	}
	if strings.Join(failed, ",") != "snp.vmpl" {
		t.Fatalf("failed checks = %v, want snp.vmpl", failed)
	}
	if vs := Evaluate(p, c, Binding{ReportData: rdata, InitDataDigest: digest}); len(vs) != 1 || vs[0].Field != "snp.vmpl" || vs[0].Seen != "1" {
		t.Fatalf("Evaluate = %v", vs)
	}
}
