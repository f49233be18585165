package kbs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"strings"
	"testing"
)

func TestCanonicalize(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{`{"b":1,"a":"x"}`, `{"a":"x","b":1}`},
		{`{ "nonce" : "a+/=", "tee-pubkey": {"y":"2","x":"1","kty":"EC"} }`, `{"nonce":"a+/=","tee-pubkey":{"kty":"EC","x":"1","y":"2"}}`},
		{`["<&>", "é", "\u0001\n"]`, `["<&>","é","\u0001\n"]`},
		{`{"additional-evidence":"","nonce":"n"}`, `{"additional-evidence":"","nonce":"n"}`},
		{`[true,false,null]`, `[true,false,null]`},
	}
	for _, tt := range tests {
		got, err := Canonicalize([]byte(tt.in))
		if err != nil || string(got) != tt.want {
			t.Errorf("Canonicalize(%s) = %s, %v; want %s", tt.in, got, err, tt.want)
		}
	}
	if _, err := Canonicalize([]byte(`1.5`)); err == nil {
		t.Error("Canonicalize(1.5) accepted a non-integer number")
	}
}

func TestRuntimeDataDigestIsTrusteeShape(t *testing.T) {
	rd := RuntimeData{Nonce: "bm9uY2U=", TeePubKey: TeePubKey{Kty: "EC", Alg: "ECDH-ES+A256KW", Crv: "P-256", X: "eA", Y: "eQ"}}
	got, err := RuntimeDataDigest(rd, "", SHA384)
	if err != nil {
		t.Fatal(err)
	}
	// What a Trustee guest hashes: JCS of the three members, sorted.
	doc := `{"additional-evidence":"","nonce":"bm9uY2U=","tee-pubkey":{"alg":"ECDH-ES+A256KW","crv":"P-256","kty":"EC","x":"eA","y":"eQ"}}`
	want := sha512.Sum384([]byte(doc))
	if string(got) != string(want[:]) {
		t.Fatalf("digest %x, want sha384(%s) = %x", got, doc, want)
	}
	rdata, err := ReportData(got)
	if err != nil {
		t.Fatal(err)
	}
	if string(rdata[:48]) != string(want[:]) || rdata[48] != 0 || rdata[63] != 0 {
		t.Fatalf("report data %x: want digest then zeros", rdata)
	}
	other := rd
	other.Nonce = "b3RoZXI="
	d2, _ := RuntimeDataDigest(other, "", SHA384)
	if string(d2) == string(got) {
		t.Fatal("digest does not depend on the nonce")
	}
}

func TestSelectedHashAlgorithm(t *testing.T) {
	tests := []struct {
		extra   string
		want    HashAlgorithm
		wantErr bool
	}{
		{``, SHA384, false},
		{`""`, SHA384, false},
		{`{}`, SHA384, false},
		{`{"selected-hash-algorithm":"Sha512"}`, SHA512, false},
		{`{"selected-hash-algorithm":"md5"}`, "", true},
		{`{"selected-hash-algorithm":3}`, "", true},
	}
	for _, tt := range tests {
		got, err := SelectedHashAlgorithm(json.RawMessage(tt.extra))
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("SelectedHashAlgorithm(%s) = %q, %v", tt.extra, got, err)
		}
	}
}

func TestSealOpen(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	jwk, err := PublicKeyJWK(key)
	if err != nil {
		t.Fatal(err)
	}
	if jwk.Kty != "EC" || jwk.Crv != "P-256" || jwk.Alg != "ECDH-ES+A256KW" || jwk.X == "" {
		t.Fatalf("jwk = %+v", jwk)
	}
	resp, err := Seal(jwk, []byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Protected == "" || resp.EncryptedKey == "" || resp.IV == "" || resp.Ciphertext == "" || resp.Tag == "" {
		t.Fatalf("response misses members: %+v", resp)
	}
	if strings.Contains(resp.Ciphertext, base64.RawURLEncoding.EncodeToString([]byte("secret"))) {
		t.Fatal("ciphertext holds the plaintext")
	}
	got, err := Open(key, resp)
	if err != nil || string(got) != "secret" {
		t.Fatalf("Open = %q, %v", got, err)
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if _, err := Open(other, resp); err == nil {
		t.Fatal("Open with another key succeeded")
	}
}

func TestPublicKeyRejectsWeakKeys(t *testing.T) {
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	b64 := func(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
	tests := []struct {
		name string
		key  TeePubKey
	}{
		{"unknown alg", TeePubKey{Kty: "EC", Alg: "dir"}},
		{"small rsa", TeePubKey{Kty: "RSA", Alg: "RSA-OAEP", N: b64(small.N.Bytes()), E: b64(big.NewInt(int64(small.E)).Bytes())}},
		{"garbage", TeePubKey{Kty: "EC", Alg: "ECDH-ES+A256KW", Crv: "P-256", X: "AA", Y: "AA"}},
	}
	for _, tt := range tests {
		if _, _, err := tt.key.PublicKey(); err == nil {
			t.Errorf("%s: accepted", tt.name)
		}
	}
}
