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
	// MinTCB is the lowest reported TCB accepted, per component; a
	// production broker requires it.
	MinTCB *verify.SNPTCB `json:"min_tcb,omitempty"`
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

// Check is one comparison of a claim with the policy, passed or not.
type Check struct {
	Field    string `json:"field"`
	Expected string `json:"expected"`
	Seen     string `json:"seen"`
	OK       bool   `json:"ok"`
}

// checks collects every comparison made.
type checks []Check

func (cs *checks) add(ok bool, field, expected, seen string) {
	*cs = append(*cs, Check{Field: field, Expected: expected, Seen: seen, OK: ok})
}

// Evaluate checks claims against the policy and the binding. It returns
// every violation, not just the first, so an operator sees all of them in
// one look.
func Evaluate(p Attestation, c verify.Claims, b Binding) []Violation {
	var vs []Violation
	for _, ch := range Explain(p, c, b) {
		if !ch.OK {
			vs = append(vs, Violation{ch.Field, ch.Expected, ch.Seen})
		}
	}
	return vs
}

// Explain is Evaluate with its work shown: every check made, in order,
// with the expected and the seen value and whether it passed
// (veil-kbs explain prints it).
func Explain(p Attestation, c verify.Claims, b Binding) []Check {
	var cs checks
	checkBinding(&cs, p, c, b)
	switch c.Tee {
	case kbs.TeeSNP:
		if p.SNP == nil {
			cs.add(false, "tee", noSection(p), string(c.Tee))
			return cs
		}
		cs.add(true, "tee", "a policy section for snp", "snp")
		evaluateSNP(&cs, *p.SNP, c)
	case kbs.TeeTDX:
		if p.TDX == nil {
			cs.add(false, "tee", noSection(p), string(c.Tee))
			return cs
		}
		cs.add(true, "tee", "a policy section for tdx", "tdx")
		evaluateTDX(&cs, *p.TDX, c)
	case kbs.TeeSample:
		if p.Sample == nil {
			cs.add(false, "tee", noSection(p), string(c.Tee))
			return cs
		}
		cs.add(true, "tee", "a policy section for sample", "sample")
		// An SVN that is not an integer meets no minimum.
		svn, err := strconv.Atoi(c.SVN)
		cs.add(p.Sample.MinSVN <= 0 || (err == nil && svn >= p.Sample.MinSVN), "sample.svn", fmt.Sprintf(">= %d", p.Sample.MinSVN), c.SVN)
	default:
		cs.add(false, "tee", "snp, tdx or sample", string(c.Tee))
	}
	return cs
}

func noSection(p Attestation) string {
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
	return "one the policy has a section for: [" + strings.Join(have, ", ") + "]"
}

func checkBinding(cs *checks, p Attestation, c verify.Claims, b Binding) {
	cs.add(strings.EqualFold(c.ReportData, b.ReportData), "report_data", b.ReportData+" (hash of runtime-data)", c.ReportData)
	field := hostDataField(c.Tee)
	switch {
	case b.InitDataDigest == "":
		if p.RequireInitData {
			cs.add(false, "init-data", "an init-data document", "none")
		}
		cs.add(strings.Trim(c.HostData, "0") == "", field, "zero (no init-data sent)", c.HostData)
	default:
		if p.RequireInitData {
			cs.add(true, "init-data", "an init-data document", "sent, digest "+b.InitDataDigest)
		}
		want := padHex(b.InitDataDigest, len(c.HostData)/2)
		cs.add(strings.EqualFold(c.HostData, want), field, want+" (digest of the init-data sent)", c.HostData)
		if len(p.InitDataDigests) > 0 {
			cs.add(containsFold(p.InitDataDigests, b.InitDataDigest), "init-data digest", "one of "+list(p.InitDataDigests), b.InitDataDigest)
		}
	}
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

func evaluateSNP(cs *checks, p SNP, c verify.Claims) {
	cs.add(containsFold(p.Measurements, c.Measurement), "snp.measurement", "one of "+list(p.Measurements), c.Measurement)
	cs.add(!c.Debug || p.AllowDebug, "snp.policy.debug", allowed(p.AllowDebug), fmt.Sprint(c.Debug))
	cs.add(!c.Migration || p.AllowMigration, "snp.policy.migrate_ma", allowed(p.AllowMigration), fmt.Sprint(c.Migration))
	cs.add(c.VMPL == 0, "snp.vmpl", "0", fmt.Sprint(c.VMPL))
	var tcb, min verify.SNPTCB
	if c.SNPTCB != nil {
		tcb = *c.SNPTCB
	}
	if p.MinTCB != nil {
		min = *p.MinTCB
	}
	for _, part := range []struct {
		name      string
		seen, min uint8
	}{
		{"bootloader", tcb.BootLoader, min.BootLoader},
		{"tee", tcb.TEE, min.TEE},
		{"snp", tcb.SNP, min.SNP},
		{"microcode", tcb.Microcode, min.Microcode},
	} {
		cs.add(part.seen >= part.min, "snp.reported_tcb."+part.name, fmt.Sprintf(">= %d", part.min), fmt.Sprint(part.seen))
	}
}

// allowed is the expected value of a flag the policy may allow.
func allowed(allow bool) string {
	if allow {
		return "false or true (allowed)"
	}
	return "false"
}

func evaluateTDX(cs *checks, p TDX, c verify.Claims) {
	cs.add(containsFold(p.MRTDs, c.Measurement), "tdx.mrtd", "one of "+list(p.MRTDs), c.Measurement)
	for i, allowedValues := range p.RTMRs {
		seen := ""
		if i < len(c.RTMRs) {
			seen = c.RTMRs[i]
		}
		if len(allowedValues) == 0 {
			cs.add(true, fmt.Sprintf("tdx.rtmr%d", i), "any (no reference values)", seen)
			continue
		}
		cs.add(containsFold(allowedValues, seen), fmt.Sprintf("tdx.rtmr%d", i), "one of "+list(allowedValues), seen)
	}
	if p.MinTeeTCBSVN != "" {
		cs.add(svnAtLeast(c.TeeTCBSVN, p.MinTeeTCBSVN), "tdx.tee_tcb_svn", ">= "+p.MinTeeTCBSVN+" (each byte)", c.TeeTCBSVN)
	}
	cs.add(!c.Debug || p.AllowDebug, "tdx.td_attributes.debug", allowed(p.AllowDebug), fmt.Sprint(c.Debug))
	cs.add(!c.Migration || p.AllowMigration, "tdx.td_attributes.migratable", allowed(p.AllowMigration), fmt.Sprint(c.Migration))
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
