package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/veil-runtime/veil/attestation/evidence"
	"github.com/veil-runtime/veil/attestation/kbs"
)

// checkVersion accepts the protocol versions kbs.CheckProtocolVersion
// names (0.3.x and 0.4.x).
func checkVersion(v string) error { return kbs.CheckProtocolVersion(v) }

func (s *Server) handleAuth(w http.ResponseWriter, r *http.Request) {
	log := s.log.With("remote", r.RemoteAddr, "step", "auth")
	body, err := readBody(w, r, maxAuthBody)
	if err != nil {
		s.metrics.auth.WithLabelValues("none", outcomeMalformed).Inc()
		writeError(w, http.StatusBadRequest, kbs.ErrorInvalidRequest, err.Error())
		return
	}
	var req kbs.Request
	if err := json.Unmarshal(body, &req); err != nil {
		s.metrics.auth.WithLabelValues("none", outcomeMalformed).Inc()
		writeError(w, http.StatusBadRequest, kbs.ErrorInvalidRequest, "decoding request: "+err.Error())
		return
	}
	if err := checkVersion(req.Version); err != nil {
		s.metrics.auth.WithLabelValues(teeLabel(req.Tee), outcomeVersion).Inc()
		log.Info("rejected", "reason", err)
		writeError(w, http.StatusBadRequest, kbs.ErrorVersionUnsupported, err.Error())
		return
	}
	if _, ok := s.verifiers[req.Tee]; !ok {
		detail := fmt.Sprintf("tee: expected one of %v, seen %q", s.acceptedTees(), req.Tee)
		attrs := []any{"tee", req.Tee, "reason", detail}
		if req.Tee == kbs.TeeSample {
			detail = "tee: expected hardware evidence, seen \"sample\": this broker accepts sample evidence only when started in dev mode (--dev)"
			attrs = []any{"tee", req.Tee, "reason", detail, "insecure", evidence.SampleWarning}
		}
		s.metrics.auth.WithLabelValues(teeLabel(req.Tee), outcomeTee).Inc()
		log.Warn("rejected", attrs...)
		writeError(w, http.StatusUnauthorized, kbs.ErrorAttestationFailed, detail)
		return
	}
	if err := checkHashAlgorithms(req.ExtraParams); err != nil {
		s.metrics.auth.WithLabelValues(teeLabel(req.Tee), outcomeHash).Inc()
		log.Info("rejected", "tee", req.Tee, "reason", err)
		writeError(w, http.StatusBadRequest, kbs.ErrorInvalidRequest, err.Error())
		return
	}
	se, err := s.sessions.open(clientOf(r.RemoteAddr), req.Tee, s.cfg.Now(), s.cfg.NonceTTL)
	var limit *clientLimitError
	switch {
	case errors.As(err, &limit):
		s.metrics.auth.WithLabelValues(teeLabel(req.Tee), outcomeClientLimit).Inc()
		log.Warn("rejected", "tee", req.Tee, "reason", err.Error())
		w.Header().Set("Retry-After", fmt.Sprint(int(s.cfg.NonceTTL.Seconds())))
		writeError(w, http.StatusTooManyRequests, kbs.ErrorInvalidRequest, err.Error())
		return
	case err != nil:
		s.metrics.auth.WithLabelValues(teeLabel(req.Tee), outcomeBusy).Inc()
		log.Error("opening session", "err", err)
		writeError(w, http.StatusServiceUnavailable, kbs.ErrorInternal, err.Error())
		return
	}
	s.metrics.auth.WithLabelValues(teeLabel(req.Tee), outcomeOK).Inc()
	extra, _ := json.Marshal(map[string]string{kbs.ExtraSelectedHashAlgorithm: string(kbs.SHA384)})
	s.setCookie(w, r, se.id)
	attrs := []any{"session", logID(se.id), "tee", req.Tee}
	if req.Tee == kbs.TeeSample {
		attrs = append(attrs, "insecure", evidence.SampleWarning)
	}
	log.Info("challenge issued", attrs...)
	writeJSON(w, kbs.Challenge{Nonce: se.nonce, ExtraParams: extra})
}

// checkHashAlgorithms fails when the guest lists the hashes it supports
// and SHA-384, the only one this broker selects, is not among them.
func checkHashAlgorithms(extra json.RawMessage) error {
	var params map[string]any
	if len(extra) == 0 || json.Unmarshal(extra, &params) != nil {
		return nil
	}
	list, ok := params[kbs.ExtraSupportedHashAlgorithms].([]any)
	if !ok {
		return nil
	}
	if slices.ContainsFunc(list, func(v any) bool { s, _ := v.(string); return strings.EqualFold(s, string(kbs.SHA384)) }) {
		return nil
	}
	return fmt.Errorf("extra-params %s: expected a list with sha384, seen %v", kbs.ExtraSupportedHashAlgorithms, list)
}

func (s *Server) acceptedTees() []kbs.Tee {
	var out []kbs.Tee
	for t := range s.verifiers {
		out = append(out, t)
	}
	slices.Sort(out)
	return out
}
