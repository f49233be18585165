package server_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/veil-runtime/veil/attestation/kbs"
	"github.com/veil-runtime/veil/attestation/kbs/server"
	"github.com/veil-runtime/veil/attestation/policy"
)

// FuzzBrokerRequest sends the broker what a guest controls: the body of
// /auth, and the body of /attest within a fresh session. The broker never
// panics; it answers an /auth it cannot use, and every /attest (the fuzzer
// cannot know the session's nonce), with a 4xx and a KBS error document
// that names the problem.
func FuzzBrokerRequest(f *testing.F) {
	store, err := server.OpenStore(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	if err := store.SetAttestationPolicy(policy.Attestation{Sample: &policy.Sample{}}); err != nil {
		f.Fatal(err)
	}
	// Each input moves the clock on an hour, so sessions from earlier
	// inputs have expired and make room.
	var mu sync.Mutex
	now := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	srv, err := server.New(server.Config{Store: store, Dev: true, Now: clock, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		f.Fatal(err)
	}
	post := func(path string, body []byte, cookie *http.Cookie) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
		if cookie != nil {
			req.AddCookie(cookie)
		}
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		return rec
	}
	f.Add(false, []byte(`{"version":"0.4.0","tee":"sample","extra-params":""}`))
	f.Add(false, []byte(`{"version":"0.4.0","tee":"snp","extra-params":{"supported-hash-algorithms":["sha256"]}}`))
	f.Add(false, []byte(`{"version":"0.1.0"}`))
	f.Add(false, []byte(`{"version":"0.4.1","tee":"sample","extra-params":{"supported-hash-algorithms":"sha384"}}`))
	f.Add(true, []byte(`{"runtime-data":{"nonce":"n","tee-pubkey":{"kty":"EC","crv":"P-384","alg":"ES384","x":"","y":""}},"tee-evidence":{"primary_evidence":{}}}`))
	f.Add(true, []byte(`{"runtime-data":{"nonce":"n","tee-pubkey":{"kty":"RSA","alg":"RSA-OAEP-256","n":"AQAB","e":"AQAB"}},"init-data":{"format":"toml","body":"version = \"0.1.0\""}}`))
	f.Add(true, []byte(`[]`))
	f.Add(true, bytes.Repeat([]byte("{"), 4096))
	f.Fuzz(func(t *testing.T, attest bool, body []byte) {
		mu.Lock()
		now = now.Add(time.Hour)
		mu.Unlock()
		var rec *httptest.ResponseRecorder
		if !attest {
			rec = post(kbs.PathAuth, body, nil)
			if rec.Code == http.StatusOK {
				var ch kbs.Challenge
				if err := json.Unmarshal(rec.Body.Bytes(), &ch); err != nil || ch.Nonce == "" {
					t.Fatalf("auth %q: 200 with %q, want a challenge with a nonce (%v)", body, rec.Body, err)
				}
				return
			}
		} else {
			auth := post(kbs.PathAuth, []byte(`{"version":"0.4.0","tee":"sample","extra-params":""}`), nil)
			cookies := auth.Result().Cookies()
			if auth.Code != http.StatusOK || len(cookies) != 1 {
				t.Fatalf("auth for the attest step: %d %q", auth.Code, auth.Body)
			}
			rec = post(kbs.PathAttest, body, cookies[0])
			if rec.Code == http.StatusOK {
				t.Fatalf("attest %q accepted without the session's nonce: %q", body, rec.Body)
			}
		}
		if rec.Code < 400 || rec.Code >= 500 {
			t.Fatalf("%q: status %d, want 4xx", body, rec.Code)
		}
		var e kbs.ErrorInformation
		if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Type == "" || e.Detail == "" {
			t.Fatalf("%q: error body %q, want a KBS error with type and detail (%v)", body, rec.Body, err)
		}
	})
}
