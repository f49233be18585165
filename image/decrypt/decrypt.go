// Package decrypt opens ocicrypt-encrypted image layers (media types ending
// in "+encrypted", the layer key wrapped in a JWE in the annotation
// org.opencontainers.image.enc.keys.jwe, the layer encrypted with
// AES-256-CTR and authenticated with HMAC-SHA256) with
// github.com/containers/ocicrypt, given the private keys that may unwrap
// the layer key. It owns the mapping between ggcr descriptors and
// ocicrypt's, and the errors that tell a wrong key from tampered data.
package decrypt

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"

	"github.com/containers/ocicrypt/blockcipher"
	"github.com/containers/ocicrypt/config"
	"github.com/containers/ocicrypt/keywrap/jwe"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	digest "github.com/opencontainers/go-digest"
)

// EncryptedSuffix ends the media type of an encrypted layer.
const EncryptedSuffix = "+encrypted"

// AnnotationJWE holds the JWE-wrapped layer keys.
const AnnotationJWE = "org.opencontainers.image.enc.keys.jwe"

// Errors a caller can tell apart.
var (
	// ErrNoKey: the layer is encrypted and no private key was given.
	ErrNoKey = errors.New("layer is encrypted and no decryption key is configured")
	// ErrWrongKey: none of the keys unwraps the layer key.
	ErrWrongKey = errors.New("no configured decryption key unwraps the layer key")
	// ErrTampered: the ciphertext fails authentication or the plaintext
	// is not the digest the wrapped key recorded.
	ErrTampered = errors.New("encrypted layer failed authentication (tampered or truncated ciphertext)")
)

// IsEncrypted tells whether mediaType is an encrypted layer's.
func IsEncrypted(mediaType string) bool { return strings.HasSuffix(mediaType, EncryptedSuffix) }

// Layer returns the plaintext (still compressed) layer read from
// ciphertext. The reader returns ErrTampered at its end when the HMAC or
// the digest of the plaintext recorded in the wrapped key does not match,
// so a caller must read it to EOF and discard what it wrote from it on
// error. keys are PEM or DER private keys (or JWKs).
func Layer(ciphertext io.Reader, desc v1.Descriptor, keys [][]byte) (io.Reader, error) {
	if len(keys) == 0 {
		return nil, ErrNoKey
	}
	if desc.Annotations[AnnotationJWE] == "" {
		return nil, fmt.Errorf("layer %s is encrypted but has no %s annotation (only JWE key wrapping is supported)", desc.Digest, AnnotationJWE)
	}
	dc := &config.DecryptConfig{Parameters: map[string][][]byte{
		"privkeys":           keys,
		"privkeys-passwords": make([][]byte, len(keys)),
	}}
	plain, want, err := open(dc, ciphertext, desc)
	if err != nil {
		return nil, err
	}
	r := &reader{r: plain, layer: desc.Digest.String(), h: sha256.New()}
	if want != "" {
		if want.Algorithm() != digest.SHA256 || want.Validate() != nil {
			return nil, fmt.Errorf("%w: layer %s: wrapped key records digest %q", ErrTampered, desc.Digest, want)
		}
		r.want = want.Encoded()
	}
	return r, nil
}

// reader maps ocicrypt's end-of-stream errors to ErrTampered and checks
// the plaintext digest at EOF.
type reader struct {
	r     io.Reader
	layer string
	h     hash.Hash
	want  string
	err   error
}

func (r *reader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	n, err := r.r.Read(p)
	r.h.Write(p[:n])
	switch {
	case errors.Is(err, io.EOF):
		if got := hex.EncodeToString(r.h.Sum(nil)); r.want != "" && got != r.want {
			r.err = fmt.Errorf("%w: layer %s: plaintext is sha256:%s, the wrapped key says sha256:%s", ErrTampered, r.layer, got, r.want)
			return n, r.err
		}
		r.err = io.EOF
	case err != nil && strings.Contains(err.Error(), "could not properly decrypt"):
		// ocicrypt's HMAC verdict, given at the end of the ciphertext.
		r.err = fmt.Errorf("%w: layer %s: HMAC mismatch", ErrTampered, r.layer)
	case err != nil:
		r.err = fmt.Errorf("reading encrypted layer %s: %w", r.layer, err)
	}
	return n, r.err
}

func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

// AnnotationPubOpts holds the public block cipher options.
const AnnotationPubOpts = "org.opencontainers.image.enc.pubopts"

// open does what ocicrypt.DecryptLayer does for JWE-wrapped keys with
// ocicrypt's own key wrapper and block cipher, without linking the GPG,
// PKCS#7, PKCS#11 and gRPC key-provider wrappers into the agent: unwrap
// the layer key from one of the comma-separated JWEs, then decrypt.
func open(dc *config.DecryptConfig, ciphertext io.Reader, desc v1.Descriptor) (io.Reader, digest.Digest, error) {
	kw := jwe.NewKeyWrapper()
	var privOpts []byte
	var errs []string
	for _, b64 := range strings.Split(desc.Annotations[AnnotationJWE], ",") {
		wrapped, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			return nil, "", fmt.Errorf("layer %s: %s is not base64: %w", desc.Digest, AnnotationJWE, err)
		}
		opts, err := kw.UnwrapKey(dc, wrapped)
		if err == nil {
			privOpts = opts
			break
		}
		errs = append(errs, oneLine(err))
	}
	if privOpts == nil {
		return nil, "", fmt.Errorf("%w: layer %s: %s", ErrWrongKey, desc.Digest, strings.Join(errs, "; "))
	}
	var opts blockcipher.LayerBlockCipherOptions
	if err := json.Unmarshal(privOpts, &opts.Private); err != nil {
		return nil, "", fmt.Errorf("layer %s: parsing the unwrapped key options: %w", desc.Digest, err)
	}
	if s := desc.Annotations[AnnotationPubOpts]; s != "" {
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, "", fmt.Errorf("layer %s: %s is not base64: %w", desc.Digest, AnnotationPubOpts, err)
		}
		if err := json.Unmarshal(b, &opts.Public); err != nil {
			return nil, "", fmt.Errorf("layer %s: parsing %s: %w", desc.Digest, AnnotationPubOpts, err)
		}
	}
	h, err := blockcipher.NewLayerBlockCipherHandler()
	if err != nil {
		return nil, "", err
	}
	plain, opts, err := h.Decrypt(ciphertext, opts)
	if err != nil {
		return nil, "", fmt.Errorf("layer %s: %w", desc.Digest, err)
	}
	return plain, opts.Private.Digest, nil
}
