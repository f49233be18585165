package kbs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"math/big"
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"

	"github.com/veil-runtime/veil/attestation/internal/cocotest"
)

func cocoAAD(t *testing.T, protected string) []byte {
	t.Helper()
	aad, _, err := cocotest.AAD(protected)
	if err != nil {
		t.Fatal(err)
	}
	return aad
}

func cocoDecrypt(t *testing.T, priv any, r Response) ([]byte, error) {
	t.Helper()
	body, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return cocotest.Decrypt(priv, body)
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
			aad := cocoAAD(t, resp.Protected)
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
