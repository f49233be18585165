package kbs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"fmt"

	"github.com/go-jose/go-jose/v4"
)

// TeePubKey is the public half of the TEE key as a JSON Web Key, with the
// members kbs_types reads: kty and alg always, crv/x/y for EC, n/e for RSA.
type TeePubKey struct {
	Kty string `json:"kty"`
	Alg string `json:"alg"`
	Crv string `json:"crv,omitempty"`
	X   string `json:"x,omitempty"`
	Y   string `json:"y,omitempty"`
	N   string `json:"n,omitempty"`
	E   string `json:"e,omitempty"`
}

// Key-wrapping algorithms a TEE key may name. EC P-256 with
// ECDH-ES+A256KW is what veil's guests generate.
var keyAlgorithms = map[string]jose.KeyAlgorithm{
	string(jose.ECDH_ES_A256KW): jose.ECDH_ES_A256KW,
	string(jose.RSA_OAEP):       jose.RSA_OAEP,
	string(jose.RSA_OAEP_256):   jose.RSA_OAEP_256,
}

// PublicKeyJWK describes the public half of key for the wire.
func PublicKeyJWK(key *ecdsa.PrivateKey) (TeePubKey, error) {
	jwk := jose.JSONWebKey{Key: &key.PublicKey, Algorithm: string(jose.ECDH_ES_A256KW)}
	raw, err := jwk.MarshalJSON()
	if err != nil {
		return TeePubKey{}, fmt.Errorf("encoding tee-pubkey: %w", err)
	}
	var out TeePubKey
	if err := json.Unmarshal(raw, &out); err != nil {
		return TeePubKey{}, fmt.Errorf("decoding tee-pubkey: %w", err)
	}
	return out, nil
}

// PublicKey parses a TEE public key and its key-wrapping algorithm,
// rejecting keys too weak to carry secrets.
func (k TeePubKey) PublicKey() (any, jose.KeyAlgorithm, error) {
	alg, ok := keyAlgorithms[k.Alg]
	if !ok {
		return nil, "", fmt.Errorf("tee-pubkey alg %q: want ECDH-ES+A256KW, RSA-OAEP or RSA-OAEP-256", k.Alg)
	}
	raw, err := json.Marshal(k)
	if err != nil {
		return nil, "", fmt.Errorf("encoding tee-pubkey: %w", err)
	}
	var jwk jose.JSONWebKey
	if err := jwk.UnmarshalJSON(raw); err != nil {
		return nil, "", fmt.Errorf("parsing tee-pubkey: %w", err)
	}
	switch pub := jwk.Key.(type) {
	case *ecdsa.PublicKey:
		if pub.Curve != elliptic.P256() && pub.Curve != elliptic.P384() && pub.Curve != elliptic.P521() {
			return nil, "", fmt.Errorf("tee-pubkey crv %q: unsupported curve", k.Crv)
		}
		if alg != jose.ECDH_ES_A256KW {
			return nil, "", fmt.Errorf("tee-pubkey: kty EC with alg %q, want ECDH-ES+A256KW", k.Alg)
		}
		return pub, alg, nil
	case *rsa.PublicKey:
		if pub.N.BitLen() < 2048 {
			return nil, "", fmt.Errorf("tee-pubkey: RSA key of %d bits, want at least 2048", pub.N.BitLen())
		}
		if alg == jose.ECDH_ES_A256KW {
			return nil, "", fmt.Errorf("tee-pubkey: kty RSA with alg %q, want RSA-OAEP or RSA-OAEP-256", k.Alg)
		}
		return pub, alg, nil
	default:
		return nil, "", fmt.Errorf("tee-pubkey kty %q: want EC or RSA public key", k.Kty)
	}
}
