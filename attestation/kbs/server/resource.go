package server

import (
	"errors"
	"net/http"
	"strings"

	"github.com/veil-runtime/veil/attestation/evidence"
	"github.com/veil-runtime/veil/attestation/kbs"
)

// grantOf authenticates a resource request by session cookie or by a
// bearer token this broker issued.
func (s *Server) grantOf(r *http.Request) (*grant, string, error) {
	now := s.cfg.Now()
	if c, err := r.Cookie(kbs.SessionCookie); err == nil {
		g, err := s.sessions.grantFor(c.Value, now)
		return g, logID(c.Value), err
	}
	if h := r.Header.Get("Authorization"); strings.HasPrefix(h, "Bearer ") {
		g, err := s.tokens.check(strings.TrimPrefix(h, "Bearer "), now)
		return g, "bearer", err
	}
	return nil, "", errors.New("no " + kbs.SessionCookie + " cookie and no bearer token: attest first")
}

func (s *Server) handleResource(w http.ResponseWriter, r *http.Request) {
	path := r.PathValue("repo") + "/" + r.PathValue("type") + "/" + r.PathValue("tag")
	log := s.log.With("remote", r.RemoteAddr, "step", "resource", "resource", path)
	g, who, err := s.grantOf(r)
	if err != nil {
		s.metrics.resource.WithLabelValues("none", outcomeUnauthenticated).Inc()
		log.Info("rejected", "reason", err.Error())
		writeError(w, http.StatusUnauthorized, kbs.ErrorUnauthenticated, err.Error())
		return
	}
	log = log.With("session", who, "tee", g.claims.Tee)
	count := func(outcome string) { s.metrics.resource.WithLabelValues(teeLabel(g.claims.Tee), outcome).Inc() }
	if g.claims.Tee == kbs.TeeSample {
		if !s.cfg.Dev {
			count(outcomeUnauthenticated)
			log.Warn("rejected", "reason", "sample grant outside dev mode")
			writeError(w, http.StatusUnauthorized, kbs.ErrorAttestationFailed, "tee: expected hardware evidence, seen \"sample\" outside dev mode")
			return
		}
		log = log.With("insecure", evidence.SampleWarning)
	}
	if _, err := ResourcePath(path); err != nil {
		count(outcomeBadPath)
		writeError(w, http.StatusBadRequest, kbs.ErrorInvalidRequest, err.Error())
		return
	}
	rp, err := s.cfg.Store.ResourcePolicy()
	if err != nil {
		count(outcomeInternal)
		log.Error("loading resource policy", "err", err)
		writeError(w, http.StatusInternalServerError, kbs.ErrorInternal, "loading resource policy")
		return
	}
	if err := rp.Allow(path, g.claims, g.initDataDigest); err != nil {
		count(outcomePolicyDeny)
		log.Warn("resource denied", "reason", err.Error())
		writeError(w, http.StatusForbidden, kbs.ErrorPolicyDeny, err.Error())
		return
	}
	data, err := s.cfg.Store.Resource(path)
	if errors.Is(err, ErrNotFound) {
		count(outcomeNotFound)
		writeError(w, http.StatusNotFound, kbs.ErrorResourceNotFound, "resource "+path+" not found")
		return
	}
	if err != nil {
		count(outcomeInternal)
		log.Error("reading resource", "err", err)
		writeError(w, http.StatusInternalServerError, kbs.ErrorInternal, "reading resource")
		return
	}
	resp, err := kbs.Seal(g.teePubKey, data)
	if err != nil {
		count(outcomeInternal)
		log.Error("sealing resource", "err", err)
		writeError(w, http.StatusInternalServerError, kbs.ErrorInternal, "sealing resource")
		return
	}
	count(outcomeOK)
	log.Info("resource released", "bytes", len(data))
	writeJSON(w, resp)
}
