package server

import (
	"crypto/subtle"
	"net/http"
	"strings"

	"github.com/veil-runtime/veil/attestation/kbs"
	"github.com/veil-runtime/veil/attestation/policy"
)

// Admin API paths. Every request carries "Authorization: Bearer <admin
// token>".
const (
	AdminPrefix                = "/admin/v0"
	AdminPathAttestationPolicy = AdminPrefix + "/attestation-policy"
	AdminPathResourcePolicy    = AdminPrefix + "/resource-policy"
	AdminPathResource          = AdminPrefix + "/resource/"
)

func (s *Server) routeAdmin() {
	s.mux.HandleFunc("GET "+AdminPathAttestationPolicy, s.admin(func(w http.ResponseWriter, r *http.Request) {
		p, err := s.cfg.Store.AttestationPolicy()
		if err != nil {
			writeError(w, http.StatusInternalServerError, kbs.ErrorInternal, err.Error())
			return
		}
		writeJSON(w, p)
	}))
	s.mux.HandleFunc("PUT "+AdminPathAttestationPolicy, s.admin(func(w http.ResponseWriter, r *http.Request) {
		var p policy.Attestation
		if !decodeBody(w, r, &p) {
			return
		}
		if err := s.cfg.Store.SetAttestationPolicy(p); err != nil {
			writeError(w, http.StatusInternalServerError, kbs.ErrorInternal, err.Error())
			return
		}
		s.log.Info("admin: attestation policy set")
		w.WriteHeader(http.StatusNoContent)
	}))
	s.mux.HandleFunc("GET "+AdminPathResourcePolicy, s.admin(func(w http.ResponseWriter, r *http.Request) {
		p, err := s.cfg.Store.ResourcePolicy()
		if err != nil {
			writeError(w, http.StatusInternalServerError, kbs.ErrorInternal, err.Error())
			return
		}
		writeJSON(w, p)
	}))
	s.mux.HandleFunc("PUT "+AdminPathResourcePolicy, s.admin(func(w http.ResponseWriter, r *http.Request) {
		var p policy.Resources
		if !decodeBody(w, r, &p) {
			return
		}
		if err := s.cfg.Store.SetResourcePolicy(p); err != nil {
			writeError(w, http.StatusBadRequest, kbs.ErrorInvalidRequest, err.Error())
			return
		}
		s.log.Info("admin: resource policy set")
		w.WriteHeader(http.StatusNoContent)
	}))
	s.mux.HandleFunc("PUT "+AdminPathResource+"{repo}/{type}/{tag}", s.admin(func(w http.ResponseWriter, r *http.Request) {
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
		writeError(w, http.StatusBadRequest, kbs.ErrorInvalidRequest, "decoding policy: "+err.Error())
		return false
	}
	return true
}
