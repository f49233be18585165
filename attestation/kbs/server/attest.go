package server

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/veil-runtime/veil/attestation/evidence"
	"github.com/veil-runtime/veil/attestation/initdata"
	"github.com/veil-runtime/veil/attestation/kbs"
	"github.com/veil-runtime/veil/attestation/policy"
)

func (s *Server) handleAttest(w http.ResponseWriter, r *http.Request) {
	now := s.cfg.Now()
	log := s.log.With("remote", r.RemoteAddr, "step", "attest")
	cookie, err := r.Cookie(kbs.SessionCookie)
	if err != nil {
		writeError(w, http.StatusUnauthorized, kbs.ErrorUnauthenticated, "no "+kbs.SessionCookie+" cookie: call "+kbs.PathAuth+" first")
		return
	}
	se, ok := s.sessions.take(cookie.Value)
	if !ok {
		log.Info("rejected", "reason", "unknown session")
		writeError(w, http.StatusUnauthorized, kbs.ErrorUnauthenticated, "unknown or expired session: call "+kbs.PathAuth+" again")
		return
	}
	log = log.With("session", logID(se.id), "tee", se.tee)
	if se.tee == kbs.TeeSample {
		log = log.With("insecure", evidence.SampleWarning)
	}
	reject := func(err error) {
		var rej *policy.Rejection
		if errors.As(err, &rej) {
			log.Warn("attestation rejected", "violations", rej.Violations)
		} else {
			log.Warn("attestation rejected", "reason", err.Error())
		}
		writeError(w, http.StatusUnauthorized, kbs.ErrorAttestationFailed, err.Error())
	}
	if se.used {
		reject(fmt.Errorf("nonce: expected a nonce not used before, seen %s used already (replay)", se.nonce))
		return
	}
	if !now.Before(se.expires) {
		reject(fmt.Errorf("nonce: expected use before %s, seen use at %s (expired)", se.expires.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339)))
		return
	}
	body, err := readBody(w, r, maxAttestBody)
	if err != nil {
		reject(err)
		return
	}
	att, err := kbs.DecodeAttestation(body, se.nonce)
	if err != nil {
		reject(fmt.Errorf("decoding attestation: %w", err))
		return
	}
	if att.RuntimeData.Nonce != se.nonce {
		reject(fmt.Errorf("runtime-data.nonce: expected %s, seen %s", se.nonce, att.RuntimeData.Nonce))
		return
	}
	if _, _, err := att.RuntimeData.TeePubKey.PublicKey(); err != nil {
		reject(fmt.Errorf("runtime-data.tee-pubkey: %w", err))
		return
	}
	if att.TeeEvidence.AdditionalEvidence != "" {
		reject(fmt.Errorf("tee-evidence.additional_evidence: expected none (veil-kbs verifies no additional devices), seen %d bytes", len(att.TeeEvidence.AdditionalEvidence)))
		return
	}
	expected, err := kbs.ExpectedReportData(att.RuntimeData, att.TeeEvidence.AdditionalEvidence, kbs.SHA384)
	if err != nil {
		reject(fmt.Errorf("runtime-data: %w", err))
		return
	}
	var digest string
	if att.InitData != nil {
		if att.InitData.Format != "toml" {
			reject(fmt.Errorf("init-data.format: expected toml, seen %q", att.InitData.Format))
			return
		}
		d, err := initdata.BrokerDigest([]byte(att.InitData.Body))
		if err != nil {
			reject(fmt.Errorf("init-data.body: %w", err))
			return
		}
		digest = hex.EncodeToString(d)
	}
	claims, err := s.verifiers[se.tee].Verify(r.Context(), att.TeeEvidence.PrimaryEvidence)
	if err != nil {
		reject(fmt.Errorf("tee-evidence: expected %s evidence that verifies against the pinned roots, seen: %w", se.tee, err))
		return
	}
	if claims.Tee != se.tee {
		reject(fmt.Errorf("tee-evidence tee: expected %s (from auth), seen %s", se.tee, claims.Tee))
		return
	}
	pol, err := s.cfg.Store.AttestationPolicy()
	if err != nil {
		log.Error("loading attestation policy", "err", err)
		writeError(w, http.StatusInternalServerError, kbs.ErrorInternal, "loading attestation policy")
		return
	}
	if err := policy.Reject(policy.Evaluate(pol, claims, policy.Binding{ReportData: hex.EncodeToString(expected[:]), InitDataDigest: digest})); err != nil {
		reject(err)
		return
	}
	g := &grant{claims: claims, teePubKey: att.RuntimeData.TeePubKey, initDataDigest: digest, expires: now.Add(s.cfg.GrantTTL)}
	token, err := s.tokens.issue(g, now)
	if err != nil {
		log.Error("issuing token", "err", err)
		writeError(w, http.StatusInternalServerError, kbs.ErrorInternal, "issuing token")
		return
	}
	s.sessions.attest(se.id, g)
	s.setCookie(w, r, se.id)
	log.Info("attestation accepted", "measurement", claims.Measurement, "init_data_digest", digest, "until", g.expires.UTC().Format(time.RFC3339))
	writeJSON(w, kbs.AttestationResult{Token: token})
}
