package kbs

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"
	josecipher "github.com/go-jose/go-jose/v4/cipher"
)

// cocoAAD computes the additional data the way a Confidential Containers
// guest does (guest-components kbs_protocol keypair.rs decrypt_response ->
// kbs_types ProtectedHeader::generate_aad): decode the received header
// into {alg, enc, other members}, serialise it again with serde_json —
// alg, enc, then the other members in sorted order, nested objects sorted
// too (serde_json's default map is ordered by key), no whitespace, no HTML
// escaping — and base64url-encode that. The received bytes themselves are
// never used.
func cocoAAD(t *testing.T, protected string) ([]byte, map[string]any) {
	t.Helper()
	raw, err := b64url.DecodeString(protected)
	if err != nil {
		t.Fatalf("protected header base64url: %v", err)
	}
	var members map[string]any
	if err := json.Unmarshal(raw, &members); err != nil {
		t.Fatalf("protected header json: %v", err)
	}
	enc := func(v any) string {
		var buf bytes.Buffer
		e := json.NewEncoder(&buf)
		e.SetEscapeHTML(false)
		if err := e.Encode(v); err != nil {
			t.Fatal(err)
		}
		return strings.TrimSuffix(buf.String(), "\n")
	}
	var b strings.Builder
	fmt.Fprintf(&b, `{"alg":%s,"enc":%s`, enc(members["alg"]), enc(members["enc"]))
	var others []string
	for k := range members {
		if k != "alg" && k != "enc" {
			others = append(others, k)
		}
	}
	slices.Sort(others)
	for _, k := range others {
		fmt.Fprintf(&b, `,%s:%s`, enc(k), enc(members[k]))
	}
	b.WriteString("}")
	return []byte(b64url.EncodeToString([]byte(b.String()))), members
}

// cocoDecrypt opens a Response the way a Confidential Containers guest
// does: unwrap the content key by the header's alg (ECDH-ES+A256KW with
// the epk's curve, x and y; RSA-OAEP-256), then AES-256-GCM with cocoAAD.
func cocoDecrypt(t *testing.T, priv any, r Response) ([]byte, error) {
	t.Helper()
	aad, h := cocoAAD(t, r.Protected)
	wrapped, _ := b64url.DecodeString(r.EncryptedKey)
	var cek []byte
	switch h["alg"] {
	case "ECDH-ES+A256KW":
		key := priv.(*ecdsa.PrivateKey)
		epk, _ := h["epk"].(map[string]any)
		if epk["crv"] != key.Curve.Params().Name {
			return nil, fmt.Errorf("unmatched curve %v", epk["crv"])
		}
		x, _ := b64url.DecodeString(epk["x"].(string))
		y, _ := b64url.DecodeString(epk["y"].(string))
		pub := &ecdsa.PublicKey{Curve: key.Curve, X: new(big.Int).SetBytes(x), Y: new(big.Int).SetBytes(y)}
		block, err := aes.NewCipher(josecipher.DeriveECDHES("ECDH-ES+A256KW", nil, nil, key, pub, 32))
		if err != nil {
			return nil, err
		}
		if cek, err = josecipher.KeyUnwrap(block, wrapped); err != nil {
			return nil, fmt.Errorf("unwrapping cek: %w", err)
		}
	case "RSA-OAEP-256":
		var err error
		if cek, err = rsa.DecryptOAEP(sha256.New(), nil, priv.(*rsa.PrivateKey), wrapped, nil); err != nil {
			return nil, fmt.Errorf("unwrapping cek: %w", err)
		}
	default:
		return nil, fmt.Errorf("unsupported alg %v", h["alg"])
	}
	iv, _ := b64url.DecodeString(r.IV)
	ct, _ := b64url.DecodeString(r.Ciphertext)
	tag, _ := b64url.DecodeString(r.Tag)
	block, err := aes.NewCipher(cek)
	if err != nil {
		return nil, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return gcm.Open(nil, iv, append(ct, tag...), aad)
}

// TestSealSurvivesCoCoAAD: a resource veil-kbs seals decrypts in a
// Confidential Containers guest, for each TEE key kind their client
// generates (EC P-256, the default; EC P-521; RSA-OAEP-256), and the
// header veil-kbs emits is byte for byte the one the guest rebuilds.
func TestSealSurvivesCoCoAAD(t *testing.T) {
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p521, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecJWK := func(k *ecdsa.PrivateKey) TeePubKey {
		j, err := PublicKeyJWK(k)
		if err != nil {
			t.Fatal(err)
		}
		return j
	}
	rsaJWK := TeePubKey{Kty: "RSA", Alg: "RSA-OAEP-256", N: b64url.EncodeToString(rsaKey.N.Bytes()), E: b64url.EncodeToString(big.NewInt(int64(rsaKey.E)).Bytes())}
	tests := []struct {
		name   string
		pub    TeePubKey
		priv   any
		header string // the decoded protected header, exactly
	}{
		{"P-256", ecJWK(p256), p256, `{"alg":"ECDH-ES+A256KW","enc":"A256GCM","epk":{"crv":"P-256","kty":"EC","x":"`},
		{"P-521", ecJWK(p521), p521, `{"alg":"ECDH-ES+A256KW","enc":"A256GCM","epk":{"crv":"P-521","kty":"EC","x":"`},
		{"RSA-OAEP-256", rsaJWK, rsaKey, `{"alg":"RSA-OAEP-256","enc":"A256GCM"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := Seal(tt.pub, []byte("the disk key"))
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := b64url.DecodeString(resp.Protected)
			if !strings.HasPrefix(string(raw), tt.header) {
				t.Errorf("protected header %s, want it to start with %s", raw, tt.header)
			}
			aad, _ := cocoAAD(t, resp.Protected)
			if string(aad) != resp.Protected {
				t.Errorf("re-serialised header %s differs from the emitted %s", aad, resp.Protected)
			}
			got, err := cocoDecrypt(t, tt.priv, resp)
			if err != nil || string(got) != "the disk key" {
				t.Fatalf("CoCo-style decrypt = %q, %v", got, err)
			}
			if k, ok := tt.priv.(*ecdsa.PrivateKey); ok {
				if got, err := Open(k, resp); err != nil || string(got) != "the disk key" {
					t.Fatalf("Open = %q, %v", got, err)
				}
			}
		})
	}
}

// TestCoCoDecryptRefusesUncanonicalHeader keeps cocoDecrypt honest: a JWE
// whose header is not in canonical order (go-jose's own encrypter writes
// epk as kty, crv, x, y) must fail there, as it fails in a CoCo guest;
// otherwise TestSealSurvivesCoCoAAD would prove nothing.
func TestCoCoDecryptRefusesUncanonicalHeader(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	enc, err := jose.NewEncrypter(jose.A256GCM, jose.Recipient{Algorithm: jose.ECDH_ES_A256KW, Key: &key.PublicKey}, nil)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := enc.Encrypt([]byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	var resp Response
	if err := json.Unmarshal([]byte(obj.FullSerialize()), &resp); err != nil {
		t.Fatal(err)
	}
	raw, _ := b64url.DecodeString(resp.Protected)
	if _, err := cocoDecrypt(t, key, resp); err == nil {
		t.Fatalf("CoCo-style decrypt accepted header %s (if go-jose now writes epk sorted, build the contrast header another way)", raw)
	}
	if got, err := Open(key, resp); err != nil || string(got) != "x" {
		t.Fatalf("Open = %q, %v (a standard JWE must still open)", got, err)
	}
}
