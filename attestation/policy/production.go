package policy

import (
	"fmt"
	"slices"
	"strings"

	"github.com/veil-runtime/veil/attestation/kbs"
	"github.com/veil-runtime/veil/attestation/verify"
)

// Broker is what a broker can check beyond the policy documents, for
// Production.
type Broker struct {
	// TDXCollateral is set when TDX quotes are checked against recorded
	// collateral (QE identity, TCB info and CRLs).
	TDXCollateral bool
}

// Unfit is a policy that a production broker refuses; it lists every
// missing piece at once.
type Unfit struct {
	Violations []Violation
}

func (u *Unfit) Error() string {
	parts := make([]string, len(u.Violations))
	for i, v := range u.Violations {
		parts[i] = v.String()
	}
	return "policy not fit for production (a broker started with --dev accepts it): " + strings.Join(parts, "; ")
}

// Production lists what keeps a pair of attestation and resource policies
// from being served by a production broker (one not in dev mode):
//
//   - no sample section, and no resource rule granting to "sample";
//   - an SNP section pins launch measurements and a minimum TCB, and does
//     not allow debugging;
//   - a TDX section pins MRTDs, RTMR 1 and 2 (kernel, initrd, command
//     line), a minimum TEE_TCB_SVN, does not allow debugging, and the
//     broker checks quotes against collateral;
//   - with a hardware section, init-data is required, and pinned: either
//     the attestation policy lists init_data_digests or every resource
//     rule granting to snp or tdx does.
//
// An empty policy (a fresh store) accepts nothing and is fit.
func Production(a Attestation, r Resources, b Broker) []Violation {
	var vs []Violation
	if a.Sample != nil {
		vs = append(vs, Violation{"sample", "no sample section (software evidence is accepted only by a broker started with --dev)", "a sample section"})
	}
	for _, rule := range r.Rules {
		if slices.Contains(rule.Tees, kbs.TeeSample) {
			vs = append(vs, Violation{"resource rule " + rule.Resource + " tees", "snp or tdx only (sample only with --dev)", "sample"})
		}
	}
	if s := a.SNP; s != nil {
		if len(s.Measurements) == 0 {
			vs = append(vs, Violation{"snp.measurements", "at least one launch measurement (veil measure)", "none"})
		}
		switch {
		case s.MinTCB == nil:
			vs = append(vs, Violation{"snp.min_tcb", "the lowest reported TCB accepted (bootloader, tee, snp, microcode)", "none"})
		case *s.MinTCB == (verify.SNPTCB{}):
			vs = append(vs, Violation{"snp.min_tcb", "the lowest reported TCB accepted (bootloader, tee, snp, microcode)", "all zero (pins nothing)"})
		}
		if s.AllowDebug {
			vs = append(vs, Violation{"snp.allow_debug", "false (a debug guest's memory is readable by the host)", "true"})
		}
	}
	if t := a.TDX; t != nil {
		if len(t.MRTDs) == 0 {
			vs = append(vs, Violation{"tdx.mrtds", "at least one MRTD (veil measure)", "none"})
		}
		for _, i := range []int{1, 2} {
			if len(t.RTMRs[i]) == 0 {
				what := map[int]string{1: "kernel and its boot", 2: "kernel command line and initrd"}[i]
				vs = append(vs, Violation{fmt.Sprintf("tdx.rtmrs[%d]", i), fmt.Sprintf("at least one RTMR%d value (%s; veil measure)", i, what), "none"})
			}
		}
		if strings.Trim(t.MinTeeTCBSVN, "0") == "" {
			seen := "none"
			if t.MinTeeTCBSVN != "" {
				seen = t.MinTeeTCBSVN + " (pins nothing)"
			}
			vs = append(vs, Violation{"tdx.min_tee_tcb_svn", "the lowest TEE_TCB_SVN accepted (32 hex)", seen})
		}
		if t.AllowDebug {
			vs = append(vs, Violation{"tdx.allow_debug", "false (a debug TD's memory is readable by the host)", "true"})
		}
		if !b.TDXCollateral {
			vs = append(vs, Violation{"tdx collateral", "the broker started with --tdx-collateral (QE identity, TCB info, CRLs)", "none"})
		}
	}
	if a.SNP == nil && a.TDX == nil {
		return vs
	}
	if !a.RequireInitData {
		vs = append(vs, Violation{"require_init_data", "true", "false"})
	}
	if len(a.InitDataDigests) == 0 {
		for _, rule := range r.Rules {
			if len(rule.InitDataDigests) == 0 && (slices.Contains(rule.Tees, kbs.TeeSNP) || slices.Contains(rule.Tees, kbs.TeeTDX)) {
				vs = append(vs, Violation{"resource rule " + rule.Resource + " init_data_digests",
					"pinned init-data digests (or init_data_digests in the attestation policy)", "none"})
			}
		}
	}
	return vs
}

// CheckProduction returns an *Unfit error when Production finds anything.
func CheckProduction(a Attestation, r Resources, b Broker) error {
	if vs := Production(a, r, b); len(vs) > 0 {
		return &Unfit{Violations: vs}
	}
	return nil
}
