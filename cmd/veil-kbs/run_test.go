package main

import (
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/veil-runtime/veil/attestation/kbs/server"
)

func TestServeRefusesPlainHTTPWithoutFlag(t *testing.T) {
	err := run([]string{"serve", "--store", t.TempDir(), "--listen", "127.0.0.1:0"})
	if err == nil || !strings.Contains(err.Error(), "--tls-cert") {
		t.Fatalf("serve without TLS = %v, want an error naming --tls-cert", err)
	}
}

func TestAdminCommands(t *testing.T) {
	store, err := server.OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tok, err := server.AdminToken(store.AdminTokenPath())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Config{Store: store, AdminToken: tok})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	flags := []string{"--url", ts.URL, "--admin-token-file", store.AdminTokenPath()}
	steps := [][]string{
		append(append([]string{"policy", "set"}, flags...), write("p.json", `{"snp":{"measurements":[]}}`)),
		append(append([]string{"reference", "add"}, flags...), "snp.measurement", strings.Repeat("cd", 48)),
		append(append([]string{"resource-policy", "set"}, flags...), write("r.json", `{"rules":[{"resource":"default/key/*","tees":["snp"]}]}`)),
		append(append([]string{"resource", "set"}, flags...), "default/key/disk", write("k", "key-bytes")),
	}
	for _, s := range steps {
		if err := run(s); err != nil {
			t.Fatalf("veil-kbs %v: %v", s[:2], err)
		}
	}
	p, _ := store.AttestationPolicy()
	if p.SNP == nil || len(p.SNP.Measurements) != 1 || p.SNP.Measurements[0] != strings.Repeat("cd", 48) {
		t.Fatalf("policy = %+v", p)
	}
	if got, err := store.Resource("default/key/disk"); err != nil || string(got) != "key-bytes" {
		t.Fatalf("resource = %q, %v", got, err)
	}
	if err := run(append(append([]string{"policy", "set"}, flags...), write("bad.json", `{"snp":{},"extra":1}`))); err == nil {
		t.Fatal("policy with an unknown key accepted")
	}
	if err := run([]string{"nonsense"}); err == nil {
		t.Fatal("unknown command accepted")
	}
}
