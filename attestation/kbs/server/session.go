package server

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/veil-runtime/veil/attestation/kbs"
	"github.com/veil-runtime/veil/attestation/verify"
)

// session is one RCAR handshake.
type session struct {
	id      string
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

// sessions holds open handshakes, bounded in number.
type sessions struct {
	mu  sync.Mutex
	m   map[string]*session
	max int
}

var errTooManySessions = errors.New("too many open attestation sessions; retry later")

func newSessions(max int) *sessions {
	return &sessions{m: map[string]*session{}, max: max}
}

func randomString(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("reading random bytes: %w", err)
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

// open starts a session with a fresh 32-byte nonce.
func (s *sessions) open(tee kbs.Tee, now time.Time, ttl time.Duration) (*session, error) {
	nonce, err := randomString(32)
	if err != nil {
		return nil, err
	}
	idb := make([]byte, 32)
	if _, err := rand.Read(idb); err != nil {
		return nil, fmt.Errorf("reading random bytes: %w", err)
	}
	se := &session{id: hex.EncodeToString(idb), tee: tee, nonce: nonce, expires: now.Add(ttl)}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.m) >= s.max {
		for id, old := range s.m {
			if !now.Before(old.expires) && (old.attested == nil || !now.Before(old.attested.expires)) {
				delete(s.m, id)
			}
		}
		if len(s.m) >= s.max {
			return nil, errTooManySessions
		}
	}
	s.m[se.id] = se
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
		delete(s.m, id)
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
