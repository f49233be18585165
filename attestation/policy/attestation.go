package policy

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/veil-runtime/veil/attestation/kbs"
	"github.com/veil-runtime/veil/attestation/verify"
)

// Attestation is the broker's attestation policy. A TEE without a section
// is not accepted at all. Hex values are compared case-insensitively.
type Attestation struct {
	SNP    *SNP    `json:"snp,omitempty"`
	TDX    *TDX    `json:"tdx,omitempty"`
	Sample *Sample `json:"sample,omitempty"`
	// RequireInitData rejects guests that send no init-data.
	RequireInitData bool `json:"require_init_data"`
	// InitDataDigests, when set, lists the init-data digests (hex) accepted.
	InitDataDigests []string `json:"init_data_digests,omitempty"`
}

// SNP holds SEV-SNP reference values and limits.
type SNP struct {
	// Measurements lists accepted launch measurements (hex, 48 bytes).
	Measurements []string `json:"measurements"`
	// MinTCB is the lowest reported TCB accepted, per component.
	MinTCB verify.SNPTCB `json:"min_tcb"`
	// AllowDebug accepts guests whose policy lets the host debug them.
	AllowDebug bool `json:"allow_debug"`
	// AllowMigration accepts guests with a migration agent.
	AllowMigration bool `json:"allow_migration"`
}

// TDX holds TDX reference values and limits.
type TDX struct {
	// MRTDs lists accepted MRTD values (hex, 48 bytes).
	MRTDs []string `json:"mrtds"`
	// RTMRs[i], when not empty, lists accepted values of RTMR i.
	RTMRs [4][]string `json:"rtmrs"`
	// MinTeeTCBSVN is the lowest TEE_TCB_SVN accepted (hex, 16 bytes,
	// compared byte by byte); empty accepts any.
	MinTeeTCBSVN string `json:"min_tee_tcb_svn,omitempty"`
	// AllowDebug accepts debug TDs.
	AllowDebug bool `json:"allow_debug"`
	// AllowMigration accepts migratable TDs.
	AllowMigration bool `json:"allow_migration"`
}

// Sample accepts software evidence; the broker consults it only in dev
// mode.
type Sample struct {
	// MinSVN is the lowest sample SVN accepted.
	MinSVN int `json:"min_svn"`
}

// Binding is what the evidence must be bound to.
type Binding struct {
	// ReportData is the expected report data (hex, 64 bytes): the hash of
	// the runtime data the guest sent.
	ReportData string
	// InitDataDigest is the digest (hex) of the init-data the guest sent;
	// empty when it sent none.
	InitDataDigest string
}

// Evaluate checks claims against the policy and the binding. It returns
// every violation, not just the first, so an operator sees all of them in
// one look.
func Evaluate(p Attestation, c verify.Claims, b Binding) []Violation {
	var vs []Violation
	vs = append(vs, checkBinding(p, c, b)...)
	switch c.Tee {
	case kbs.TeeSNP:
		if p.SNP == nil {
			return append(vs, noSection(p, c.Tee))
		}
		vs = append(vs, evaluateSNP(*p.SNP, c)...)
	case kbs.TeeTDX:
		if p.TDX == nil {
			return append(vs, noSection(p, c.Tee))
		}
		vs = append(vs, evaluateTDX(*p.TDX, c)...)
	case kbs.TeeSample:
		if p.Sample == nil {
			return append(vs, noSection(p, c.Tee))
		}
		// An SVN that is not an integer meets no minimum.
		svn, err := strconv.Atoi(c.SVN)
		if p.Sample.MinSVN > 0 && (err != nil || svn < p.Sample.MinSVN) {
			vs = append(vs, Violation{"sample.svn", fmt.Sprintf(">= %d", p.Sample.MinSVN), c.SVN})
		}
	default:
		vs = append(vs, Violation{"tee", "snp, tdx or sample", string(c.Tee)})
	}
	return vs
}

func noSection(p Attestation, tee kbs.Tee) Violation {
	var have []string
	if p.SNP != nil {
		have = append(have, "snp")
	}
	if p.TDX != nil {
		have = append(have, "tdx")
	}
	if p.Sample != nil {
		have = append(have, "sample")
	}
	return Violation{"tee", "one the policy has a section for: [" + strings.Join(have, ", ") + "]", string(tee)}
}

func checkBinding(p Attestation, c verify.Claims, b Binding) []Violation {
	var vs []Violation
	if !strings.EqualFold(c.ReportData, b.ReportData) {
		vs = append(vs, Violation{"report_data", b.ReportData + " (hash of runtime-data)", c.ReportData})
	}
	field := hostDataField(c.Tee)
	switch {
	case b.InitDataDigest == "":
		if p.RequireInitData {
			vs = append(vs, Violation{"init-data", "an init-data document", "none"})
		}
		if strings.Trim(c.HostData, "0") != "" {
			vs = append(vs, Violation{field, "zero (no init-data sent)", c.HostData})
		}
	default:
		want := padHex(b.InitDataDigest, len(c.HostData)/2)
		if !strings.EqualFold(c.HostData, want) {
			vs = append(vs, Violation{field, want + " (digest of the init-data sent)", c.HostData})
		}
		if len(p.InitDataDigests) > 0 && !containsFold(p.InitDataDigests, b.InitDataDigest) {
			vs = append(vs, Violation{"init-data digest", "one of " + list(p.InitDataDigests), b.InitDataDigest})
		}
	}
	return vs
}

func hostDataField(t kbs.Tee) string {
	switch t {
	case kbs.TeeSNP:
		return "snp.host_data"
	case kbs.TeeTDX:
		return "tdx.mr_config_id"
	default:
		return string(t) + ".init_data"
	}
}

func evaluateSNP(p SNP, c verify.Claims) []Violation {
	var vs []Violation
	if !containsFold(p.Measurements, c.Measurement) {
		vs = append(vs, Violation{"snp.measurement", "one of " + list(p.Measurements), c.Measurement})
	}
	if c.Debug && !p.AllowDebug {
		vs = append(vs, Violation{"snp.policy.debug", "false", "true"})
	}
	if c.Migration && !p.AllowMigration {
		vs = append(vs, Violation{"snp.policy.migrate_ma", "false", "true"})
	}
	if c.VMPL != 0 {
		vs = append(vs, Violation{"snp.vmpl", "0", fmt.Sprint(c.VMPL)})
	}
	var tcb verify.SNPTCB
	if c.SNPTCB != nil {
		tcb = *c.SNPTCB
	}
	for _, part := range []struct {
		name      string
		seen, min uint8
	}{
		{"bootloader", tcb.BootLoader, p.MinTCB.BootLoader},
		{"tee", tcb.TEE, p.MinTCB.TEE},
		{"snp", tcb.SNP, p.MinTCB.SNP},
		{"microcode", tcb.Microcode, p.MinTCB.Microcode},
	} {
		if part.seen < part.min {
			vs = append(vs, Violation{"snp.reported_tcb." + part.name, fmt.Sprintf(">= %d", part.min), fmt.Sprint(part.seen)})
		}
	}
	return vs
}

func evaluateTDX(p TDX, c verify.Claims) []Violation {
	var vs []Violation
	if !containsFold(p.MRTDs, c.Measurement) {
		vs = append(vs, Violation{"tdx.mrtd", "one of " + list(p.MRTDs), c.Measurement})
	}
	for i, allowed := range p.RTMRs {
		if len(allowed) == 0 {
			continue
		}
		seen := ""
		if i < len(c.RTMRs) {
			seen = c.RTMRs[i]
		}
		if !containsFold(allowed, seen) {
			vs = append(vs, Violation{fmt.Sprintf("tdx.rtmr%d", i), "one of " + list(allowed), seen})
		}
	}
	if p.MinTeeTCBSVN != "" && !svnAtLeast(c.TeeTCBSVN, p.MinTeeTCBSVN) {
		vs = append(vs, Violation{"tdx.tee_tcb_svn", ">= " + p.MinTeeTCBSVN + " (each byte)", c.TeeTCBSVN})
	}
	if c.Debug && !p.AllowDebug {
		vs = append(vs, Violation{"tdx.td_attributes.debug", "false", "true"})
	}
	if c.Migration && !p.AllowMigration {
		vs = append(vs, Violation{"tdx.td_attributes.migratable", "false", "true"})
	}
	return vs
}

// svnAtLeast compares two hex SVN arrays byte by byte.
func svnAtLeast(seen, min string) bool {
	s, m := strings.ToLower(seen), strings.ToLower(min)
	if len(s) != len(m) {
		return false
	}
	for i := 0; i+1 < len(m); i += 2 {
		if s[i:i+2] < m[i:i+2] {
			return false
		}
	}
	return true
}

func containsFold(list []string, v string) bool {
	return v != "" && slices.ContainsFunc(list, func(s string) bool { return strings.EqualFold(s, v) })
}

func list(vs []string) string {
	if len(vs) == 0 {
		return "[] (no reference values registered)"
	}
	return "[" + strings.Join(vs, ", ") + "]"
}

func padHex(h string, size int) string {
	if len(h)/2 >= size {
		return h
	}
	return h + strings.Repeat("00", size-len(h)/2)
}
