package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/veil-runtime/veil/attestation/evidence"
	"github.com/veil-runtime/veil/attestation/kbs"
	"github.com/veil-runtime/veil/attestation/kbs/server"
	"github.com/veil-runtime/veil/attestation/policy"
)

func TestServeRefusesPlainHTTPWithoutFlag(t *testing.T) {
	err := run([]string{"serve", "--store", t.TempDir(), "--listen", "127.0.0.1:0"})
	if err == nil || !strings.Contains(err.Error(), "--tls-cert") {
		t.Fatalf("serve without TLS = %v, want an error naming --tls-cert", err)
	}
}

// adminEnv is a broker's admin listener as the CLI talks to it.
type adminEnv struct {
	t     *testing.T
	store *server.Store
	flags []string
	dir   string
}

func newAdminEnv(t *testing.T, dev bool) *adminEnv {
	store, err := server.OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tok, err := server.AdminToken(store.AdminTokenPath())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Config{Store: store, AdminToken: tok, Dev: dev})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Admin())
	t.Cleanup(ts.Close)
	return &adminEnv{t: t, store: store, flags: []string{"--url", ts.URL, "--admin-token-file", store.AdminTokenPath()}, dir: t.TempDir()}
}

func (e *adminEnv) write(name, content string) string {
	p := filepath.Join(e.dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		e.t.Fatal(err)
	}
	return p
}

// run runs "veil-kbs cmd sub <admin flags> args..." and returns its output.
func (e *adminEnv) run(cmd, sub string, args ...string) (string, error) {
	var out bytes.Buffer
	a := []string{}
	if sub != "" {
		a = append(a, sub)
	}
	a = append(append(a, e.flags...), args...)
	err := adminCommand(cmd, a, &out)
	return out.String(), err
}

const fitPolicyJSON = `{"snp":{"measurements":["` + "abcd" + `"],"min_tcb":{"bootloader":3,"tee":0,"snp":20,"microcode":209}},
 "require_init_data":true,"init_data_digests":["0102"]}`

func TestAdminCommands(t *testing.T) {
	e := newAdminEnv(t, false)
	m := strings.Repeat("cd", 48)
	steps := [][]string{
		{"resource-policy", "set", e.write("r.json", `{"rules":[{"resource":"default/key/*","tees":["snp"]}]}`)},
		{"policy", "set", e.write("p.json", fitPolicyJSON)},
		{"reference", "add", "snp.measurement", m},
		{"reference", "remove", "snp.measurement", "abcd"},
		{"resource", "set", "default/key/disk", e.write("k", "key-bytes")},
		{"resource", "set", "default/key/other", e.write("k2", "other-bytes")},
		{"resource", "delete", "default/key/other"},
	}
	for _, s := range steps {
		if _, err := e.run(s[0], s[1], s[2:]...); err != nil {
			t.Fatalf("veil-kbs %v: %v", s, err)
		}
	}
	p, _ := e.store.AttestationPolicy()
	if p.SNP == nil || len(p.SNP.Measurements) != 1 || p.SNP.Measurements[0] != m {
		t.Fatalf("policy = %+v", p)
	}
	if out, err := e.run("reference", "list"); err != nil || out != "snp.measurement "+m+"\ninit-data 0102\n" {
		t.Fatalf("reference list = %q, %v", out, err)
	}
	if out, err := e.run("resource", "list"); err != nil || out != "default/key/disk\n" {
		t.Fatalf("resource list = %q, %v", out, err)
	}
	if out, err := e.run("resource", "get", "default/key/disk"); err != nil || out != "key-bytes" {
		t.Fatalf("resource get = %q, %v", out, err)
	}
	// Removing the last measurement leaves the SNP section unfit: the
	// broker refuses and says why.
	if _, err := e.run("reference", "remove", "snp.measurement", m); err == nil || !strings.Contains(err.Error(), "snp.measurements: expected at least one launch measurement") {
		t.Fatalf("removing the last measurement = %v", err)
	}
	if _, err := e.run("policy", "set", e.write("bad.json", `{"snp":{},"extra":1}`)); err == nil {
		t.Fatal("policy with an unknown key accepted")
	}
	if err := run([]string{"nonsense"}); err == nil {
		t.Fatal("unknown command accepted")
	}
}

// TestPolicySetRefusals: the CLI refuses an unfit policy before sending
// it, naming every missing piece, unless --dev; without the CLI check
// (--dev) a production broker still refuses it.
func TestPolicySetRefusals(t *testing.T) {
	e := newAdminEnv(t, false)
	unfit := e.write("p.json", `{"sample":{},"snp":{"measurements":[]},"tdx":{"mrtds":["aa"],"rtmrs":[[],[],[],[]]}}`)
	_, err := e.run("policy", "set", unfit)
	for _, want := range []string{"p.json: policy not fit for production", "sample: expected no sample section", "snp.measurements", "snp.min_tcb",
		"tdx.rtmrs[1]", "tdx.rtmrs[2]", "tdx.min_tee_tcb_svn", "require_init_data"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("policy set = %v\nwant it to name %q", err, want)
		}
	}
	// The broker, asked directly, refuses too (and names TDX collateral,
	// which only it knows it lacks).
	_, err = e.run("policy", "set", "--dev", unfit)
	if err == nil || !strings.Contains(err.Error(), "400") || !strings.Contains(err.Error(), "tdx collateral: expected the broker started with --tdx-collateral") {
		t.Fatalf("policy set --dev to a production broker = %v", err)
	}
	if _, err := e.run("resource-policy", "set", e.write("r.json", `{"rules":[{"resource":"dev/key/*","tees":["sample"]}]}`)); err == nil ||
		!strings.Contains(err.Error(), "resource rule dev/key/* tees: expected snp or tdx only") {
		t.Fatalf("resource-policy set with a sample rule = %v", err)
	}
	dev := newAdminEnv(t, true)
	if _, err := dev.run("policy", "set", "--dev", unfit); err != nil {
		t.Fatalf("policy set --dev to a dev broker: %v", err)
	}
}

// TestServeRefusesUnfitStore: serve checks the stored policy before it
// listens, and names the store and the missing pieces.
func TestServeRefusesUnfitStore(t *testing.T) {
	dir := t.TempDir()
	store, err := server.OpenStore(filepath.Join(dir, "store"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(store.Dir(), "attestation-policy.json"), []byte(`{"sample":{},"require_init_data":true}`), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"--store", store.Dir(), "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--insecure-http"}
	err = serve(context.Background(), args, nil)
	if err == nil || !strings.Contains(err.Error(), store.Dir()) || !strings.Contains(err.Error(), "sample: expected no sample section") {
		t.Fatalf("serve = %v", err)
	}
	// A TDX section without collateral names the flag.
	if err := os.WriteFile(filepath.Join(store.Dir(), "attestation-policy.json"), []byte(`{"tdx":{"mrtds":["aa"],"rtmrs":[[],["bb"],["cc"],[]],"min_tee_tcb_svn":"03000000000000000000000000000000"},"require_init_data":true,"init_data_digests":["0102"]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := serve(context.Background(), args, nil); err == nil || !strings.Contains(err.Error(), "--tdx-collateral") {
		t.Fatalf("serve with tdx and no collateral = %v", err)
	}
	bad := filepath.Join(dir, "collateral.json")
	if err := os.WriteFile(bad, []byte(`{"https://api.trustedservices.intel.com/tdx/certification/v4/qe/identity":{"body":""}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := serve(context.Background(), append(args, "--tdx-collateral", bad), nil); err == nil || !strings.Contains(err.Error(), "missing TCB info") {
		t.Fatalf("serve with incomplete collateral = %v", err)
	}
	// In dev mode the same store serves.
	_, stop := startServe(t, "serve --dev", append(args, "--dev"))
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

func TestAdminListenMustBeLoopbackOrMTLS(t *testing.T) {
	err := serve(context.Background(), []string{"--store", t.TempDir(), "--listen", "127.0.0.1:0", "--admin-listen", "0.0.0.0:0", "--insecure-http"}, nil)
	if err == nil || !strings.Contains(err.Error(), `--admin-listen "0.0.0.0:0": expected a loopback address`) {
		t.Fatalf("serve with a public admin listener = %v", err)
	}
	if _, err := adminClient("http://kbs.example:8081", "x", "", "", ""); err == nil || !strings.Contains(err.Error(), "in the clear") {
		t.Fatalf("admin over http to a remote host = %v", err)
	}
}

// Plain HTTP outside --dev only on loopback (behind a local TLS proxy):
// on the network, guests' tokens and sealed resources would be readable.
func TestInsecureHTTPOnlyOnLoopbackOutsideDev(t *testing.T) {
	err := serve(context.Background(), []string{"--store", t.TempDir(), "--listen", "0.0.0.0:0", "--admin-listen", "off", "--insecure-http"}, nil)
	if err == nil || !strings.Contains(err.Error(), `--insecure-http with --listen "0.0.0.0:0"`) || !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("serve --insecure-http on 0.0.0.0 without --dev = %v, want a refusal naming the listen address", err)
	}
	// On loopback it starts (and stops with its context).
	_, stop := startServe(t, "serve --insecure-http on loopback", []string{"--store", t.TempDir(), "--listen", "127.0.0.1:0", "--admin-listen", "off", "--insecure-http"})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// TestExplainCommand: a broker refuses a guest, the operator lists the
// recorded evidence and explains it check by check.
func TestExplainCommand(t *testing.T) {
	e := newAdminEnv(t, true)
	if err := e.store.SetAttestationPolicy(mustPolicy(t, `{"sample":{"min_svn":5}}`)); err != nil {
		t.Fatal(err)
	}
	rec := server.Recorded{Tee: "sample", Attestation: json.RawMessage(sampleAttestation(t))}
	file := filepath.Join(e.dir, "evidence.json")
	raw, _ := json.Marshal(rec)
	if err := os.WriteFile(file, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := e.run("explain", "", file)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"sample evidence\n", "CHECK", "EXPECTED", "SEEN", "runtime-data.nonce", "report_data", "sample.svn", "FAIL", ">= 5",
		"verdict: rejected by the current policy (1 check(s) failed"} {
		if !strings.Contains(out, want) {
			t.Errorf("explain output misses %q:\n%s", want, out)
		}
	}
	if _, err := e.run("explain", "", "--client", "10.1.1.1"); err == nil || !strings.Contains(err.Error(), "no attestation recorded from 10.1.1.1") {
		t.Fatalf("explain of an unknown client = %v", err)
	}
}

func mustPolicy(t *testing.T, s string) policy.Attestation {
	t.Helper()
	var p policy.Attestation
	if err := server.DecodeStrict([]byte(s), &p); err != nil {
		t.Fatal(err)
	}
	return p
}

// sampleAttestation is a sample guest's /attest body, bound to its nonce.
func sampleAttestation(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := kbs.PublicKeyJWK(key)
	if err != nil {
		t.Fatal(err)
	}
	rd := kbs.RuntimeData{Nonce: "bm9uY2U=", TeePubKey: pub}
	want, err := kbs.ExpectedReportData(rd, "", kbs.SHA384)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := evidence.NewSample(nil, slog.New(slog.DiscardHandler)).Evidence(context.Background(), want)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(kbs.Attestation{RuntimeData: rd, TeeEvidence: kbs.CompositeEvidence{PrimaryEvidence: ev}})
	if err != nil {
		t.Fatal(err)
	}
	return raw
}
