package policy

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// Cosign's storage of key-based signatures: an OCI manifest under the tag
// SignatureTag(digest) in the image's repository, one layer per
// signature, the layer blob the simple-signing payload and the base64
// signature in the layer annotation AnnotationSignature.
const (
	AnnotationSignature = "dev.cosignproject.cosign/signature"
	MediaTypePayload    = "application/vnd.dev.cosign.simplesigning.v1+json"
	payloadType         = "cosign container image signature"
)

// SignatureTag is the tag cosign stores digest's signatures under
// ("sha256:abc" → "sha256-abc.sig").
func SignatureTag(digest string) string {
	return strings.Replace(digest, ":", "-", 1) + ".sig"
}

// Signature is one cosign signature: the payload and the raw signature
// over it.
type Signature struct {
	Payload   []byte
	Signature []byte
}

// Payload is the simple-signing document cosign signs.
type Payload struct {
	Critical struct {
		Identity struct {
			DockerReference string `json:"docker-reference"`
		} `json:"identity"`
		Image struct {
			DockerManifestDigest string `json:"docker-manifest-digest"`
		} `json:"image"`
		Type string `json:"type"`
	} `json:"critical"`
	Optional map[string]any `json:"optional"`
}

// checkSigstore passes when one signature verifies with one of r's keys
// and its payload names img's digest and an identity r accepts.
func checkSigstore(ctx context.Context, r Requirement, img Image, sigs []Signature, keys KeyFetcher) error {
	pubs, err := loadKeys(ctx, r, keys)
	if err != nil {
		return err
	}
	if len(sigs) == 0 {
		return fmt.Errorf("no sigstore signature found for %s (tag %s)", img.Digest, SignatureTag(img.Digest))
	}
	var reasons []string
	for i, s := range sigs {
		err := verifyOne(r, img, s, pubs)
		if err == nil {
			return nil
		}
		reasons = append(reasons, fmt.Sprintf("signature %d: %v", i, err))
	}
	return fmt.Errorf("no valid signature: %s", strings.Join(reasons, "; "))
}

func verifyOne(r Requirement, img Image, s Signature, pubs []crypto.PublicKey) error {
	ok := false
	for _, pub := range pubs {
		if VerifySignature(pub, s.Payload, s.Signature) == nil {
			ok = true
			break
		}
	}
	if !ok {
		return errors.New("not signed by the policy's key")
	}
	var p Payload
	dec := json.NewDecoder(bytes.NewReader(s.Payload))
	if err := dec.Decode(&p); err != nil {
		return fmt.Errorf("parsing signed payload: %w", err)
	}
	if p.Critical.Type != payloadType {
		return fmt.Errorf("signed payload type is %q, want %q", p.Critical.Type, payloadType)
	}
	if p.Critical.Image.DockerManifestDigest != img.Digest {
		return fmt.Errorf("signature is for manifest %s, the image is %s", p.Critical.Image.DockerManifestDigest, img.Digest)
	}
	return MatchIdentity(r.SignedIdentity, img.Ref, p.Critical.Identity.DockerReference)
}

// MatchIdentity checks a signature's docker-reference against the
// requested reference with containers-policy.json's signedIdentity rules
// (nil means matchRepoDigestOrExact).
func MatchIdentity(id *Identity, ref name.Reference, signed string) error {
	typ := MatchRepoDigestOrExact
	if id != nil {
		typ = id.Type
	}
	sref, err := name.ParseReference(signed, name.StrictValidation)
	sTagged := err == nil
	if err != nil {
		// A bare repository (what cosign writes) has no tag or digest.
		r, rerr := name.NewRepository(signed)
		if rerr != nil {
			return fmt.Errorf("signed identity %q is not a reference: %v", signed, rerr)
		}
		sref = r.Tag("")
	}
	sRepo := repository(sref)
	same := func() error {
		if !sTagged || canonical(sref) != canonical(ref) {
			return fmt.Errorf("signed identity %q is not %s", signed, canonical(ref))
		}
		return nil
	}
	sameRepo := func(want string) error {
		if sRepo != want {
			return fmt.Errorf("signed identity %q is not in repository %s", signed, want)
		}
		return nil
	}
	switch typ {
	case MatchRepoDigestOrExact:
		if _, ok := ref.(name.Digest); ok {
			return sameRepo(repository(ref))
		}
		return same()
	case MatchRepository:
		return sameRepo(repository(ref))
	case MatchExact:
		return same()
	case ExactReference:
		want, err := name.ParseReference(id.DockerReference, name.StrictValidation)
		if err != nil {
			return fmt.Errorf("policy dockerReference %q: %v", id.DockerReference, err)
		}
		if !sTagged || canonical(sref) != canonical(want) {
			return fmt.Errorf("signed identity %q is not %s", signed, id.DockerReference)
		}
		return nil
	case ExactRepository:
		want, err := name.NewRepository(id.DockerRepository)
		if err != nil {
			return fmt.Errorf("policy dockerRepository %q: %v", id.DockerRepository, err)
		}
		return sameRepo(repository(want.Tag("")))
	}
	return fmt.Errorf("signedIdentity type %q is not supported", typ)
}

func loadKeys(ctx context.Context, r Requirement, keys KeyFetcher) ([]crypto.PublicKey, error) {
	var raw [][]byte
	var names []string
	if len(r.KeyData) > 0 {
		raw, names = [][]byte{r.KeyData}, []string{"keyData"}
	} else {
		paths := r.KeyPaths
		if r.KeyPath != "" {
			paths = []string{r.KeyPath}
		}
		if keys == nil {
			return nil, fmt.Errorf("no key fetcher to read %s", strings.Join(paths, ", "))
		}
		for _, p := range paths {
			b, err := keys.Key(ctx, p)
			if err != nil {
				return nil, fmt.Errorf("fetching key %s: %w", p, err)
			}
			raw, names = append(raw, b), append(names, p)
		}
	}
	var pubs []crypto.PublicKey
	for i, b := range raw {
		pub, err := ParsePublicKey(b)
		if err != nil {
			return nil, fmt.Errorf("key %s: %w", names[i], err)
		}
		pubs = append(pubs, pub)
	}
	return pubs, nil
}

// ParsePublicKey reads a PEM "PUBLIC KEY" (PKIX: ECDSA, Ed25519 or RSA),
// cosign's public key format.
func ParsePublicKey(b []byte) (crypto.PublicKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("not a PEM public key")
	}
	pub, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parsing public key: %w", err)
	}
	switch pub.(type) {
	case *ecdsa.PublicKey, ed25519.PublicKey, *rsa.PublicKey:
		return pub, nil
	}
	return nil, fmt.Errorf("public key type %T is not supported", pub)
}

// VerifySignature checks sig over payload the way cosign signs: ECDSA
// (ASN.1) and RSA PKCS#1 v1.5 over SHA-256, Ed25519 over the payload.
func VerifySignature(pub crypto.PublicKey, payload, sig []byte) error {
	h := sha256.Sum256(payload)
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(k, h[:], sig) {
			return errors.New("ECDSA signature does not verify")
		}
		return nil
	case ed25519.PublicKey:
		if !ed25519.Verify(k, payload, sig) {
			return errors.New("Ed25519 signature does not verify")
		}
		return nil
	case *rsa.PublicKey:
		return rsa.VerifyPKCS1v15(k, crypto.SHA256, h[:], sig)
	}
	return fmt.Errorf("public key type %T is not supported", pub)
}
