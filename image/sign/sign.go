// Package sign makes cosign key-based signatures of images in a registry,
// in cosign's two layouts, both of which image/policy's sigstoreSigned
// requirement verifies in the guest:
//
//   - SignBundle (bundle.go), cosign v3's default: an in-toto statement
//     (subject the image digest, predicate
//     https://sigstore.dev/cosign/sign/v1) signed into a Sigstore bundle
//     (v0.3, DSSE) by sigstore-go's signer, with a public-key hint and no
//     Rekor entry or timestamp, stored as an OCI referrer of the image
//     (artifactType application/vnd.dev.sigstore.bundle.v0.3+json), the
//     referrers tag schema index updated where the registry has no
//     referrers API;
//   - Sign, the legacy layout: the simple-signing payload
//     (application/vnd.dev.cosign.simplesigning.v1+json) naming the image's
//     digest, one layer of an OCI manifest tagged sha256-<digest>.sig in
//     the image's repository, the base64 signature in the layer annotation
//     dev.cosignproject.cosign/signature. A new signature is added to the
//     ones already under the tag.
//
// Keys are plain PEM: Keygen writes an ECDSA P-256 private key (PKCS#8
// "PRIVATE KEY") and its public key (PKIX "PUBLIC KEY", the format
// containers-policy.json's keyData/keyPath take, as does cosign). cosign's
// own encrypted key files ("ENCRYPTED SIGSTORE PRIVATE KEY") are not read
// (`cosign import-key-pair` is cosign's way to take a PEM key). The tests
// verify with image/policy through the guest's puller and, for bundles,
// with sigstore-go's verifier; cosign v3.1.3 itself was checked once by
// hand to verify SignBundle's bundles (`cosign verify --key ...
// --insecure-ignore-tlog`), and a bundle it made is image/policy's
// fixture. It is host-side
// tooling for `veil image sign|keygen`, never linked into the guest.
package sign

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/veil-runtime/veil/image/policy"
)

// Keygen makes an ECDSA P-256 signing key pair as PEM.
func Keygen() (privPEM, pubPEM []byte, err error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, nil, err
	}
	pub, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), nil
}

// ParsePrivateKey reads a PEM private key: PKCS#8 ("PRIVATE KEY"), SEC 1
// ("EC PRIVATE KEY") or PKCS#1 ("RSA PRIVATE KEY"); ECDSA, RSA or Ed25519.
func ParsePrivateKey(b []byte) (crypto.Signer, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("not a PEM private key")
	}
	var key any
	var err error
	switch blk.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(blk.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
	case "ENCRYPTED SIGSTORE PRIVATE KEY", "ENCRYPTED COSIGN PRIVATE KEY":
		return nil, fmt.Errorf("%s is cosign's encrypted key format; use a PEM key from `veil image keygen` (or sign with cosign's own CLI)", blk.Type)
	default:
		return nil, fmt.Errorf("PEM block %q is not a private key", blk.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parsing private key: %w", err)
	}
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		return k, nil
	case *rsa.PrivateKey:
		return k, nil
	case ed25519.PrivateKey:
		return k, nil
	}
	return nil, fmt.Errorf("private key type %T is not supported", key)
}

// SignPayload signs payload as cosign does and image/policy checks: ECDSA (ASN.1) and RSA PKCS#1 v1.5 over SHA-256, Ed25519 over the
// payload itself.
func SignPayload(key crypto.Signer, payload []byte) ([]byte, error) {
	if k, ok := key.(ed25519.PrivateKey); ok {
		return ed25519.Sign(k, payload), nil
	}
	h := sha256.Sum256(payload)
	return key.Sign(rand.Reader, h[:], crypto.SHA256)
}

// Payload is the simple-signing document for the image at digest, asked
// for as ref: a tagged ref's identity is the reference itself (so the
// default signedIdentity, matchRepoDigestOrExact, accepts pulls by that
// tag), a digest ref's identity is its repository (what cosign writes).
func Payload(ref name.Reference, digest v1.Hash) ([]byte, error) {
	var p policy.Payload
	p.Critical.Identity.DockerReference = ref.Context().Name()
	if t, ok := ref.(name.Tag); ok {
		p.Critical.Identity.DockerReference = t.Name()
	}
	p.Critical.Image.DockerManifestDigest = digest.String()
	p.Critical.Type = "cosign container image signature"
	return json.Marshal(p)
}

// Result is what Sign stored.
type Result struct {
	// Digest is what the reference resolved to, the signed digest.
	Digest v1.Hash
	// Tag holds the signatures.
	Tag name.Tag
	// Payload is the signed simple-signing document.
	Payload []byte
}

// Sign resolves ref, signs its digest with key and pushes the signature
// under the digest's .sig tag, next to signatures already there. opts
// are the registry options (transport, auth, context).
func Sign(ref name.Reference, key crypto.Signer, opts ...remote.Option) (*Result, error) {
	desc, err := remote.Get(ref, opts...)
	if err != nil {
		return nil, fmt.Errorf("resolving %s: %w", ref, err)
	}
	payload, err := Payload(ref, desc.Digest)
	if err != nil {
		return nil, err
	}
	sig, err := SignPayload(key, payload)
	if err != nil {
		return nil, fmt.Errorf("signing: %w", err)
	}
	tag := ref.Context().Tag(policy.SignatureTag(desc.Digest.String()))
	base, err := remote.Image(tag, opts...)
	if err != nil {
		var terr *transport.Error
		if !errors.As(err, &terr) || terr.StatusCode != http.StatusNotFound {
			return nil, fmt.Errorf("reading existing signatures %s: %w", tag, err)
		}
		base = mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	}
	img, err := mutate.Append(base, mutate.Addendum{
		Layer:       static.NewLayer(payload, policy.MediaTypePayload),
		Annotations: map[string]string{policy.AnnotationSignature: base64.StdEncoding.EncodeToString(sig)},
	})
	if err != nil {
		return nil, err
	}
	if err := remote.Write(tag, img, opts...); err != nil {
		return nil, fmt.Errorf("pushing signature %s: %w", tag, err)
	}
	return &Result{Digest: desc.Digest, Tag: tag, Payload: payload}, nil
}
