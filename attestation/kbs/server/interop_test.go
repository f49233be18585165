package server_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"strings"
	"testing"

	"github.com/veil-runtime/veil/attestation/initdata"
	"github.com/veil-runtime/veil/attestation/internal/cocotest"
	"github.com/veil-runtime/veil/attestation/internal/snptest"
	"github.com/veil-runtime/veil/attestation/kbs"
)

// cocoGuest speaks to veil-kbs as a Confidential Containers guest does
// (guest-components' kbs_protocol rcar_client with its SNP attester): its
// own request shapes, SNP evidence in Trustee's encoding, resources opened
// with the re-serialised protected header as AAD.
type cocoGuest struct {
	t    *testing.T
	r    *raw
	e    *env
	priv any
	jwk  json.RawMessage // kbs_types TeePubKey: kty first, then the key's members
}

func newCoCoGuest(t *testing.T, e *env, kind string) *cocoGuest {
	t.Helper()
	b64 := base64.RawURLEncoding.EncodeToString
	g := &cocoGuest{t: t, r: e.raw(t), e: e}
	switch kind {
	case "P-256", "P-521":
		curve := elliptic.P256()
		if kind == "P-521" {
			curve = elliptic.P521()
		}
		k, err := ecdsa.GenerateKey(curve, rand.Reader)
		must(t, err)
		pt, err := k.PublicKey.Bytes()
		must(t, err)
		n := (len(pt) - 1) / 2
		g.priv = k
		g.jwk = json.RawMessage(`{"kty":"EC","crv":"` + kind + `","alg":"ECDH-ES+A256KW","x":"` + b64(pt[1:1+n]) + `","y":"` + b64(pt[1+n:]) + `"}`)
	case "RSA":
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		must(t, err)
		g.priv = k
		g.jwk = json.RawMessage(`{"kty":"RSA","alg":"RSA-OAEP-256","n":"` + b64(k.N.Bytes()) + `","e":"` + b64(big.NewInt(int64(k.E)).Bytes()) + `"}`)
	}
	return g
}

// auth opens a session with the request guest-components sends.
func (g *cocoGuest) auth(version string) (*http.Cookie, kbs.Challenge) {
	g.t.Helper()
	req := json.RawMessage(`{"version":"` + version + `","tee":"snp","extra-params":{"supported-hash-algorithms":["sha256","sha384","sha512","sm3"]}}`)
	resp, body := g.r.do("POST", kbs.PathAuth, req, nil) //nolint:bodyclose // raw.do read and closed it
	if resp.StatusCode != http.StatusOK {
		g.t.Fatalf("auth %s: %d %s", version, resp.StatusCode, body)
	}
	var ch kbs.Challenge
	must(g.t, json.Unmarshal(body, &ch))
	if alg, err := kbs.SelectedHashAlgorithm(ch.ExtraParams); err != nil || alg != kbs.SHA384 {
		g.t.Fatalf("challenge selects %q, %v", alg, err)
	}
	for _, c := range resp.Cookies() {
		if c.Name == kbs.SessionCookie {
			return c, ch
		}
	}
	g.t.Fatal("auth set no session cookie")
	return nil, ch
}

// evidence is Trustee-encoded SNP evidence binding the runtime data.
func (g *cocoGuest) evidence(nonce string, hostData [32]byte) json.RawMessage {
	g.t.Helper()
	var pub kbs.TeePubKey
	must(g.t, json.Unmarshal(g.jwk, &pub))
	rdata, err := kbs.ExpectedReportData(kbs.RuntimeData{Nonce: nonce, TeePubKey: pub}, "", kbs.SHA384)
	must(g.t, err)
	report, err := g.e.signer.Sign(snptest.Report{Measurement: measurement, HostData: hostData, ReportData: rdata})
	must(g.t, err)
	ev, err := snptest.TrusteeEvidence(report, []snptest.TrusteeCert{{Kind: "VCEK", DER: g.e.signer.VCEK()}})
	must(g.t, err)
	return ev
}

func (g *cocoGuest) resource(cookie *http.Cookie) ([]byte, error) {
	g.t.Helper()
	resp, body := g.r.do("GET", kbs.PathResource+snpResource, nil, cookie) //nolint:bodyclose // raw.do read and closed it
	if resp.StatusCode != http.StatusOK {
		g.t.Fatalf("resource: %d %s", resp.StatusCode, body)
	}
	return cocotest.Decrypt(g.priv, body)
}

// TestCoCoGuestAgainstVeilKBS: a Confidential Containers guest (protocol
// 0.4.0, init-data, SNP evidence in Trustee's encoding) attests to
// veil-kbs and decrypts the resource the way guest-components does, with
// each kind of TEE key their client generates.
func TestCoCoGuestAgainstVeilKBS(t *testing.T) {
	for _, kind := range []string{"P-256", "P-521", "RSA"} {
		t.Run(kind, func(t *testing.T) {
			e := newEnv(t, envOpts{})
			g := newCoCoGuest(t, e, kind)
			cookie, ch := g.auth("0.4.0")
			body, err := json.Marshal(map[string]any{
				"init-data":    map[string]string{"format": "toml", "body": string(initDoc)},
				"runtime-data": map[string]any{"nonce": ch.Nonce, "tee-pubkey": g.jwk},
				"tee-evidence": map[string]any{"primary_evidence": g.evidence(ch.Nonce, initdata.SNPHostData(initDoc)), "additional_evidence": ""},
			})
			must(t, err)
			status, resp := g.r.attest(cookie, json.RawMessage(body))
			if status != http.StatusOK || !strings.Contains(resp, `"token"`) {
				t.Fatalf("attest: %d %s\n%s", status, resp, e.logs)
			}
			got, err := g.resource(cookie)
			if err != nil || string(got) != secret {
				t.Fatalf("CoCo-style decrypt = %q, %v", got, err)
			}
		})
	}
}

// TestProtocol03Guest: a guest of protocol 0.3.0 (tee-pubkey at the top
// of the attest message, no runtime-data, no init-data) is served; the
// nonce it binds is the session's.
func TestProtocol03Guest(t *testing.T) {
	e := newEnv(t, envOpts{})
	g := newCoCoGuest(t, e, "P-256")
	cookie, ch := g.auth("0.3.0")
	att := func(nonce string) json.RawMessage {
		body, err := json.Marshal(map[string]any{
			"tee-pubkey":   g.jwk,
			"tee-evidence": map[string]any{"primary_evidence": g.evidence(nonce, [32]byte{}), "additional_evidence": ""},
		})
		must(t, err)
		return body
	}
	// Evidence over another nonce does not bind this session.
	if status, resp := g.r.attest(cookie, att("c3RhbGU=")); status != http.StatusUnauthorized || !strings.Contains(resp, "report_data") {
		t.Fatalf("0.3 attest with a stale nonce: %d %s", status, resp)
	}
	cookie, ch = g.auth("0.3.0")
	if status, resp := g.r.attest(cookie, att(ch.Nonce)); status != http.StatusOK {
		t.Fatalf("0.3 attest: %d %s\n%s", status, resp, e.logs)
	}
	if got, err := g.resource(cookie); err != nil || string(got) != secret {
		t.Fatalf("resource = %q, %v", got, err)
	}
}

// TestProtocolVersionsAtAuth: versions outside 0.3.x-0.4.x are refused at
// /auth with Trustee's ProtocolVersion error naming the accepted range.
func TestProtocolVersionsAtAuth(t *testing.T) {
	e := newEnv(t, envOpts{})
	r := e.raw(t)
	for _, v := range []string{"0.2.0", "0.5.0", "1.0.0", "0.4.0-rc.1", "0.4"} {
		resp, body := r.do("POST", kbs.PathAuth, kbs.Request{Version: v, Tee: kbs.TeeSNP, ExtraParams: json.RawMessage(`""`)}, nil) //nolint:bodyclose // raw.do read and closed it
		var info kbs.ErrorInformation
		_ = json.Unmarshal(body, &info)
		if resp.StatusCode != http.StatusBadRequest || info.Type != kbs.ErrorVersionUnsupported ||
			!strings.Contains(info.Detail, `version: expected 0.4.0 or another version from 0.3.0 up to 0.4.x, seen "`+v+`"`) {
			t.Errorf("version %q: %d %s", v, resp.StatusCode, body)
		}
	}
	for _, v := range []string{"0.3.1", "0.4.0", "0.4.2"} {
		resp, body := r.do("POST", kbs.PathAuth, kbs.Request{Version: v, Tee: kbs.TeeSNP, ExtraParams: json.RawMessage(`""`)}, nil) //nolint:bodyclose // raw.do read and closed it
		if resp.StatusCode != http.StatusOK {
			t.Errorf("version %q: %d %s", v, resp.StatusCode, body)
		}
	}
}
