package server

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/veil-runtime/veil/attestation/kbs"
	"github.com/veil-runtime/veil/attestation/verify"
)

// session is one RCAR handshake.
type session struct {
	id string
	// client is the source the session was opened from (clientOf).
	client  string
	tee     kbs.Tee
	nonce   string
	expires time.Time
	// used is set by the first /attest, whatever its outcome: a nonce
	// never verifies twice.
	used bool
	// attested is set when the evidence passed.
	attested *grant
}

// grant is what a successful attestation earns.
type grant struct {
	claims         verify.Claims
	teePubKey      kbs.TeePubKey
	initDataDigest string
	expires        time.Time
}

// sessions holds open handshakes, bounded in number overall and per
// client, so that one client opening sessions in a loop fills only its
// own share and never locks other guests out.
type sessions struct {
	mu        sync.Mutex
	m         map[string]*session
	perClient map[string]int
	max       int
	maxClient int
}

var errTooManySessions = errors.New("too many open attestation sessions; retry later")

// clientLimitError is the refusal of a session over the per-client limit.
type clientLimitError struct {
	client string
	limit  int
}

func (e *clientLimitError) Error() string {
	return fmt.Sprintf("sessions from %s: expected at most %d open at once (the per-client limit), seen %d: finish or let them expire", e.client, e.limit, e.limit+1)
}

func newSessions(max, maxClient int) *sessions {
	return &sessions{m: map[string]*session{}, perClient: map[string]int{}, max: max, maxClient: maxClient}
}

// clientOf names the client of a request for the per-client limit: its
// source address, an IPv6 source by its /64 (one host usually holds a
// whole /64). Forwarding headers are not trusted.
func clientOf(remoteAddr string) string {
	ap, err := netip.ParseAddrPort(remoteAddr)
	if err != nil {
		return remoteAddr
	}
	a := ap.Addr().Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}

// live reports whether a session still holds a nonce or a grant.
func (se *session) live(now time.Time) bool {
	return now.Before(se.expires) || (se.attested != nil && now.Before(se.attested.expires))
}

// drop removes a session; s.mu is held.
func (s *sessions) drop(id string) {
	se, ok := s.m[id]
	if !ok {
		return
	}
	delete(s.m, id)
	if s.perClient[se.client]--; s.perClient[se.client] <= 0 {
		delete(s.perClient, se.client)
	}
}

// count is the number of sessions held.
func (s *sessions) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

func randomString(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("reading random bytes: %w", err)
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

// open starts a session for client with a fresh 32-byte nonce.
func (s *sessions) open(client string, tee kbs.Tee, now time.Time, ttl time.Duration) (*session, error) {
	nonce, err := randomString(32)
	if err != nil {
		return nil, err
	}
	idb := make([]byte, 32)
	if _, err := rand.Read(idb); err != nil {
		return nil, fmt.Errorf("reading random bytes: %w", err)
	}
	se := &session{id: hex.EncodeToString(idb), client: client, tee: tee, nonce: nonce, expires: now.Add(ttl)}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.perClient[client] >= s.maxClient {
		for id, old := range s.m {
			if old.client == client && !old.live(now) {
				s.drop(id)
			}
		}
		if s.perClient[client] >= s.maxClient {
			return nil, &clientLimitError{client: client, limit: s.maxClient}
		}
	}
	if len(s.m) >= s.max {
		for id, old := range s.m {
			if !old.live(now) {
				s.drop(id)
			}
		}
		if len(s.m) >= s.max {
			return nil, errTooManySessions
		}
	}
	s.m[se.id] = se
	s.perClient[client]++
	return se, nil
}

// take marks a session's nonce used and returns a copy of the session as
// it was; ok is false for unknown sessions.
func (s *sessions) take(id string) (se session, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.m[id]
	if !ok {
		return session{}, false
	}
	se = *p
	p.used = true
	return se, true
}

// attest records a successful attestation.
func (s *sessions) attest(id string, g *grant) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, ok := s.m[id]; ok {
		p.attested = g
	}
}

// grantFor returns the grant of an attested, unexpired session.
func (s *sessions) grantFor(id string, now time.Time) (*grant, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.m[id]
	if !ok {
		return nil, errors.New("unknown session")
	}
	if p.attested == nil {
		return nil, errors.New("session has not attested")
	}
	if !now.Before(p.attested.expires) {
		s.drop(id)
		return nil, fmt.Errorf("session attestation expired at %s", p.attested.expires.UTC().Format(time.RFC3339))
	}
	return p.attested, nil
}

// logID is a short, non-secret name for a session in logs: the session id
// is a bearer credential and never logged.
func logID(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:4])
}
