package kbs

import (
	"crypto/ecdsa"
	"encoding/json"
	"fmt"

	"github.com/go-jose/go-jose/v4"
)

// Seal encrypts plaintext to the TEE key (A256GCM content encryption) and
// returns it in the protocol's Response form.
func Seal(to TeePubKey, plaintext []byte) (Response, error) {
	pub, alg, err := to.PublicKey()
	if err != nil {
		return Response{}, err
	}
	enc, err := jose.NewEncrypter(jose.A256GCM, jose.Recipient{Algorithm: alg, Key: pub}, nil)
	if err != nil {
		return Response{}, fmt.Errorf("creating jwe encrypter: %w", err)
	}
	obj, err := enc.Encrypt(plaintext)
	if err != nil {
		return Response{}, fmt.Errorf("encrypting resource: %w", err)
	}
	var out Response
	if err := json.Unmarshal([]byte(obj.FullSerialize()), &out); err != nil {
		return Response{}, fmt.Errorf("decoding jwe serialization: %w", err)
	}
	return out, nil
}

// Open decrypts a Response with the TEE private key.
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
