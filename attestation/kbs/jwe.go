package kbs

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1" //nolint:gosec // RSA-OAEP (RFC 7518 4.3) is defined over SHA-1; RSA-OAEP-256 uses SHA-256.
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"

	"github.com/go-jose/go-jose/v4"
	josecipher "github.com/go-jose/go-jose/v4/cipher"
)

// ContentEncryption is the JWE "enc" of every resource: AES-256-GCM.
const ContentEncryption = "A256GCM"

// ProtectedHeader is the JWE protected header of a sealed resource, in the
// one form both Trustee's guests and veil's read the same way.
//
// Confidential Containers' guests do not authenticate the header bytes they
// received: guest-components' kbs_protocol (keypair.rs, decrypt_response)
// decodes the header into kbs_types' ProtectedHeader {alg, enc, flattened
// map of the other members} and passes ProtectedHeader::generate_aad to
// AES-GCM, which serialises that struct again with serde_json (alg, enc,
// then the other members, and the members of nested objects such as "epk",
// in sorted order, no whitespace) and base64url-encodes it. Trustee's own
// broker builds its header the same way (kbs/src/jwe: epk members crv,
// kty, x, y). A header in any other member order (go-jose writes the epk
// JWK as kty, crv, x, y) is authenticated by the sender over bytes the
// guest never reconstructs, and decryption fails. The field order below is
// therefore the canonical one: sorted at every level, alg and enc first.
type ProtectedHeader struct {
	Alg string `json:"alg"`
	Enc string `json:"enc"`
	// EPK is the sender's ephemeral key (ECDH-ES only).
	EPK *EphemeralKey `json:"epk,omitempty"`
}

// EphemeralKey is the public EC key of an ECDH-ES header, members sorted.
type EphemeralKey struct {
	Crv string `json:"crv"`
	Kty string `json:"kty"`
	X   string `json:"x"`
	Y   string `json:"y"`
}

var b64url = base64.RawURLEncoding

// Seal encrypts plaintext to the TEE key and returns it in the protocol's
// Response form: a fresh 256-bit content key wrapped with the TEE key's
// algorithm (ECDH-ES+A256KW with an ephemeral key on the TEE key's curve and
// the Concat KDF of RFC 7518 4.6 with empty apu/apv, or RSA-OAEP /
// RSA-OAEP-256), A256GCM content encryption whose additional data is the
// canonical protected header (see ProtectedHeader).
func Seal(to TeePubKey, plaintext []byte) (Response, error) {
	pub, alg, err := to.PublicKey()
	if err != nil {
		return Response{}, err
	}
	cek := make([]byte, 32)
	if _, err := rand.Read(cek); err != nil {
		return Response{}, fmt.Errorf("generating content key: %w", err)
	}
	header := ProtectedHeader{Alg: string(alg), Enc: ContentEncryption}
	var wrapped []byte
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		eph, err := ecdsa.GenerateKey(k.Curve, rand.Reader)
		if err != nil {
			return Response{}, fmt.Errorf("generating ephemeral key: %w", err)
		}
		kek := josecipher.DeriveECDHES(string(alg), nil, nil, eph, k, 32)
		block, err := aes.NewCipher(kek)
		if err != nil {
			return Response{}, fmt.Errorf("creating key-wrapping cipher: %w", err)
		}
		if wrapped, err = josecipher.KeyWrap(block, cek); err != nil {
			return Response{}, fmt.Errorf("wrapping content key: %w", err)
		}
		point, err := eph.PublicKey.Bytes() // 0x04 || X || Y, each the curve's size
		if err != nil {
			return Response{}, fmt.Errorf("encoding ephemeral key: %w", err)
		}
		n := (len(point) - 1) / 2
		header.EPK = &EphemeralKey{Crv: k.Curve.Params().Name, Kty: "EC", X: b64url.EncodeToString(point[1 : 1+n]), Y: b64url.EncodeToString(point[1+n:])}
	case *rsa.PublicKey:
		h := sha256.New()
		if alg == jose.RSA_OAEP {
			h = sha1.New() //nolint:gosec // see import
		}
		if wrapped, err = rsa.EncryptOAEP(h, rand.Reader, k, cek, nil); err != nil {
			return Response{}, fmt.Errorf("wrapping content key: %w", err)
		}
	default:
		return Response{}, fmt.Errorf("tee-pubkey: unsupported key type %T", pub)
	}
	raw, err := json.Marshal(header)
	if err != nil {
		return Response{}, fmt.Errorf("encoding protected header: %w", err)
	}
	protected := b64url.EncodeToString(raw)
	block, err := aes.NewCipher(cek)
	if err != nil {
		return Response{}, fmt.Errorf("creating content cipher: %w", err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return Response{}, fmt.Errorf("creating content cipher: %w", err)
	}
	iv := make([]byte, gcm.NonceSize())
	if _, err := rand.Read(iv); err != nil {
		return Response{}, fmt.Errorf("generating iv: %w", err)
	}
	sealed := gcm.Seal(nil, iv, plaintext, []byte(protected))
	ct, tag := sealed[:len(sealed)-gcm.Overhead()], sealed[len(sealed)-gcm.Overhead():]
	return Response{
		Protected:    protected,
		EncryptedKey: b64url.EncodeToString(wrapped),
		IV:           b64url.EncodeToString(iv),
		Ciphertext:   b64url.EncodeToString(ct),
		Tag:          b64url.EncodeToString(tag),
	}, nil
}

// Open decrypts a Response with the TEE private key. It authenticates the
// protected header exactly as received (RFC 7516), so it reads responses
// from Trustee and from veil-kbs alike.
func Open(key *ecdsa.PrivateKey, r Response) ([]byte, error) {
	raw, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encoding jwe: %w", err)
	}
	obj, err := jose.ParseEncryptedJSON(string(raw),
		[]jose.KeyAlgorithm{jose.ECDH_ES_A256KW},
		[]jose.ContentEncryption{jose.A256GCM})
	if err != nil {
		return nil, fmt.Errorf("parsing jwe: %w", err)
	}
	plain, err := obj.Decrypt(key)
	if err != nil {
		return nil, fmt.Errorf("decrypting jwe: %w", err)
	}
	return plain, nil
}
