package server

import (
	"encoding/json"
	"slices"
	"sync"
	"time"

	"github.com/veil-runtime/veil/attestation/kbs"
)

// Recorded is the last attestation a client sent, as veil-kbs explain
// replays it: the session's TEE and nonce and the request body exactly as
// received. It holds no secret (evidence, the guest's public key and its
// init-data document, all of which crossed the network in the clear of
// any broker secret).
type Recorded struct {
	// Client is the source the attestation came from (an address, an
	// IPv6 /64).
	Client string `json:"client"`
	// Time is when the broker received it.
	Time time.Time `json:"time"`
	// Tee is the TEE the session was opened for.
	Tee kbs.Tee `json:"tee"`
	// Nonce is the challenge the session issued.
	Nonce string `json:"nonce"`
	// Outcome is what the broker decided then ("ok" or the reason).
	Outcome string `json:"outcome"`
	// Detail is the refusal the guest received; empty when accepted.
	Detail string `json:"detail,omitempty"`
	// Attestation is the request body.
	Attestation json.RawMessage `json:"attestation,omitempty"`
}

// Limits of the evidence recorder: the last attestation of at most
// maxRecordedClients clients, at most maxRecordedBytes in all; the oldest
// goes first.
const (
	maxRecordedClients = 256
	maxRecordedBytes   = 16 << 20
)

// recorder keeps the last attestation per client, in memory.
type recorder struct {
	mu    sync.Mutex
	m     map[string]*Recorded
	bytes int
}

func newRecorder() *recorder { return &recorder{m: map[string]*Recorded{}} }

func (r *recorder) put(rec Recorded) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if old, ok := r.m[rec.Client]; ok {
		r.bytes -= len(old.Attestation)
		delete(r.m, rec.Client)
	}
	for len(r.m) > 0 && (len(r.m) >= maxRecordedClients || r.bytes+len(rec.Attestation) > maxRecordedBytes) {
		oldest := ""
		for c, o := range r.m {
			if oldest == "" || o.Time.Before(r.m[oldest].Time) {
				oldest = c
			}
		}
		r.bytes -= len(r.m[oldest].Attestation)
		delete(r.m, oldest)
	}
	if len(rec.Attestation) > maxRecordedBytes {
		return
	}
	r.m[rec.Client] = &rec
	r.bytes += len(rec.Attestation)
}

// get returns a client's record; with client empty, the newest of all.
func (r *recorder) get(client string) (Recorded, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if client != "" {
		rec, ok := r.m[client]
		if !ok {
			return Recorded{}, false
		}
		return *rec, true
	}
	var newest *Recorded
	for _, rec := range r.m {
		if newest == nil || rec.Time.After(newest.Time) {
			newest = rec
		}
	}
	if newest == nil {
		return Recorded{}, false
	}
	return *newest, true
}

// list returns every record without its body, newest first.
func (r *recorder) list() []Recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Recorded, 0, len(r.m))
	for _, rec := range r.m {
		c := *rec
		c.Attestation = nil
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b Recorded) int { return b.Time.Compare(a.Time) })
	return out
}
