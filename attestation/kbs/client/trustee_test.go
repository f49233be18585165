package client

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	josecipher "github.com/go-jose/go-jose/v4/cipher"
	tdxabi "github.com/google/go-tdx-guest/abi"
	tdxpb "github.com/google/go-tdx-guest/proto/tdx"
	tdxdata "github.com/google/go-tdx-guest/testing/testdata"

	"github.com/veil-runtime/veil/attestation/evidence"
)

// A recorded exchange with Trustee's KBS (kbs/src/api_server.rs and
// attestation/backend.rs, protocol 0.4.0): the values a Trustee broker
// returned, replayed by trusteeKBS. Only the resource JWE is made afresh,
// because it must be sealed to the client's new TEE key.
const (
	trusteeErrorPrefix = "https://github.com/confidential-containers/kbs/errors/"
	// Challenge: 32 random bytes, standard base64; extra-params is the
	// empty string for every TEE but IBM SE.
	trusteeChallenge = `{"nonce":"Q2hhbGxlbmdlTm9uY2VGcm9tVHJ1c3RlZUtCUzAwMDE=","extra-params":""}`
	trusteeNonce     = "Q2hhbGxlbmdlTm9uY2VGcm9tVHJ1c3RlZUtCUzAwMDE="
	trusteeSession   = "6a0f2b9e-3c41-4d8a-9b7e-0f5c2d1e8a47"
	// An attestation token (an EAR JWT) as /attest returns it.
	trusteeToken = "eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCJ9.eyJlYXIudmVyaWZpZXItaWQiOnsiYnVpbGQiOiJ0cnVzdGVlIn0sInN1Ym1vZHMiOnsiY3B1MCI6eyJlYXIuc3RhdHVzIjoiYWZmaXJtaW5nIn19fQ.c2lnbmF0dXJl"
	// TDX quote v4: REPORTDATA follows the 48-byte header and 520 bytes of
	// the TD report body.
	tdxReportDataOffset = 568
)

// trusteeError is Trustee's ErrorInformation body (kbs/src/error.rs).
func trusteeError(w http.ResponseWriter, status int, kind, detail string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	raw, _ := json.Marshal(map[string]string{"type": trusteeErrorPrefix + kind, "detail": detail})
	w.Write(raw)
}

// trusteeKBS replays Trustee's side and checks each request the way
// Trustee parses it.
type trusteeKBS struct {
	t *testing.T
	// wantVersion is the one protocol version this broker accepts
	// (Trustee: exactly 0.4.0).
	wantVersion string
	// refuseAttest answers /attest as Trustee does when verification fails.
	refuseAttest bool
	// corruptTag flips a bit of the sealed resource's tag.
	corruptTag bool

	mu      sync.Mutex
	auths   int
	attests int
	teeKey  map[string]any
	seen    []string // requests, "METHOD path"
	initDoc string
}

func (k *trusteeKBS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.seen = append(k.seen, r.Method+" "+r.URL.Path)
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/kbs/v0/auth":
		k.auth(w, r)
	case r.Method == http.MethodPost && r.URL.Path == "/kbs/v0/attest":
		k.attest(w, r)
	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/kbs/v0/resource/"):
		k.resource(w, r, strings.TrimPrefix(r.URL.Path, "/kbs/v0/resource/"))
	default:
		trusteeError(w, http.StatusNotFound, "InvalidRequestPath", "Request path "+r.URL.Path+" is invalid")
	}
}

func (k *trusteeKBS) auth(w http.ResponseWriter, r *http.Request) {
	k.auths++
	var req struct {
		Version     string          `json:"version"`
		Tee         string          `json:"tee"`
		ExtraParams json.RawMessage `json:"extra-params"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.ExtraParams == nil {
		trusteeError(w, http.StatusUnauthorized, "AttestationError", fmt.Sprintf("Attestation error: RCAR handshake Auth failed: deserialize Request: %v", err))
		return
	}
	if req.Version != k.wantVersion {
		trusteeError(w, http.StatusUnauthorized, "AttestationError", fmt.Sprintf("Attestation error: RCAR handshake Auth failed: KBS Client Protocol Version Mismatch: expect =%s while the request is %s", k.wantVersion, req.Version))
		return
	}
	if req.Tee != "tdx" || !bytes.Contains(req.ExtraParams, []byte(`"supported-hash-algorithms":[`)) {
		k.t.Errorf("auth request: tee %q, extra-params %s", req.Tee, req.ExtraParams)
	}
	http.SetCookie(w, &http.Cookie{Name: "kbs-session-id", Value: trusteeSession, Expires: time.Now().Add(5 * time.Minute)})
	w.Header().Set("Content-Type", "application/json")
	w.Write([]byte(trusteeChallenge))
}

func (k *trusteeKBS) attest(w http.ResponseWriter, r *http.Request) {
	k.attests++
	if c, err := r.Cookie("kbs-session-id"); err != nil || c.Value != trusteeSession {
		trusteeError(w, http.StatusUnauthorized, "AttestationError", "Attestation error: RCAR handshake Attest failed")
		return
	}
	var att struct {
		InitData *struct {
			Format string `json:"format"`
			Body   string `json:"body"`
		} `json:"init-data"`
		RuntimeData struct {
			Nonce     string         `json:"nonce"`
			TeePubKey map[string]any `json:"tee-pubkey"`
		} `json:"runtime-data"`
		TeeEvidence struct {
			PrimaryEvidence struct {
				CCEventLog *string `json:"cc_eventlog"`
				Quote      string  `json:"quote"`
			} `json:"primary_evidence"`
			AdditionalEvidence *string `json:"additional_evidence"`
		} `json:"tee-evidence"`
	}
	if err := json.NewDecoder(r.Body).Decode(&att); err != nil {
		trusteeError(w, http.StatusUnauthorized, "AttestationError", "Attestation error: RCAR handshake Attest failed")
		return
	}
	if k.refuseAttest || att.RuntimeData.Nonce != trusteeNonce || att.TeeEvidence.AdditionalEvidence == nil {
		trusteeError(w, http.StatusUnauthorized, "AttestationError", "Attestation error: RCAR handshake Attest failed")
		return
	}
	// What Trustee's TDX verifier checks of the binding: REPORTDATA is the
	// SHA-384 of the sorted, compact JSON of the runtime data, zero padded.
	var doc bytes.Buffer
	enc := json.NewEncoder(&doc)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(map[string]any{"additional-evidence": *att.TeeEvidence.AdditionalEvidence, "nonce": att.RuntimeData.Nonce, "tee-pubkey": att.RuntimeData.TeePubKey})
	want := make([]byte, 64)
	sum := sha512.Sum384(bytes.TrimSuffix(doc.Bytes(), []byte("\n")))
	copy(want, sum[:])
	quote, err := base64.StdEncoding.DecodeString(att.TeeEvidence.PrimaryEvidence.Quote)
	if err != nil || len(quote) < tdxReportDataOffset+64 || !bytes.Equal(quote[tdxReportDataOffset:tdxReportDataOffset+64], want) {
		k.t.Errorf("attest: quote does not bind the runtime data %s", doc.Bytes())
		trusteeError(w, http.StatusUnauthorized, "AttestationError", "Attestation error: RCAR handshake Attest failed")
		return
	}
	if att.InitData != nil {
		if att.InitData.Format != "toml" {
			k.t.Errorf("init-data format %q", att.InitData.Format)
		}
		k.initDoc = att.InitData.Body
	}
	k.teeKey = att.RuntimeData.TeePubKey
	w.Header().Set("Content-Type", "application/json")
	w.Write([]byte(`{"token":"` + trusteeToken + `"}`))
}

func (k *trusteeKBS) resource(w http.ResponseWriter, r *http.Request, path string) {
	c, err := r.Cookie("kbs-session-id")
	authed := (err == nil && c.Value == trusteeSession || r.Header.Get("Authorization") == "Bearer "+trusteeToken) && k.teeKey != nil
	if !authed {
		trusteeError(w, http.StatusUnauthorized, "TokenNotFound", "Attestation Token not found")
		return
	}
	if len(strings.Split(path, "/")) != 3 {
		trusteeError(w, http.StatusNotFound, "InvalidRequestPath", "Request path "+r.URL.Path+" is invalid")
		return
	}
	switch path {
	case "default/key/disk":
		body, err := trusteeSeal(k.teeKey, []byte("trustee-held disk key"), k.corruptTag)
		if err != nil {
			k.t.Errorf("sealing: %v", err)
			trusteeError(w, http.StatusUnauthorized, "JweError", "JWE failed")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	case "default/key/denied":
		trusteeError(w, http.StatusUnauthorized, "PolicyDeny", "Access denied by policy")
	default:
		trusteeError(w, http.StatusUnauthorized, "PluginInternalError", "Plugin internal error")
	}
}

// trusteeSeal builds the response Trustee's kbs/src/jwe builds for an EC
// P-256 TEE key: ephemeral P-256 key, Concat KDF over "ECDH-ES+A256KW",
// AES key wrap, A256GCM with the base64url serde_json header as AAD, and
// the kbs_types Response members in their order, "aad" left out.
func trusteeSeal(teeKey map[string]any, plaintext []byte, corruptTag bool) ([]byte, error) {
	if teeKey["kty"] != "EC" || teeKey["crv"] != "P-256" || teeKey["alg"] != "ECDH-ES+A256KW" {
		return nil, fmt.Errorf("tee key %v: not EC P-256 ECDH-ES+A256KW", teeKey)
	}
	b64 := base64.RawURLEncoding
	xs, _ := teeKey["x"].(string)
	ys, _ := teeKey["y"].(string)
	x, err1 := b64.DecodeString(xs)
	y, err2 := b64.DecodeString(ys)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("tee key coordinates")
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
	if err != nil {
		return nil, fmt.Errorf("tee key: %w", err)
	}
	eph, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	cek := make([]byte, 32)
	rand.Read(cek)
	kw, err := aes.NewCipher(josecipher.DeriveECDHES("ECDH-ES+A256KW", nil, nil, eph, pub, 32))
	if err != nil {
		return nil, err
	}
	wrapped, err := josecipher.KeyWrap(kw, cek)
	if err != nil {
		return nil, err
	}
	pt, err := eph.PublicKey.Bytes()
	if err != nil {
		return nil, err
	}
	header := fmt.Sprintf(`{"alg":"ECDH-ES+A256KW","enc":"A256GCM","epk":{"crv":"P-256","kty":"EC","x":"%s","y":"%s"}}`, b64.EncodeToString(pt[1:33]), b64.EncodeToString(pt[33:]))
	protected := b64.EncodeToString([]byte(header))
	block, err := aes.NewCipher(cek)
	if err != nil {
		return nil, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	iv := make([]byte, 12)
	rand.Read(iv)
	sealed := gcm.Seal(nil, iv, plaintext, []byte(protected))
	ct, tag := sealed[:len(sealed)-16], sealed[len(sealed)-16:]
	if corruptTag {
		tag[0] ^= 1
	}
	return []byte(fmt.Sprintf(`{"protected":"%s","encrypted_key":"%s","iv":"%s","ciphertext":"%s","tag":"%s"}`,
		protected, b64.EncodeToString(wrapped), b64.EncodeToString(iv), b64.EncodeToString(ct), b64.EncodeToString(tag))), nil
}

// boundQuote is a TDX quote provider that writes the report data into
// go-tdx-guest's sample quote, as the TDX module would.
type boundQuote struct{ t *testing.T }

func (boundQuote) IsSupported() error { return nil }

func (q boundQuote) GetRawQuote(reportData [64]byte) ([]byte, error) {
	out := append([]byte(nil), tdxdata.RawQuote...)
	copy(out[tdxReportDataOffset:], reportData[:])
	p, err := tdxabi.QuoteToProto(out)
	if err != nil {
		return nil, err
	}
	if got := p.(*tdxpb.QuoteV4).GetTdQuoteBody().GetReportData(); !bytes.Equal(got, reportData[:]) {
		q.t.Fatalf("report data offset %d is wrong: quote reports %x", tdxReportDataOffset, got)
	}
	return out, nil
}

func newTrusteeClient(t *testing.T, k *trusteeKBS) (*Client, *httptest.Server) {
	t.Helper()
	ts := httptest.NewServer(k)
	t.Cleanup(ts.Close)
	log := slog.New(slog.DiscardHandler)
	c, err := New(Config{URL: ts.URL, Attester: evidence.NewTDX(boundQuote{t}, nil, log), InitData: []byte("version = \"0.1.0\"\nalgorithm = \"sha256\"\n")})
	if err != nil {
		t.Fatal(err)
	}
	return c, ts
}

// TestClientAgainstTrusteeRecordedExchange: veil's client completes the
// handshake with a broker speaking Trustee's wire format (its challenge,
// cookie, token and resource JWE), sends what Trustee parses, and
// decrypts the resource; the session is reused for a second read.
func TestClientAgainstTrusteeRecordedExchange(t *testing.T) {
	k := &trusteeKBS{t: t, wantVersion: "0.4.0"}
	c, _ := newTrusteeClient(t, k)
	for range 2 {
		got, err := c.Resource(context.Background(), "default/key/disk")
		if err != nil || string(got) != "trustee-held disk key" {
			t.Fatalf("Resource = %q, %v", got, err)
		}
	}
	if k.auths != 1 || k.attests != 1 {
		t.Fatalf("auth %d, attest %d times; want one handshake for both reads (%v)", k.auths, k.attests, k.seen)
	}
	if !strings.HasPrefix(k.initDoc, "version = \"0.1.0\"") {
		t.Fatalf("init-data body %q", k.initDoc)
	}
}

// TestClientTrusteeFailureShapes: Trustee's refusals (all but a bad path
// are 401 with its ErrorInformation) surface as errors naming the step,
// the status, the error kind and Trustee's detail, without loops.
func TestClientTrusteeFailureShapes(t *testing.T) {
	tests := []struct {
		name     string
		kbs      *trusteeKBS
		resource string
		want     string
		auths    int
	}{
		{"version refused", &trusteeKBS{wantVersion: "0.5.0"}, "default/key/disk",
			"broker refused auth (401 AttestationError): Attestation error: RCAR handshake Auth failed: KBS Client Protocol Version Mismatch: expect =0.5.0 while the request is 0.4.0", 1},
		{"attestation refused", &trusteeKBS{wantVersion: "0.4.0", refuseAttest: true}, "default/key/disk",
			"broker refused attestation (401 AttestationError): Attestation error: RCAR handshake Attest failed", 1},
		{"policy deny is not retried", &trusteeKBS{wantVersion: "0.4.0"}, "default/key/denied",
			"broker refused resource default/key/denied (401 PolicyDeny): Access denied by policy", 1},
		{"other 401 attests once more", &trusteeKBS{wantVersion: "0.4.0"}, "default/key/missing",
			"broker refused resource default/key/missing (401 PluginInternalError): Plugin internal error", 2},
		{"bad path", &trusteeKBS{wantVersion: "0.4.0"}, "default/key",
			"broker refused resource default/key (404 InvalidRequestPath): Request path /kbs/v0/resource/default/key is invalid", 1},
		{"tampered tag", &trusteeKBS{wantVersion: "0.4.0", corruptTag: true}, "default/key/disk",
			"decrypting resource default/key/disk", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.kbs.t = t
			c, _ := newTrusteeClient(t, tt.kbs)
			_, err := c.Resource(context.Background(), tt.resource)
			if err == nil {
				t.Fatal("Resource succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v\nwant containing %s", err, tt.want)
			}
			if tt.kbs.auths != tt.auths {
				t.Fatalf("auth %d times, want %d (%v)", tt.kbs.auths, tt.auths, tt.kbs.seen)
			}
		})
	}
}
