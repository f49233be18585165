// Package cocotest opens key broker responses the way a Confidential
// Containers guest does, for tests that show veil-kbs's resources survive
// guest-components' client. It reimplements their behaviour from reading
// it (guest-components attestation-agent/kbs_protocol keypair.rs
// decrypt_response and kbs_types ProtectedHeader::generate_aad); no code
// is taken from there.
package cocotest

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	josecipher "github.com/go-jose/go-jose/v4/cipher"
)

var b64url = base64.RawURLEncoding

// response is kbs_types' Response (flattened JWE JSON serialization).
type response struct {
	Protected    string `json:"protected"`
	EncryptedKey string `json:"encrypted_key"`
	IV           string `json:"iv"`
	Ciphertext   string `json:"ciphertext"`
	Tag          string `json:"tag"`
}

// AAD is the additional data a CoCo guest uses: the received header is
// decoded into {alg, enc, other members} and serialised again as serde_json
// writes that struct — alg, enc, then the other members in sorted order,
// nested objects (epk) sorted too, no whitespace, no HTML escaping — and
// base64url-encoded. The received bytes themselves are never used. It
// returns the header's members too.
func AAD(protected string) ([]byte, map[string]any, error) {
	raw, err := b64url.DecodeString(protected)
	if err != nil {
		return nil, nil, fmt.Errorf("protected header base64url: %w", err)
	}
	var members map[string]any
	if err := json.Unmarshal(raw, &members); err != nil {
		return nil, nil, fmt.Errorf("protected header json: %w", err)
	}
	if _, ok := members["alg"].(string); !ok {
		return nil, nil, errors.New("protected header: no alg")
	}
	if _, ok := members["enc"].(string); !ok {
		return nil, nil, errors.New("protected header: no enc")
	}
	enc := func(v any) string {
		var buf bytes.Buffer
		e := json.NewEncoder(&buf)
		e.SetEscapeHTML(false)
		_ = e.Encode(v) // values decoded from JSON always encode
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
	return []byte(b64url.EncodeToString([]byte(b.String()))), members, nil
}

// Decrypt opens a resource response (its JSON body) with the TEE private
// key (*ecdsa.PrivateKey for ECDH-ES+A256KW, *rsa.PrivateKey for
// RSA-OAEP-256): the content key unwrapped by the header's alg, then
// AES-256-GCM with AAD.
func Decrypt(priv any, body []byte) ([]byte, error) {
	var r response
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("decoding response: %w", err)
	}
	aad, h, err := AAD(r.Protected)
	if err != nil {
		return nil, err
	}
	wrapped, err := b64url.DecodeString(r.EncryptedKey)
	if err != nil {
		return nil, fmt.Errorf("encrypted_key: %w", err)
	}
	var cek []byte
	switch h["alg"] {
	case "ECDH-ES+A256KW":
		key, ok := priv.(*ecdsa.PrivateKey)
		if !ok {
			return nil, errors.New("unmatched key: must be an EC key")
		}
		epk, _ := h["epk"].(map[string]any)
		if epk == nil {
			return nil, errors.New("protected header without epk")
		}
		if epk["crv"] != key.Curve.Params().Name {
			return nil, fmt.Errorf("unmatched curve %v", epk["crv"])
		}
		xs, _ := epk["x"].(string)
		ys, _ := epk["y"].(string)
		x, errX := b64url.DecodeString(xs)
		y, errY := b64url.DecodeString(ys)
		if errX != nil || errY != nil {
			return nil, errors.New("epk x or y is not base64url")
		}
		size := (key.Curve.Params().BitSize + 7) / 8
		if len(x) > size || len(y) > size {
			return nil, errors.New("epk x or y longer than the curve's size")
		}
		point := make([]byte, 1+2*size)
		point[0] = 4
		copy(point[1+size-len(x):], x)
		copy(point[1+2*size-len(y):], y)
		pub, err := ecdsa.ParseUncompressedPublicKey(key.Curve, point)
		if err != nil {
			return nil, fmt.Errorf("epk: %w", err)
		}
		block, err := aes.NewCipher(josecipher.DeriveECDHES("ECDH-ES+A256KW", nil, nil, key, pub, 32))
		if err != nil {
			return nil, err
		}
		if cek, err = josecipher.KeyUnwrap(block, wrapped); err != nil {
			return nil, fmt.Errorf("unwrapping content key: %w", err)
		}
	case "RSA-OAEP-256":
		key, ok := priv.(*rsa.PrivateKey)
		if !ok {
			return nil, errors.New("unmatched key: must be an RSA key")
		}
		if cek, err = rsa.DecryptOAEP(sha256.New(), nil, key, wrapped, nil); err != nil {
			return nil, fmt.Errorf("unwrapping content key: %w", err)
		}
	default:
		return nil, fmt.Errorf("unsupported algorithm: %v", h["alg"])
	}
	iv, err1 := b64url.DecodeString(r.IV)
	ct, err2 := b64url.DecodeString(r.Ciphertext)
	tag, err3 := b64url.DecodeString(r.Tag)
	if err := errors.Join(err1, err2, err3); err != nil {
		return nil, fmt.Errorf("iv, ciphertext or tag: %w", err)
	}
	block, err := aes.NewCipher(cek)
	if err != nil {
		return nil, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	plain, err := gcm.Open(nil, iv, append(ct, tag...), aad)
	if err != nil {
		return nil, fmt.Errorf("aes-256-gcm with the re-serialised header as aad: %w", err)
	}
	return plain, nil
}
