package server

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/veil-runtime/veil/attestation/kbs"
	"github.com/veil-runtime/veil/attestation/policy"
)

// Admin API paths (Server.Admin). Every request carries "Authorization:
// Bearer <admin token>".
const (
	AdminPrefix                = "/admin/v0"
	AdminPathAttestationPolicy = AdminPrefix + "/attestation-policy"
	AdminPathResourcePolicy    = AdminPrefix + "/resource-policy"
	// AdminPathResource + repo/type/tag: GET, PUT, DELETE one resource.
	AdminPathResource = AdminPrefix + "/resource/"
	// AdminPathResources lists the stored resources' paths.
	AdminPathResources = AdminPrefix + "/resources"
	// AdminPathEvidence lists the recorded attestations (the last per
	// client, without bodies); AdminPathEvidence + "/" + client returns
	// one, and "/latest" the newest.
	AdminPathEvidence = AdminPrefix + "/evidence"
	// AdminPathExplain replays a Recorded attestation against the current
	// policy and answers an Explanation.
	AdminPathExplain = AdminPrefix + "/explain"
)

func (s *Server) routeAdmin() {
	m := s.adminMux
	m.HandleFunc("GET "+PathHealth, s.handleHealth)
	m.Handle("GET "+PathMetrics, s.metrics.handler())
	m.HandleFunc("GET "+AdminPathAttestationPolicy, s.admin(func(w http.ResponseWriter, r *http.Request) {
		p, err := s.cfg.Store.AttestationPolicy()
		if err != nil {
			writeError(w, http.StatusInternalServerError, kbs.ErrorInternal, err.Error())
			return
		}
		writeJSON(w, p)
	}))
	m.HandleFunc("PUT "+AdminPathAttestationPolicy, s.admin(func(w http.ResponseWriter, r *http.Request) {
		var p policy.Attestation
		if !decodeBody(w, r, &p) {
			return
		}
		if !s.fitForProduction(w, &p, nil) {
			return
		}
		if err := s.cfg.Store.SetAttestationPolicy(p); err != nil {
			writeError(w, http.StatusInternalServerError, kbs.ErrorInternal, err.Error())
			return
		}
		s.log.Info("admin: attestation policy set")
		w.WriteHeader(http.StatusNoContent)
	}))
	m.HandleFunc("GET "+AdminPathResourcePolicy, s.admin(func(w http.ResponseWriter, r *http.Request) {
		p, err := s.cfg.Store.ResourcePolicy()
		if err != nil {
			writeError(w, http.StatusInternalServerError, kbs.ErrorInternal, err.Error())
			return
		}
		writeJSON(w, p)
	}))
	m.HandleFunc("PUT "+AdminPathResourcePolicy, s.admin(func(w http.ResponseWriter, r *http.Request) {
		var p policy.Resources
		if !decodeBody(w, r, &p) {
			return
		}
		if err := p.Validate(); err != nil {
			writeError(w, http.StatusBadRequest, kbs.ErrorInvalidRequest, err.Error())
			return
		}
		if !s.fitForProduction(w, nil, &p) {
			return
		}
		if err := s.cfg.Store.SetResourcePolicy(p); err != nil {
			writeError(w, http.StatusBadRequest, kbs.ErrorInvalidRequest, err.Error())
			return
		}
		s.log.Info("admin: resource policy set")
		w.WriteHeader(http.StatusNoContent)
	}))
	m.HandleFunc("GET "+AdminPathResources, s.admin(func(w http.ResponseWriter, r *http.Request) {
		list, err := s.cfg.Store.Resources()
		if err != nil {
			writeError(w, http.StatusInternalServerError, kbs.ErrorInternal, err.Error())
			return
		}
		writeJSON(w, list)
	}))
	resource := AdminPathResource + "{repo}/{type}/{tag}"
	m.HandleFunc("GET "+resource, s.admin(func(w http.ResponseWriter, r *http.Request) {
		path := r.PathValue("repo") + "/" + r.PathValue("type") + "/" + r.PathValue("tag")
		data, err := s.cfg.Store.Resource(path)
		if !s.storeError(w, err) {
			return
		}
		s.log.Info("admin: resource read", "resource", path, "bytes", len(data))
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write(data) // the client is gone: nobody to tell
	}))
	m.HandleFunc("PUT "+resource, s.admin(func(w http.ResponseWriter, r *http.Request) {
		path := r.PathValue("repo") + "/" + r.PathValue("type") + "/" + r.PathValue("tag")
		data, err := readBody(w, r, maxResourceBody)
		if err != nil {
			writeError(w, http.StatusBadRequest, kbs.ErrorInvalidRequest, err.Error())
			return
		}
		if err := s.cfg.Store.SetResource(path, data); err != nil {
			writeError(w, http.StatusBadRequest, kbs.ErrorInvalidRequest, err.Error())
			return
		}
		s.log.Info("admin: resource set", "resource", path, "bytes", len(data))
		w.WriteHeader(http.StatusNoContent)
	}))
	m.HandleFunc("DELETE "+resource, s.admin(func(w http.ResponseWriter, r *http.Request) {
		path := r.PathValue("repo") + "/" + r.PathValue("type") + "/" + r.PathValue("tag")
		if !s.storeError(w, s.cfg.Store.DeleteResource(path)) {
			return
		}
		s.log.Info("admin: resource deleted", "resource", path)
		w.WriteHeader(http.StatusNoContent)
	}))
	m.HandleFunc("GET "+AdminPathEvidence, s.admin(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, s.recorder.list())
	}))
	m.HandleFunc("GET "+AdminPathEvidence+"/{client...}", s.admin(func(w http.ResponseWriter, r *http.Request) {
		client := r.PathValue("client")
		if client == "latest" {
			client = ""
		}
		rec, ok := s.recorder.get(client)
		if !ok {
			writeError(w, http.StatusNotFound, kbs.ErrorResourceNotFound, "no attestation recorded from "+r.PathValue("client")+" (the broker keeps the last one per client, in memory)")
			return
		}
		writeJSON(w, rec)
	}))
	m.HandleFunc("POST "+AdminPathExplain, s.admin(func(w http.ResponseWriter, r *http.Request) {
		var rec Recorded
		if !decodeBody(w, r, &rec) {
			return
		}
		ex, err := s.Explain(r.Context(), rec)
		if err != nil {
			writeError(w, http.StatusBadRequest, kbs.ErrorInvalidRequest, err.Error())
			return
		}
		writeJSON(w, ex)
	}))
}

// fitForProduction refuses, outside dev mode, a policy change that would
// leave the pair of policies unfit (policy.Production); a nil argument
// keeps the stored one. It writes the refusal and returns false.
func (s *Server) fitForProduction(w http.ResponseWriter, a *policy.Attestation, rp *policy.Resources) bool {
	if s.cfg.Dev {
		return true
	}
	if a == nil {
		p, err := s.cfg.Store.AttestationPolicy()
		if err != nil {
			writeError(w, http.StatusInternalServerError, kbs.ErrorInternal, err.Error())
			return false
		}
		a = &p
	}
	if rp == nil {
		p, err := s.cfg.Store.ResourcePolicy()
		if err != nil {
			writeError(w, http.StatusInternalServerError, kbs.ErrorInternal, err.Error())
			return false
		}
		rp = &p
	}
	if err := policy.CheckProduction(*a, *rp, s.broker()); err != nil {
		s.log.Warn("admin: policy refused", "reason", err.Error())
		writeError(w, http.StatusBadRequest, kbs.ErrorInvalidRequest, err.Error())
		return false
	}
	return true
}

// storeError writes err as the admin answer; it returns true when err is
// nil.
func (s *Server) storeError(w http.ResponseWriter, err error) bool {
	switch {
	case err == nil:
		return true
	case errors.Is(err, ErrNotFound):
		writeError(w, http.StatusNotFound, kbs.ErrorResourceNotFound, err.Error())
	case strings.HasPrefix(err.Error(), "resource path"):
		writeError(w, http.StatusBadRequest, kbs.ErrorInvalidRequest, err.Error())
	default:
		writeError(w, http.StatusInternalServerError, kbs.ErrorInternal, err.Error())
	}
	return false
}

// admin wraps h with admin token authentication.
func (s *Server) admin(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.AdminToken == "" {
			writeError(w, http.StatusForbidden, kbs.ErrorUnauthenticated, "admin API disabled: no admin token configured")
			return
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(s.cfg.AdminToken)) != 1 {
			s.log.Warn("admin: rejected request", "remote", r.RemoteAddr, "path", r.URL.Path)
			writeError(w, http.StatusUnauthorized, kbs.ErrorUnauthenticated, "admin API: missing or wrong bearer token")
			return
		}
		h(w, r)
	}
}

func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	body, err := readBody(w, r, maxPolicyBody)
	if err != nil {
		writeError(w, http.StatusBadRequest, kbs.ErrorInvalidRequest, err.Error())
		return false
	}
	if err := DecodeStrict(body, v); err != nil {
		writeError(w, http.StatusBadRequest, kbs.ErrorInvalidRequest, "decoding request: "+err.Error())
		return false
	}
	return true
}

// Explanation is the answer of veil-kbs explain: every check the broker
// makes of a recorded attestation under the current policy.
type Explanation struct {
	Client string  `json:"client,omitempty"`
	Tee    kbs.Tee `json:"tee"`
	// Recorded is what the broker decided when it received the
	// attestation.
	Recorded string `json:"recorded,omitempty"`
	// Checks are the checks made now, in order; the first failure before
	// the policy stops the replay, as it stops an attestation.
	Checks []policy.Check `json:"checks"`
	// Accepted says whether the current policy accepts the attestation
	// (nonce freshness aside: a replay is never fresh).
	Accepted bool `json:"accepted"`
	// Resources lists, for each stored resource, whether the resource
	// policy would release it to this evidence, and why not.
	Resources []ResourceDecision `json:"resources,omitempty"`
}

// ResourceDecision is the resource policy's answer for one resource.
type ResourceDecision struct {
	Resource string `json:"resource"`
	Allowed  bool   `json:"allowed"`
	Reason   string `json:"reason,omitempty"`
}

// Explain replays rec against the current attestation and resource
// policies with this broker's verifiers.
func (s *Server) Explain(ctx context.Context, rec Recorded) (Explanation, error) {
	att, err := kbs.DecodeAttestation(rec.Attestation, rec.Nonce)
	if err != nil {
		return Explanation{}, fmt.Errorf("recorded attestation: decoding: %w", err)
	}
	if rec.Tee == "" {
		return Explanation{}, errors.New("recorded attestation: tee: expected snp, tdx or sample, seen none")
	}
	pol, err := s.cfg.Store.AttestationPolicy()
	if err != nil {
		return Explanation{}, err
	}
	nonce := rec.Nonce
	if nonce == "" {
		// A file without the session's nonce: bind to what it carries.
		nonce = att.RuntimeData.Nonce
	}
	a := s.assess(ctx, pol, rec.Tee, nonce, att)
	ex := Explanation{Client: rec.Client, Tee: rec.Tee, Checks: a.checks}
	if rec.Outcome != "" {
		ex.Recorded = rec.Outcome
		if rec.Detail != "" {
			ex.Recorded += ": " + rec.Detail
		}
	}
	ex.Accepted = a.stop == nil && len(a.violations()) == 0
	if !ex.Accepted {
		return ex, nil
	}
	rp, err := s.cfg.Store.ResourcePolicy()
	if err != nil {
		return Explanation{}, err
	}
	list, err := s.cfg.Store.Resources()
	if err != nil {
		return Explanation{}, err
	}
	for _, res := range list {
		d := ResourceDecision{Resource: res, Allowed: true}
		if err := rp.Allow(res, a.claims, a.digest); err != nil {
			d.Allowed, d.Reason = false, err.Error()
		}
		ex.Resources = append(ex.Resources, d)
	}
	return ex, nil
}
