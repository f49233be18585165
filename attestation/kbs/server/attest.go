package server

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/veil-runtime/veil/attestation/evidence"
	"github.com/veil-runtime/veil/attestation/initdata"
	"github.com/veil-runtime/veil/attestation/kbs"
	"github.com/veil-runtime/veil/attestation/policy"
	"github.com/veil-runtime/veil/attestation/verify"
)

func (s *Server) handleAttest(w http.ResponseWriter, r *http.Request) {
	now := s.cfg.Now()
	log := s.log.With("remote", r.RemoteAddr, "step", "attest")
	cookie, err := r.Cookie(kbs.SessionCookie)
	if err != nil {
		s.metrics.attest.WithLabelValues("none", outcomeNoSession).Inc()
		writeError(w, http.StatusUnauthorized, kbs.ErrorUnauthenticated, "no "+kbs.SessionCookie+" cookie: call "+kbs.PathAuth+" first")
		return
	}
	se, ok := s.sessions.take(cookie.Value)
	if !ok {
		s.metrics.attest.WithLabelValues("none", outcomeNoSession).Inc()
		log.Info("rejected", "reason", "unknown session")
		writeError(w, http.StatusUnauthorized, kbs.ErrorUnauthenticated, "unknown or expired session: call "+kbs.PathAuth+" again")
		return
	}
	log = log.With("session", logID(se.id), "tee", se.tee)
	if se.tee == kbs.TeeSample {
		log = log.With("insecure", evidence.SampleWarning)
	}
	var body []byte
	reject := func(outcome string, err error) {
		s.metrics.attest.WithLabelValues(teeLabel(se.tee), outcome).Inc()
		var rej *policy.Rejection
		if errors.As(err, &rej) {
			for _, v := range rej.Violations {
				s.metrics.violations.WithLabelValues(teeLabel(se.tee), v.Field).Inc()
			}
			log.Warn("attestation rejected", "violations", rej.Violations)
		} else {
			log.Warn("attestation rejected", "reason", err.Error())
		}
		if json.Valid(body) {
			s.recorder.put(Recorded{Client: se.client, Time: now, Tee: se.tee, Nonce: se.nonce, Outcome: outcome, Detail: err.Error(), Attestation: body})
		}
		writeError(w, http.StatusUnauthorized, kbs.ErrorAttestationFailed, err.Error())
	}
	if se.used {
		reject(outcomeReplay, fmt.Errorf("nonce: expected a nonce not used before, seen %s used already (replay)", se.nonce))
		return
	}
	if !now.Before(se.expires) {
		reject(outcomeExpired, fmt.Errorf("nonce: expected use before %s, seen use at %s (expired)", se.expires.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339)))
		return
	}
	body, err = readBody(w, r, maxAttestBody)
	if err != nil {
		reject(outcomeMalformed, err)
		return
	}
	att, err := kbs.DecodeAttestation(body, se.nonce)
	if err != nil {
		reject(outcomeMalformed, fmt.Errorf("decoding attestation: %w", err))
		return
	}
	pol, err := s.cfg.Store.AttestationPolicy()
	if err != nil {
		s.metrics.attest.WithLabelValues(teeLabel(se.tee), outcomeInternal).Inc()
		log.Error("loading attestation policy", "err", err)
		writeError(w, http.StatusInternalServerError, kbs.ErrorInternal, "loading attestation policy")
		return
	}
	a := s.assess(r.Context(), pol, se.tee, se.nonce, att)
	if a.stop != nil {
		reject(a.outcome, a.stop)
		return
	}
	if err := policy.Reject(a.violations()); err != nil {
		reject(outcomePolicy, err)
		return
	}
	g := &grant{claims: a.claims, teePubKey: att.RuntimeData.TeePubKey, initDataDigest: a.digest, expires: now.Add(s.cfg.GrantTTL)}
	token, err := s.tokens.issue(g, now)
	if err != nil {
		s.metrics.attest.WithLabelValues(teeLabel(se.tee), outcomeInternal).Inc()
		log.Error("issuing token", "err", err)
		writeError(w, http.StatusInternalServerError, kbs.ErrorInternal, "issuing token")
		return
	}
	s.sessions.attest(se.id, g)
	s.setCookie(w, r, se.id)
	s.metrics.attest.WithLabelValues(teeLabel(se.tee), outcomeOK).Inc()
	s.recorder.put(Recorded{Client: se.client, Time: now, Tee: se.tee, Nonce: se.nonce, Outcome: outcomeOK, Attestation: body})
	log.Info("attestation accepted", "measurement", a.claims.Measurement, "init_data_digest", digestOrNone(a.digest), "until", g.expires.UTC().Format(time.RFC3339))
	writeJSON(w, kbs.AttestationResult{Token: token})
}

func digestOrNone(d string) string {
	if d == "" {
		return "none"
	}
	return d
}

// assessment is every check of one attestation after the session's own
// (nonce single use and lifetime): the binding to the session, the
// evidence's signatures, and the attestation policy.
type assessment struct {
	// checks are the checks made, passed or failed, in order.
	checks []policy.Check
	// stop is the failure that ended the assessment before the policy
	// could be evaluated (the guest receives it as is); outcome is its
	// metrics reason.
	stop    error
	outcome string
	claims  verify.Claims
	// digest is the hex init-data digest; empty without init-data.
	digest string
}

func (a *assessment) pass(field, expected, seen string) {
	a.checks = append(a.checks, policy.Check{Field: field, Expected: expected, Seen: seen, OK: true})
}

func (a *assessment) fail(outcome, field, expected, seen string, err error) assessment {
	a.checks = append(a.checks, policy.Check{Field: field, Expected: expected, Seen: seen})
	a.stop, a.outcome = err, outcome
	return *a
}

// violations are the failed policy checks.
func (a *assessment) violations() []policy.Violation {
	var vs []policy.Violation
	for _, c := range a.checks {
		if !c.OK {
			vs = append(vs, policy.Violation{Field: c.Field, Expected: c.Expected, Seen: c.Seen})
		}
	}
	return vs
}

// assess checks an attestation sent on a session for tee with nonce
// against pol. The handler and veil-kbs explain share it, so explain
// shows exactly what the broker decides.
func (s *Server) assess(ctx context.Context, pol policy.Attestation, tee kbs.Tee, nonce string, att kbs.Attestation) assessment {
	var a assessment
	if att.RuntimeData.Nonce != nonce {
		return a.fail(outcomeBinding, "runtime-data.nonce", nonce, att.RuntimeData.Nonce,
			fmt.Errorf("runtime-data.nonce: expected %s, seen %s", nonce, att.RuntimeData.Nonce))
	}
	a.pass("runtime-data.nonce", "the session's nonce", nonce)
	if _, _, err := att.RuntimeData.TeePubKey.PublicKey(); err != nil {
		return a.fail(outcomeBinding, "runtime-data.tee-pubkey", "a P-256 or RSA public key (JWK)", err.Error(),
			fmt.Errorf("runtime-data.tee-pubkey: %w", err))
	}
	a.pass("runtime-data.tee-pubkey", "a public key (JWK)", string(att.RuntimeData.TeePubKey.Kty))
	if att.TeeEvidence.AdditionalEvidence != "" {
		return a.fail(outcomeBinding, "tee-evidence.additional_evidence", "none", fmt.Sprintf("%d bytes", len(att.TeeEvidence.AdditionalEvidence)),
			fmt.Errorf("tee-evidence.additional_evidence: expected none (veil-kbs verifies no additional devices), seen %d bytes", len(att.TeeEvidence.AdditionalEvidence)))
	}
	expected, err := kbs.ExpectedReportData(att.RuntimeData, att.TeeEvidence.AdditionalEvidence, kbs.SHA384)
	if err != nil {
		return a.fail(outcomeBinding, "runtime-data", "canonical JSON", err.Error(), fmt.Errorf("runtime-data: %w", err))
	}
	if att.InitData != nil {
		if att.InitData.Format != "toml" {
			return a.fail(outcomeInitData, "init-data.format", "toml", att.InitData.Format,
				fmt.Errorf("init-data.format: expected toml, seen %q", att.InitData.Format))
		}
		d, err := initdata.BrokerDigest([]byte(att.InitData.Body))
		if err != nil {
			return a.fail(outcomeInitData, "init-data.body", "a valid init-data document", err.Error(), fmt.Errorf("init-data.body: %w", err))
		}
		a.digest = hex.EncodeToString(d)
		a.pass("init-data.body", "a valid init-data document", "digest "+a.digest)
	}
	v, ok := s.verifiers[tee]
	if !ok {
		return a.fail(outcomeEvidence, "tee", fmt.Sprintf("one of %v", s.acceptedTees()), string(tee),
			fmt.Errorf("tee: expected one of %v, seen %q", s.acceptedTees(), tee))
	}
	claims, err := v.Verify(ctx, att.TeeEvidence.PrimaryEvidence)
	if err != nil {
		return a.fail(outcomeEvidence, "tee-evidence", string(tee)+" evidence that verifies against the pinned roots", err.Error(),
			fmt.Errorf("tee-evidence: expected %s evidence that verifies against the pinned roots, seen: %w", tee, err))
	}
	a.pass("tee-evidence", string(tee)+" evidence that verifies against the pinned roots", "verified")
	if claims.Tee != tee {
		return a.fail(outcomeEvidence, "tee-evidence tee", string(tee)+" (from auth)", string(claims.Tee),
			fmt.Errorf("tee-evidence tee: expected %s (from auth), seen %s", tee, claims.Tee))
	}
	a.claims = claims
	a.checks = append(a.checks, policy.Explain(pol, claims, policy.Binding{ReportData: hex.EncodeToString(expected[:]), InitDataDigest: a.digest})...)
	return a
}
