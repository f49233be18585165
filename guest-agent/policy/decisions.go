package policy

import (
	"sync"
	"time"
)

// DecisionLogSize is how many decisions an agent keeps.
const DecisionLogSize = 256

// Decision is one policy decision: every denial, and the allowed calls of
// the checked methods (CreateSandbox, CreateContainer, ExecProcess,
// UpdateContainer, PullImage).
type Decision struct {
	Time      time.Time `json:"time"`
	Method    string    `json:"method"`
	Container string    `json:"container,omitempty"`
	Allowed   bool      `json:"allowed"`
	Rule      string    `json:"rule,omitempty"`
	Why       string    `json:"why,omitempty"`
}

// DecisionLog is a bounded ring of decisions, oldest dropped first. It
// holds only what the host itself asked and the policy's answer, so the
// host may read it (Attestation.DecisionLog); the pod's owner reads the
// same through the host after attesting the pod.
type DecisionLog struct {
	mu      sync.Mutex
	ring    []Decision
	next    int
	full    bool
	dropped uint64
	now     func() time.Time
}

// NewDecisionLog keeps the last size decisions.
func NewDecisionLog(size int) *DecisionLog {
	return &DecisionLog{ring: make([]Decision, max(size, 1)), now: time.Now}
}

// Add records d, stamping its time when it has none.
func (l *DecisionLog) Add(d Decision) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if d.Time.IsZero() {
		d.Time = l.now()
	}
	if l.full {
		l.dropped++
	}
	l.ring[l.next] = d
	l.next = (l.next + 1) % len(l.ring)
	if l.next == 0 {
		l.full = true
	}
}

// Entries returns the decisions kept, oldest first, and how many older
// ones were dropped.
func (l *DecisionLog) Entries() ([]Decision, uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.full {
		return append([]Decision(nil), l.ring[:l.next]...), 0
	}
	out := append([]Decision(nil), l.ring[l.next:]...)
	return append(out, l.ring[:l.next]...), l.dropped
}
