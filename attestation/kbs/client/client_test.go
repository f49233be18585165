package client

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/veil-runtime/veil/attestation/evidence"
)

func TestNewValidates(t *testing.T) {
	a := evidence.NewSample(nil, slog.New(slog.DiscardHandler))
	if _, err := New(Config{Attester: a}); err == nil {
		t.Error("no url accepted")
	}
	if _, err := New(Config{URL: "https://x"}); err == nil {
		t.Error("no attester accepted")
	}
	if _, err := New(Config{URL: "https://x", Attester: a, RootCAsPEM: []byte("junk")}); err == nil || !strings.Contains(err.Error(), "PEM") {
		t.Errorf("junk broker certificate: %v", err)
	}
	if _, err := FromInitData([]byte("version = \"0.1.0\"\nalgorithm = \"sha256\"\n"), a, nil); err == nil || !strings.Contains(err.Error(), "broker.url") {
		t.Errorf("init-data without broker: %v", err)
	}
}

// A broker that answers with something other than ErrorInformation still
// yields an error that says what happened.
func TestBrokerErrorsAreReported(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/auth") {
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"type":"https://github.com/confidential-containers/kbs/errors/AttestationFailed","detail":"tee: expected snp, seen sample"}`))
			return
		}
		http.Error(w, "boom", http.StatusBadGateway)
	}))
	defer ts.Close()
	c, err := New(Config{URL: ts.URL, Attester: evidence.NewSample(nil, slog.New(slog.DiscardHandler))})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Attest(context.Background())
	if err == nil || err.Error() != "broker refused auth (401 AttestationFailed): tee: expected snp, seen sample" {
		t.Fatalf("Attest error = %v", err)
	}
	_, err = c.getResource(context.Background(), "a/b/c")
	var e *Error
	if !errors.As(err, &e) || e.Status != http.StatusBadGateway || e.Info.Detail != "boom" {
		t.Fatalf("resource error = %#v", err)
	}
}
