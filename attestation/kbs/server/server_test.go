package server_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	tdxabi "github.com/google/go-tdx-guest/abi"
	tdxpb "github.com/google/go-tdx-guest/proto/tdx"
	tdxdata "github.com/google/go-tdx-guest/testing/testdata"

	"github.com/veil-runtime/veil/attestation/evidence"
	"github.com/veil-runtime/veil/attestation/initdata"
	"github.com/veil-runtime/veil/attestation/internal/snptest"
	"github.com/veil-runtime/veil/attestation/kbs"
	"github.com/veil-runtime/veil/attestation/kbs/client"
	"github.com/veil-runtime/veil/attestation/kbs/server"
	"github.com/veil-runtime/veil/attestation/policy"
	"github.com/veil-runtime/veil/attestation/verify"
)

const (
	secret      = "disk-key-s3cret"
	devSecret   = "dev-key-s3cret"
	adminToken  = "admin-token-for-tests"
	snpResource = "default/key/disk"
	devResource = "dev/key/disk"
)

var (
	measurement = [48]byte{0xab, 0xcd}
	initDoc     = []byte("version = \"0.1.0\"\nalgorithm = \"sha256\"\n\n[broker]\nurl = \"https://kbs.example\"\n")
	otherDoc    = []byte("version = \"0.1.0\"\nalgorithm = \"sha256\"\n\n[broker]\nurl = \"https://evil.example\"\n")
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}
func (b *syncBuffer) String() string { b.mu.Lock(); defer b.mu.Unlock(); return b.buf.String() }

type env struct {
	ts     *httptest.Server
	admin  *httptest.Server // the admin listener
	store  *server.Store
	clock  *clock
	signer *snptest.Signer
	logs   *syncBuffer
	log    *slog.Logger
}

type envOpts struct {
	dev        bool
	realRoots  bool // pin AMD's real roots instead of the test chain
	tdx        bool // verify TDX quotes at the date go-tdx-guest's sample quote was valid
	policy     func(*policy.Attestation)
	perClient  int  // Config.MaxSessionsPerClient
	collateral bool // the TDX verifier has (empty) collateral
}

func newEnv(t *testing.T, o envOpts) *env {
	t.Helper()
	c := &clock{t: time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)}
	signer, err := snptest.NewSigner(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	store, err := server.OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	pol := policy.Attestation{
		SNP:    &policy.SNP{Measurements: []string{hex.EncodeToString(measurement[:])}},
		Sample: &policy.Sample{},
	}
	if o.policy != nil {
		o.policy(&pol)
	}
	must(t, store.SetAttestationPolicy(pol))
	must(t, store.SetResourcePolicy(policy.Resources{Rules: []policy.ResourceRule{
		{Resource: "default/key/*", Tees: []kbs.Tee{kbs.TeeSNP}, Measurements: []string{hex.EncodeToString(measurement[:])}},
		{Resource: "dev/key/*", Tees: []kbs.Tee{kbs.TeeSample}},
	}}))
	must(t, store.SetResource(snpResource, []byte(secret)))
	must(t, store.SetResource(devResource, []byte(devSecret)))
	logs := &syncBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	snp := &verify.SNP{Roots: signer.Roots(), Now: c.Now}
	if o.realRoots {
		snp.Roots = nil
	}
	verifiers := map[kbs.Tee]verify.Verifier{kbs.TeeSNP: snp}
	if o.tdx || o.collateral {
		tdx := &verify.TDX{Now: func() time.Time { return time.Date(2023, 7, 1, 1, 0, 0, 0, time.UTC) }}
		if o.collateral {
			tdx.Collateral = &verify.Collateral{}
		}
		verifiers[kbs.TeeTDX] = tdx
	}
	srv, err := server.New(server.Config{
		Store:                store,
		Verifiers:            verifiers,
		Dev:                  o.dev,
		AdminToken:           adminToken,
		MaxSessionsPerClient: o.perClient,
		Now:                  c.Now,
		Log:                  log,
	})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewTLSServer(srv)
	t.Cleanup(ts.Close)
	adm := httptest.NewTLSServer(srv.Admin())
	t.Cleanup(adm.Close)
	e := &env{ts: ts, admin: adm, store: store, clock: c, signer: signer, logs: logs, log: log}
	t.Cleanup(func() {
		// No secret, token or session id in any log line, ever.
		for _, s := range []string{secret, devSecret, adminToken} {
			if strings.Contains(logs.String(), s) {
				t.Errorf("log holds %q:\n%s", s, logs.String())
			}
		}
	})
	return e
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// released counts resources the broker handed out.
func (e *env) released() int { return strings.Count(e.logs.String(), `"msg":"resource released"`) }

func (e *env) snpQuoteProvider(mod func(*snptest.Report)) *snptest.QuoteProvider {
	r := snptest.Report{Measurement: measurement, HostData: initdata.SNPHostData(initDoc)}
	if mod != nil {
		mod(&r)
	}
	return &snptest.QuoteProvider{Signer: e.signer, Template: r}
}

func (e *env) client(t *testing.T, a evidence.Attester, doc []byte) *client.Client {
	t.Helper()
	c, err := client.New(client.Config{URL: e.ts.URL, Attester: a, InitData: doc, HTTPClient: e.ts.Client(), Log: e.log})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestSNPHappyPath(t *testing.T) {
	e := newEnv(t, envOpts{})
	c := e.client(t, evidence.NewSNP(e.snpQuoteProvider(nil), e.log), initDoc)
	got, err := c.Resource(context.Background(), snpResource)
	if err != nil {
		t.Fatalf("Resource: %v\nlogs:\n%s", err, e.logs)
	}
	if string(got) != secret {
		t.Fatalf("Resource = %q, want %q", got, secret)
	}
	if e.released() != 1 {
		t.Fatalf("released %d resources, want 1", e.released())
	}
	// The grant covers only what the resource policy names.
	if _, err := c.Resource(context.Background(), devResource); err == nil || !strings.Contains(err.Error(), "tee") {
		t.Fatalf("snp guest read the dev resource: %v", err)
	}
	if _, err := c.Resource(context.Background(), "default/key/missing"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("missing resource: %v", err)
	}
}

func TestSampleHappyPathInDevMode(t *testing.T) {
	e := newEnv(t, envOpts{dev: true})
	digest := initdata.Digest(initDoc)
	c := e.client(t, evidence.NewSample(digest[:], e.log), initDoc)
	token, err := c.Attest(context.Background())
	if err != nil {
		t.Fatalf("Attest: %v\nlogs:\n%s", err, e.logs)
	}
	if strings.Contains(e.logs.String(), token) || strings.Contains(e.logs.String(), strings.Split(token, ".")[2]) {
		t.Fatal("broker logged the token")
	}
	claims := tokenClaims(t, token)
	if claims["tee"] != "sample" || !strings.Contains(claims["insecure"].(string), "INSECURE") {
		t.Fatalf("sample token claims = %v, want tee sample and an insecure marker", claims)
	}
	got, err := c.Resource(context.Background(), devResource)
	if err != nil || string(got) != devSecret {
		t.Fatalf("Resource = %q, %v", got, err)
	}
	// Every broker log line about the sample session carries the marker.
	for _, line := range strings.Split(strings.TrimSpace(e.logs.String()), "\n") {
		if strings.Contains(line, `"tee":"sample"`) && !strings.Contains(line, evidence.SampleWarning) {
			t.Errorf("sample log line without the insecure marker: %s", line)
		}
	}
	// Sample evidence never reads hardware-only resources.
	if _, err := c.Resource(context.Background(), snpResource); err == nil {
		t.Fatal("sample guest read an snp-only resource")
	}
}

func tokenClaims(t *testing.T, token string) map[string]any {
	t.Helper()
	tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := tok.UnsafeClaimsWithoutVerification(&m); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestRejectedEvidence runs the real client against the broker for every
// way evidence must fail; none gets a key, and each error names the field.
func TestRejectedEvidence(t *testing.T) {
	tests := []struct {
		name   string
		opts   envOpts
		report func(*snptest.Report)
		tamper bool
		doc    []byte
		sample bool
		want   string
	}{
		{name: "debug policy set", report: func(r *snptest.Report) { r.Debug = true }, want: "snp.policy.debug: expected false, seen true"},
		{name: "migration agent allowed", report: func(r *snptest.Report) { r.MigrateMA = true }, want: "snp.policy.migrate_ma: expected false, seen true"},
		{name: "vmpl 1", report: func(r *snptest.Report) { r.VMPL = 1 }, want: "snp.vmpl: expected 0, seen 1"},
		{name: "measurement not a reference value", report: func(r *snptest.Report) { r.Measurement = [48]byte{0xee} }, want: "snp.measurement: expected one of [abcd"},
		{name: "tcb below policy", opts: envOpts{policy: func(p *policy.Attestation) { p.SNP.MinTCB = &verify.SNPTCB{SNP: 8} }}, want: "snp.reported_tcb.snp: expected >= 8, seen 0"},
		{name: "host data does not match init-data", doc: otherDoc, want: "snp.host_data: expected " + hexDigest(otherDoc)},
		{name: "host data set, no init-data sent", doc: []byte{}, want: "snp.host_data: expected zero"},
		{name: "tampered signature", tamper: true, want: "signature"},
		{name: "unknown root", opts: envOpts{realRoots: true}, want: "certificate chain"},
		{name: "sample evidence to a broker not in dev mode", sample: true, want: "dev mode"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tt.opts)
			var a evidence.Attester
			if tt.sample {
				d := initdata.Digest(initDoc)
				a = evidence.NewSample(d[:], e.log)
			} else {
				qp := e.snpQuoteProvider(tt.report)
				qp.Tamper = tt.tamper
				a = evidence.NewSNP(qp, e.log)
			}
			doc := initDoc
			if tt.doc != nil {
				doc = tt.doc
			}
			c := e.client(t, a, doc)
			got, err := c.Resource(context.Background(), snpResource)
			if err == nil {
				t.Fatalf("Resource = %q, want a refusal", got)
			}
			t.Logf("refusal: %v", err)
			var kerr *client.Error
			if !errors.As(err, &kerr) || kerr.Status != http.StatusUnauthorized || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Resource error = %v, want a 401 naming %q", err, tt.want)
			}
			if e.released() != 0 {
				t.Fatalf("broker released %d resources", e.released())
			}
			if !strings.Contains(e.logs.String(), "rejected") {
				t.Fatalf("broker log has no rejection:\n%s", e.logs)
			}
		})
	}
}

func hexDigest(doc []byte) string {
	d := initdata.Digest(doc)
	return hex.EncodeToString(d[:])
}

// raw is an adversarial guest speaking the protocol by hand.
type raw struct {
	t  *testing.T
	e  *env
	hc *http.Client
}

func (e *env) raw(t *testing.T) *raw { return &raw{t: t, e: e, hc: e.ts.Client()} }

func (r *raw) do(method, path string, body any, cookie *http.Cookie) (*http.Response, []byte) {
	r.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			r.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, r.e.ts.URL+path, rd)
	if err != nil {
		r.t.Fatal(err)
	}
	if cookie != nil {
		req.AddCookie(cookie)
	}
	resp, err := r.hc.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp, out
}

func (r *raw) auth() (*http.Cookie, kbs.Challenge) {
	r.t.Helper()
	return r.authTee(kbs.TeeSNP)
}

func (r *raw) authTee(tee kbs.Tee) (*http.Cookie, kbs.Challenge) {
	r.t.Helper()
	resp, body := r.do("POST", kbs.PathAuth, kbs.Request{Version: kbs.ProtocolVersion, Tee: tee, ExtraParams: json.RawMessage(`""`)}, nil) //nolint:bodyclose // raw.do read and closed it
	if resp.StatusCode != http.StatusOK {
		r.t.Fatalf("auth: %d %s", resp.StatusCode, body)
	}
	var ch kbs.Challenge
	must(r.t, json.Unmarshal(body, &ch))
	for _, c := range resp.Cookies() {
		if c.Name == kbs.SessionCookie {
			return c, ch
		}
	}
	r.t.Fatal("auth set no session cookie")
	return nil, ch
}

// attestation builds an honest attestation for nonce and key, whose
// report binds boundKey (normally the same key).
func (r *raw) attestation(nonce string, key, boundKey *ecdsa.PrivateKey) kbs.Attestation {
	r.t.Helper()
	pub, err := kbs.PublicKeyJWK(key)
	must(r.t, err)
	bound, err := kbs.PublicKeyJWK(boundKey)
	must(r.t, err)
	rdata, err := kbs.ExpectedReportData(kbs.RuntimeData{Nonce: nonce, TeePubKey: bound}, "", kbs.SHA384)
	must(r.t, err)
	ev, err := evidence.NewSNP(r.e.snpQuoteProvider(nil), r.e.log).Evidence(context.Background(), rdata)
	must(r.t, err)
	return kbs.Attestation{
		InitData:    &kbs.InitData{Format: "toml", Body: string(initDoc)},
		RuntimeData: kbs.RuntimeData{Nonce: nonce, TeePubKey: pub},
		TeeEvidence: kbs.CompositeEvidence{PrimaryEvidence: ev},
	}
}

func (r *raw) attest(cookie *http.Cookie, att any) (int, string) {
	r.t.Helper()
	resp, body := r.do("POST", kbs.PathAttest, att, cookie) //nolint:bodyclose // raw.do read and closed it
	return resp.StatusCode, string(body)
}

func (r *raw) resource(cookie *http.Cookie) int {
	r.t.Helper()
	resp, _ := r.do("GET", kbs.PathResource+snpResource, nil, cookie) //nolint:bodyclose // raw.do read and closed it
	return resp.StatusCode
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	return k
}

func TestReplayedNonce(t *testing.T) {
	e := newEnv(t, envOpts{})
	r := e.raw(t)
	key := newKey(t)
	cookie, ch := r.auth()
	att := r.attestation(ch.Nonce, key, key)
	if status, body := r.attest(cookie, att); status != http.StatusOK {
		t.Fatalf("first attest: %d %s", status, body)
	}
	// The same evidence again on the same session: the nonce is spent.
	if status, body := r.attest(cookie, att); status != http.StatusUnauthorized || !strings.Contains(body, "used already (replay)") {
		t.Fatalf("replay on the same session: %d %s", status, body)
	}
	// The same evidence on a fresh session: its nonce is not the new one.
	cookie2, ch2 := r.auth()
	if status, body := r.attest(cookie2, att); status != http.StatusUnauthorized || !strings.Contains(body, "runtime-data.nonce: expected "+ch2.Nonce) {
		t.Fatalf("replay on a new session: %d %s", status, body)
	}
	if status := r.resource(cookie2); status != http.StatusUnauthorized {
		t.Fatalf("replaying session read a resource: %d", status)
	}
	for _, c := range []*http.Cookie{cookie, cookie2} {
		if strings.Contains(e.logs.String(), c.Value) {
			t.Fatal("broker logged a session id")
		}
	}
}

func TestFailedAttestationSpendsNonce(t *testing.T) {
	e := newEnv(t, envOpts{})
	r := e.raw(t)
	key := newKey(t)
	cookie, ch := r.auth()
	bad := r.attestation(ch.Nonce, key, newKey(t))
	if status, _ := r.attest(cookie, bad); status != http.StatusUnauthorized {
		t.Fatalf("bad attest: %d", status)
	}
	// A second try with good evidence on the same nonce is still refused.
	if status, body := r.attest(cookie, r.attestation(ch.Nonce, key, key)); status != http.StatusUnauthorized || !strings.Contains(body, "replay") {
		t.Fatalf("retry on a spent nonce: %d %s", status, body)
	}
}

func TestExpiredNonce(t *testing.T) {
	e := newEnv(t, envOpts{})
	r := e.raw(t)
	key := newKey(t)
	cookie, ch := r.auth()
	att := r.attestation(ch.Nonce, key, key)
	e.clock.Add(5*time.Minute + time.Second)
	if status, body := r.attest(cookie, att); status != http.StatusUnauthorized || !strings.Contains(body, "expired") {
		t.Fatalf("expired nonce: %d %s", status, body)
	}
	if status := r.resource(cookie); status != http.StatusUnauthorized || e.released() != 0 {
		t.Fatalf("expired session read a resource: %d", status)
	}
}

func TestSwappedTeePubKey(t *testing.T) {
	e := newEnv(t, envOpts{})
	r := e.raw(t)
	guest, attacker := newKey(t), newKey(t)
	cookie, ch := r.auth()
	// Evidence bound to the guest's key, sent with the attacker's key.
	att := r.attestation(ch.Nonce, attacker, guest)
	status, body := r.attest(cookie, att)
	if status != http.StatusUnauthorized || !strings.Contains(body, "report_data: expected") {
		t.Fatalf("swapped key: %d %s", status, body)
	}
	if r.resource(cookie) != http.StatusUnauthorized || e.released() != 0 {
		t.Fatal("swapped key read a resource")
	}
}

func TestReportDataMismatch(t *testing.T) {
	e := newEnv(t, envOpts{})
	r := e.raw(t)
	key := newKey(t)
	cookie, ch := r.auth()
	att := r.attestation(ch.Nonce, key, key)
	ev, err := evidence.NewSNP(e.snpQuoteProvider(nil), e.log).Evidence(context.Background(), [64]byte{1, 2, 3})
	must(t, err)
	att.TeeEvidence.PrimaryEvidence = ev
	if status, body := r.attest(cookie, att); status != http.StatusUnauthorized || !strings.Contains(body, "report_data: expected") || !strings.Contains(body, "seen 010203") {
		t.Fatalf("report data mismatch: %d %s", status, body)
	}
}

func TestSampleEvidenceOnHardwareSession(t *testing.T) {
	// A guest that opened an snp session cannot slip sample evidence in.
	e := newEnv(t, envOpts{dev: true})
	r := e.raw(t)
	key := newKey(t)
	cookie, ch := r.auth()
	att := r.attestation(ch.Nonce, key, key)
	pub, _ := kbs.PublicKeyJWK(key)
	rdata, _ := kbs.ExpectedReportData(kbs.RuntimeData{Nonce: ch.Nonce, TeePubKey: pub}, "", kbs.SHA384)
	ev, _ := evidence.NewSample(nil, e.log).Evidence(context.Background(), rdata)
	att.TeeEvidence.PrimaryEvidence = ev
	if status, body := r.attest(cookie, att); status != http.StatusUnauthorized || !strings.Contains(body, "sev-snp") {
		t.Fatalf("sample evidence on an snp session: %d %s", status, body)
	}
}

func TestRequestLimits(t *testing.T) {
	e := newEnv(t, envOpts{})
	r := e.raw(t)
	cookie, _ := r.auth()
	huge := map[string]string{"pad": strings.Repeat("x", 2<<20)}
	if status, body := r.attest(cookie, huge); status != http.StatusUnauthorized || !strings.Contains(body, "limit") {
		t.Fatalf("oversized attest: %d %s", status, body)
	}
	resp, body := r.do("POST", kbs.PathAuth, kbs.Request{Version: "0.1.0", Tee: kbs.TeeSNP}, nil) //nolint:bodyclose // raw.do read and closed it
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "version: expected 0.4.0") {
		t.Fatalf("old protocol version: %d %s", resp.StatusCode, body)
	}
}

func TestBearerToken(t *testing.T) {
	e := newEnv(t, envOpts{})
	c := e.client(t, evidence.NewSNP(e.snpQuoteProvider(nil), e.log), initDoc)
	token, err := c.Attest(context.Background())
	must(t, err)
	req, _ := http.NewRequest("GET", e.ts.URL+kbs.PathResource+snpResource, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := e.ts.Client().Do(req)
	must(t, err)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("bearer resource: %d", resp.StatusCode)
	}
	e.clock.Add(11 * time.Minute)
	req, _ = http.NewRequest("GET", e.ts.URL+kbs.PathResource+snpResource, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err = e.ts.Client().Do(req)
	must(t, err)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("expired bearer token: %d", resp.StatusCode)
	}
}

func TestAdminAPI(t *testing.T) {
	e := newEnv(t, envOpts{dev: true})
	put := func(path, token, body string) int {
		req, _ := http.NewRequest("PUT", e.admin.URL+path, strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := e.admin.Client().Do(req)
		must(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	if s := put(server.AdminPathResource+"a/b/c", "", "x"); s != http.StatusUnauthorized {
		t.Fatalf("no token: %d", s)
	}
	if s := put(server.AdminPathResource+"a/b/c", "wrong", "x"); s != http.StatusUnauthorized {
		t.Fatalf("wrong token: %d", s)
	}
	if s := put(server.AdminPathResource+"a/b/c", adminToken, "value"); s != http.StatusNoContent {
		t.Fatalf("set resource: %d", s)
	}
	if got, err := e.store.Resource("a/b/c"); err != nil || string(got) != "value" {
		t.Fatalf("stored resource = %q, %v", got, err)
	}
	if s := put(server.AdminPathAttestationPolicy, adminToken, `{"snp":{"measurements":["00"]},"bogus":1}`); s != http.StatusBadRequest {
		t.Fatalf("unknown policy key: %d", s)
	}
	if s := put(server.AdminPathResourcePolicy, adminToken, `{"rules":[{"resource":"a/b","tees":["snp"]}]}`); s != http.StatusBadRequest {
		t.Fatalf("bad resource pattern: %d", s)
	}
	if s := put(server.AdminPathAttestationPolicy, adminToken, `{"snp":{"measurements":["00"]}}`); s != http.StatusNoContent {
		t.Fatalf("set policy: %d", s)
	}
	p, err := e.store.AttestationPolicy()
	if err != nil || p.SNP == nil || p.SNP.Measurements[0] != "00" {
		t.Fatalf("stored policy = %+v, %v", p, err)
	}
}

func TestClientReattestsWhenGrantExpires(t *testing.T) {
	e := newEnv(t, envOpts{})
	c := e.client(t, evidence.NewSNP(e.snpQuoteProvider(nil), e.log), initDoc)
	if _, err := c.Resource(context.Background(), snpResource); err != nil {
		t.Fatal(err)
	}
	e.clock.Add(11 * time.Minute)
	if got, err := c.Resource(context.Background(), snpResource); err != nil || string(got) != secret {
		t.Fatalf("after grant expiry: %q, %v", got, err)
	}
	if n := strings.Count(e.logs.String(), `"msg":"attestation accepted"`); n != 2 {
		t.Fatalf("attested %d times, want 2", n)
	}
}

func TestClientPinsBrokerCertificate(t *testing.T) {
	e := newEnv(t, envOpts{})
	certPEM := pemCert(e.ts.Certificate().Raw)
	c, err := client.New(client.Config{URL: e.ts.URL, Attester: evidence.NewSNP(e.snpQuoteProvider(nil), e.log), InitData: initDoc, RootCAsPEM: certPEM})
	must(t, err)
	if got, err := c.Resource(context.Background(), snpResource); err != nil || string(got) != secret {
		t.Fatalf("with the broker's certificate pinned: %q, %v", got, err)
	}
	// httptest servers share one certificate, so make an unrelated CA.
	caKey := newKey(t)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "other ca"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &caKey.PublicKey, caKey)
	must(t, err)
	c, err = client.New(client.Config{URL: e.ts.URL, Attester: evidence.NewSNP(e.snpQuoteProvider(nil), e.log), RootCAsPEM: pemCert(caDER)})
	must(t, err)
	if _, err := c.Attest(context.Background()); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("with another certificate pinned: %v", err)
	}
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// TestTDXQuoteOverProtocol sends go-tdx-guest's sample quote through the
// broker: it verifies up to the pinned Intel root and matches the MRTD
// reference value, but it was not made for this challenge, so its report
// data is the only violation and no key is released.
func TestTDXQuoteOverProtocol(t *testing.T) {
	q, err := tdxabi.QuoteToProto(tdxdata.RawQuote)
	must(t, err)
	mrtd := hex.EncodeToString(q.(*tdxpb.QuoteV4).GetTdQuoteBody().GetMrTd())
	e := newEnv(t, envOpts{tdx: true, policy: func(p *policy.Attestation) { p.TDX = &policy.TDX{MRTDs: []string{mrtd}} }})
	must(t, e.store.SetResourcePolicy(policy.Resources{Rules: []policy.ResourceRule{{Resource: "default/key/*", Tees: []kbs.Tee{kbs.TeeTDX}}}}))
	r := e.raw(t)
	key := newKey(t)
	pub, _ := kbs.PublicKeyJWK(key)
	cookie, ch := r.authTee(kbs.TeeTDX)
	ev, err := evidence.NewTDX(fixedQuote(tdxdata.RawQuote), nil, e.log).Evidence(context.Background(), [64]byte{})
	must(t, err)
	status, body := r.attest(cookie, kbs.Attestation{RuntimeData: kbs.RuntimeData{Nonce: ch.Nonce, TeePubKey: pub}, TeeEvidence: kbs.CompositeEvidence{PrimaryEvidence: ev}})
	if status != http.StatusUnauthorized || !strings.Contains(body, "report_data: expected") || strings.Contains(body, "tdx.mrtd") || strings.Contains(body, "verifying") {
		t.Fatalf("sample tdx quote: %d %s", status, body)
	}
	if r.resource(cookie) != http.StatusUnauthorized || e.released() != 0 {
		t.Fatal("foreign tdx quote read a resource")
	}
	// Tampered, it fails verification before any policy.
	bad := append([]byte(nil), tdxdata.RawQuote...)
	bad[48+200] ^= 1
	ev, err = evidence.NewTDX(fixedQuote(bad), nil, e.log).Evidence(context.Background(), [64]byte{})
	must(t, err)
	cookie, ch = r.authTee(kbs.TeeTDX)
	status, body = r.attest(cookie, kbs.Attestation{RuntimeData: kbs.RuntimeData{Nonce: ch.Nonce, TeePubKey: pub}, TeeEvidence: kbs.CompositeEvidence{PrimaryEvidence: ev}})
	if status != http.StatusUnauthorized || !strings.Contains(body, "verifying tdx quote") {
		t.Fatalf("tampered tdx quote: %d %s", status, body)
	}
}

type fixedQuote []byte

func (fixedQuote) IsSupported() error                     { return nil }
func (q fixedQuote) GetRawQuote([64]byte) ([]byte, error) { return q, nil }

func TestClientFromInitData(t *testing.T) {
	e := newEnv(t, envOpts{})
	d := &initdata.Document{Version: initdata.Version, Algorithm: initdata.Algorithm,
		Broker: initdata.Broker{URL: e.ts.URL, Cert: string(pemCert(e.ts.Certificate().Raw))}}
	doc, err := initdata.Marshal(d)
	must(t, err)
	a := evidence.NewSNP(e.snpQuoteProvider(func(r *snptest.Report) { r.HostData = initdata.SNPHostData(doc) }), e.log)
	must(t, evidence.CheckInitData(context.Background(), a, doc))
	c, err := client.FromInitData(doc, a, e.log)
	must(t, err)
	if got, err := c.Resource(context.Background(), snpResource); err != nil || string(got) != secret {
		t.Fatalf("Resource = %q, %v\n%s", got, err, e.logs)
	}
	if !strings.Contains(e.logs.String(), hexDigest(doc)) {
		t.Fatal("broker did not record the init-data digest")
	}
}

// TestConcurrentAttestSpendsNonceOnce races the same valid attestation on
// one session: exactly one wins.
func TestConcurrentAttestSpendsNonceOnce(t *testing.T) {
	e := newEnv(t, envOpts{})
	r := e.raw(t)
	key := newKey(t)
	cookie, ch := r.auth()
	att := r.attestation(ch.Nonce, key, key)
	body, err := json.Marshal(att)
	must(t, err)
	const n = 8
	codes := make(chan int, n)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("POST", e.ts.URL+kbs.PathAttest, bytes.NewReader(body))
			req.AddCookie(cookie)
			resp, err := e.ts.Client().Do(req)
			if err != nil {
				codes <- 0
				return
			}
			resp.Body.Close()
			codes <- resp.StatusCode
		}()
	}
	wg.Wait()
	close(codes)
	ok := 0
	for c := range codes {
		if c == http.StatusOK {
			ok++
		} else if c != http.StatusUnauthorized {
			t.Errorf("status %d", c)
		}
	}
	if ok != 1 {
		t.Fatalf("%d of %d concurrent attestations succeeded, want 1", ok, n)
	}
}
