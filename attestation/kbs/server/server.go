package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/veil-runtime/veil/attestation/evidence"
	"github.com/veil-runtime/veil/attestation/kbs"
	"github.com/veil-runtime/veil/attestation/policy"
	"github.com/veil-runtime/veil/attestation/verify"
)

// Limits on request bodies.
const (
	maxAuthBody     = 4 << 10
	maxAttestBody   = 1 << 20
	maxResourceBody = 1 << 20
	maxPolicyBody   = 1 << 20
)

// Config configures a Server.
type Config struct {
	// Store holds policies and resources.
	Store *Store
	// Verifiers check evidence per TEE. The sample verifier is added by
	// the server itself, and only in Dev mode.
	Verifiers map[kbs.Tee]verify.Verifier
	// Dev accepts sample (software) evidence. Never in production.
	Dev bool
	// AdminToken authenticates the admin API; empty disables it.
	AdminToken string
	// TokenKey signs attestation tokens; nil generates one.
	TokenKey *ecdsa.PrivateKey
	// NonceTTL is how long a challenge stays valid (default 5 minutes).
	NonceTTL time.Duration
	// GrantTTL is how long an attestation lets a session read resources
	// (default 10 minutes).
	GrantTTL time.Duration
	// MaxSessions bounds open sessions (default 10000).
	MaxSessions int
	// MaxSessionsPerClient bounds the sessions one client (a source
	// address, an IPv6 /64) holds at once (default 64), so that one
	// client cannot take every session and lock the others out.
	MaxSessionsPerClient int
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Log receives one line per decision.
	Log *slog.Logger
}

// Server is the broker. It has two faces: the protocol (ServeHTTP), for
// guests on the public listener, and the operator's (Admin: admin API and
// metrics), for a listener of its own that guests cannot reach.
type Server struct {
	cfg       Config
	verifiers map[kbs.Tee]verify.Verifier
	sessions  *sessions
	tokens    *tokens
	log       *slog.Logger
	mux       *http.ServeMux
	adminMux  *http.ServeMux
	metrics   *metrics
	recorder  *recorder
}

// New returns a broker.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil {
		return nil, errors.New("server config: no store")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.NonceTTL == 0 {
		cfg.NonceTTL = 5 * time.Minute
	}
	if cfg.GrantTTL == 0 {
		cfg.GrantTTL = 10 * time.Minute
	}
	if cfg.MaxSessions == 0 {
		cfg.MaxSessions = 10000
	}
	if cfg.MaxSessionsPerClient == 0 {
		cfg.MaxSessionsPerClient = 64
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.TokenKey == nil {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("generating token key: %w", err)
		}
		cfg.TokenKey = k
	}
	tok, err := newTokens(cfg.TokenKey)
	if err != nil {
		return nil, err
	}
	vs := map[kbs.Tee]verify.Verifier{}
	for t, v := range cfg.Verifiers {
		if t != kbs.TeeSample {
			vs[t] = v
		}
	}
	if cfg.Dev {
		vs[kbs.TeeSample] = verify.Sample{}
		cfg.Log.Warn("dev mode: accepting sample evidence", "insecure", evidence.SampleWarning)
	}
	s := &Server{cfg: cfg, verifiers: vs, sessions: newSessions(cfg.MaxSessions, cfg.MaxSessionsPerClient), tokens: tok, log: cfg.Log,
		mux: http.NewServeMux(), adminMux: http.NewServeMux(), recorder: newRecorder()}
	s.metrics = newMetrics(s.sessions.count)
	s.mux.HandleFunc("POST "+kbs.PathAuth, s.handleAuth)
	s.mux.HandleFunc("POST "+kbs.PathAttest, s.handleAttest)
	s.mux.HandleFunc("GET "+kbs.PathResource+"{repo}/{type}/{tag}", s.handleResource)
	s.mux.HandleFunc("GET "+PathHealth, s.handleHealth)
	s.routeAdmin()
	return s, nil
}

// ServeHTTP implements http.Handler: the protocol and the health check,
// for the public listener. It serves no admin path and no metrics.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mux.ServeHTTP(w, r)
}

// Admin is the operator's handler: the admin API (/admin/v0/...), the
// Prometheus metrics (/metrics) and the health check. Serve it on a
// listener of its own (veil-kbs serve --admin-listen: loopback, or mutual
// TLS), never on the public one.
func (s *Server) Admin() http.Handler { return s.adminMux }

// PathHealth answers 200 while the broker can read its store (both
// listeners), 503 otherwise; PathMetrics serves the Prometheus metrics
// (admin listener only).
const (
	PathHealth  = "/health"
	PathMetrics = "/metrics"
)

// Health is the body of a health answer.
type Health struct {
	Status string `json:"status"`
	Detail string `json:"detail,omitempty"`
	Dev    bool   `json:"dev"`
}

func (s *Server) handleHealth(w http.ResponseWriter, _ *http.Request) {
	if _, err := s.cfg.Store.AttestationPolicy(); err != nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		_ = json.NewEncoder(w).Encode(Health{Status: "unavailable", Detail: err.Error(), Dev: s.cfg.Dev}) // the client is gone: nobody to tell
		return
	}
	writeJSON(w, Health{Status: "ok", Dev: s.cfg.Dev})
}

// broker is what the production checks need to know of this broker.
func (s *Server) broker() policy.Broker {
	c, ok := s.verifiers[kbs.TeeTDX].(interface{ ChecksCollateral() bool })
	return policy.Broker{TDXCollateral: ok && c.ChecksCollateral()}
}

// CheckStore refuses, outside dev mode, a store whose policies a
// production broker must not serve (policy.Production); veil-kbs serve
// calls it before listening. An empty store is fine: it accepts nothing.
func (s *Server) CheckStore() error {
	if s.cfg.Dev {
		return nil
	}
	a, err := s.cfg.Store.AttestationPolicy()
	if err != nil {
		return err
	}
	r, err := s.cfg.Store.ResourcePolicy()
	if err != nil {
		return err
	}
	if err := policy.CheckProduction(a, r, s.broker()); err != nil {
		return fmt.Errorf("store %s: %w", s.cfg.Store.Dir(), err)
	}
	return nil
}

// NewHTTPServer wraps h in an http.Server with timeouts suited to the
// broker; the caller sets TLSConfig and calls ListenAndServeTLS.
func NewHTTPServer(addr string, h http.Handler) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
	}
}

func writeError(w http.ResponseWriter, status int, typ, detail string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(kbs.ErrorInformation{Type: typ, Detail: detail}) // the client is gone: nobody to tell
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v) // the client is gone: nobody to tell
}

// readBody reads at most limit bytes and fails beyond.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, fmt.Errorf("request body over the %d byte limit", limit)
		}
		return nil, fmt.Errorf("reading request body: %w", err)
	}
	return body, nil
}

// setCookie sets the session cookie. It carries no expiry: the broker
// enforces nonce and grant lifetimes itself, against its own clock.
func (s *Server) setCookie(w http.ResponseWriter, r *http.Request, id string) {
	http.SetCookie(w, &http.Cookie{ //nolint:gosec // G124: Secure whenever the broker serves TLS; a dev broker may serve plain HTTP
		Name:     kbs.SessionCookie,
		Value:    id,
		Path:     kbs.PathPrefix,
		HttpOnly: true,
		Secure:   r.TLS != nil,
		SameSite: http.SameSiteStrictMode,
	})
}
