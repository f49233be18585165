package policy

import (
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/veil-runtime/veil/attestation/kbs"
	"github.com/veil-runtime/veil/attestation/verify"
)

// Resources is the resource policy: a resource may be read when some rule
// matches both the resource path and the claims. No rule, no key.
type Resources struct {
	Rules []ResourceRule `json:"rules"`
}

// ResourceRule grants resources to evidence.
type ResourceRule struct {
	// Resource is a "repo/type/tag" pattern (path.Match syntax, e.g.
	// "default/key/*").
	Resource string `json:"resource"`
	// Tees lists the TEE kinds the rule grants to; "sample" must be named
	// explicitly to let software evidence read anything.
	Tees []kbs.Tee `json:"tees"`
	// Measurements, when set, restricts the rule to these measurements
	// (SNP MEASUREMENT / TDX MRTD).
	Measurements []string `json:"measurements,omitempty"`
	// InitDataDigests, when set, restricts the rule to guests launched
	// with one of these init-data digests.
	InitDataDigests []string `json:"init_data_digests,omitempty"`
}

// Validate checks patterns and TEE names.
func (r Resources) Validate() error {
	for i, rule := range r.Rules {
		if _, err := path.Match(rule.Resource, "a/b/c"); err != nil || strings.Count(rule.Resource, "/") != 2 {
			return fmt.Errorf("resource policy rule %d: resource %q: want a repo/type/tag pattern", i, rule.Resource)
		}
		if len(rule.Tees) == 0 {
			return fmt.Errorf("resource policy rule %d: tees is empty", i)
		}
		for _, t := range rule.Tees {
			if t != kbs.TeeSNP && t != kbs.TeeTDX && t != kbs.TeeSample {
				return fmt.Errorf("resource policy rule %d: tee %q: want snp, tdx or sample", i, t)
			}
		}
	}
	return nil
}

// Allow decides whether claims (with the init-data digest the guest was
// attested with) may read resource. The error names the closest rule's
// mismatch, or says no rule covers the resource.
func (r Resources) Allow(resource string, c verify.Claims, initDataDigest string) error {
	var vs []Violation
	for _, rule := range r.Rules {
		if ok, _ := path.Match(rule.Resource, resource); !ok {
			continue
		}
		rv := ruleViolations(rule, c, initDataDigest)
		if len(rv) == 0 {
			return nil
		}
		vs = append(vs, rv...)
	}
	if len(vs) == 0 {
		return &Rejection{Violations: []Violation{{"resource", "a resource policy rule for " + resource, "none"}}}
	}
	return &Rejection{Violations: vs}
}

func ruleViolations(rule ResourceRule, c verify.Claims, digest string) []Violation {
	var vs []Violation
	if !slices.Contains(rule.Tees, c.Tee) {
		vs = append(vs, Violation{"resource rule " + rule.Resource + " tee", fmt.Sprint(rule.Tees), string(c.Tee)})
	}
	if len(rule.Measurements) > 0 && !containsFold(rule.Measurements, c.Measurement) {
		vs = append(vs, Violation{"resource rule " + rule.Resource + " measurement", "one of " + list(rule.Measurements), c.Measurement})
	}
	if len(rule.InitDataDigests) > 0 && !containsFold(rule.InitDataDigests, digest) {
		vs = append(vs, Violation{"resource rule " + rule.Resource + " init-data digest", "one of " + list(rule.InitDataDigests), digest})
	}
	return vs
}
