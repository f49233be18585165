package server

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/veil-runtime/veil/attestation/kbs"
)

// metrics are the broker's Prometheus counters, on a registry of its own
// (no package globals). Labels take values from small fixed sets only:
// a TEE name a client sends is folded to "other" when it is not one the
// broker knows, and no label carries a client address or a resource
// path, so a client cannot grow the series without bound.
type metrics struct {
	reg        *prometheus.Registry
	auth       *prometheus.CounterVec
	attest     *prometheus.CounterVec
	violations *prometheus.CounterVec
	resource   *prometheus.CounterVec
}

// Outcomes (the "outcome" label).
const (
	outcomeOK          = "ok"
	outcomeMalformed   = "malformed"
	outcomeVersion     = "version"
	outcomeTee         = "tee"
	outcomeHash        = "hash_algorithm"
	outcomeClientLimit = "client_limit"
	outcomeBusy        = "busy"

	outcomeNoSession       = "no_session"
	outcomeReplay          = "replay"
	outcomeExpired         = "expired"
	outcomeBinding         = "binding"
	outcomeInitData        = "init_data"
	outcomeEvidence        = "evidence"
	outcomePolicy          = "policy"
	outcomeInternal        = "internal"
	outcomeUnauthenticated = "unauthenticated"
	outcomePolicyDeny      = "policy_deny"
	outcomeNotFound        = "not_found"
	outcomeBadPath         = "bad_path"
)

func newMetrics(sessionCount func() int) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		auth: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "veil_kbs_auth_total",
			Help: "Challenge requests (POST /kbs/v0/auth) by TEE and outcome: ok, malformed, version, tee, hash_algorithm, client_limit, busy.",
		}, []string{"tee", "outcome"}),
		attest: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "veil_kbs_attest_total",
			Help: "Attestations (POST /kbs/v0/attest) by TEE and outcome: ok, no_session, replay, expired, malformed, binding, init_data, evidence, policy, internal.",
		}, []string{"tee", "outcome"}),
		violations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "veil_kbs_attest_violations_total",
			Help: "Attestation policy violations by TEE and policy field (snp.measurement, tdx.rtmr1, ...).",
		}, []string{"tee", "field"}),
		resource: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "veil_kbs_resource_total",
			Help: "Resource reads (GET /kbs/v0/resource/...) by TEE and outcome: ok, unauthenticated, bad_path, policy_deny, not_found, internal.",
		}, []string{"tee", "outcome"}),
	}
	m.reg.MustRegister(m.auth, m.attest, m.violations, m.resource,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "veil_kbs_sessions",
			Help: "Sessions the broker holds (pending challenges and attested grants).",
		}, func() float64 { return float64(sessionCount()) }))
	return m
}

// teeLabel folds a client-supplied TEE name into the fixed label set.
func teeLabel(t kbs.Tee) string {
	switch t {
	case kbs.TeeSNP, kbs.TeeTDX, kbs.TeeSample:
		return string(t)
	case "":
		return "none"
	}
	return "other"
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}
