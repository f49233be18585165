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
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	"github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/verify"
	"github.com/sigstore/sigstore/pkg/signature"
)

// Cosign's legacy storage of key-based signatures: an OCI manifest under
// the tag SignatureTag(digest) in the image's repository, one layer per
// signature, the layer blob the simple-signing payload and the base64
// signature in the layer annotation AnnotationSignature.
const (
	AnnotationSignature = "dev.cosignproject.cosign/signature"
	MediaTypePayload    = "application/vnd.dev.cosign.simplesigning.v1+json"
	payloadType         = "cosign container image signature"
)

// Cosign v3's storage: a Sigstore bundle (MediaTypeBundle) as the one
// layer of an OCI manifest whose subject is the image, found through the
// OCI 1.1 referrers API or its tag schema fallback ("sha256-<hex>"). The
// bundle holds a DSSE envelope with an in-toto statement whose subject is
// the image digest and whose predicate type is PredicateCosignSign, or a
// plain message signature over the digest.
const (
	MediaTypeBundle       = "application/vnd.dev.sigstore.bundle.v0.3+json"
	MediaTypeBundlePrefix = "application/vnd.dev.sigstore.bundle"
	PredicateCosignSign   = "https://sigstore.dev/cosign/sign/v1"
	// AnnotationPredicateType names a bundle's predicate type on its
	// referrer descriptor, so other attestations can be skipped unread.
	AnnotationPredicateType = "dev.sigstore.bundle.predicateType"
)

// SignatureTag is the tag cosign stores digest's legacy signatures under
// ("sha256:abc" → "sha256-abc.sig").
func SignatureTag(digest string) string {
	return strings.Replace(digest, ":", "-", 1) + ".sig"
}

// Signature is one legacy cosign signature: the payload and the raw
// signature over it.
type Signature struct {
	Payload   []byte
	Signature []byte
}

// Bundle is one Sigstore bundle attached to the image.
type Bundle struct {
	// Source names where it came from (the referrer manifest's digest),
	// for refusals.
	Source string
	// JSON is the bundle document.
	JSON []byte
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

// checkSigstore passes when one legacy signature or one bundle verifies
// with one of r's keys and covers img's digest (and, where it names one,
// an identity r accepts).
func checkSigstore(ctx context.Context, r Requirement, img Image, f fetched, keys KeyFetcher) error {
	pubs, err := loadKeys(ctx, r, keys)
	if err != nil {
		return err
	}
	var reasons []string
	for i, s := range f.sigs {
		err := verifyLegacy(r, img, s, pubs)
		if err == nil {
			return nil
		}
		reasons = append(reasons, fmt.Sprintf("signature %d (tag %s): %v", i, SignatureTag(img.Digest), err))
	}
	for _, b := range f.bundles {
		err := verifyBundle(r, img, b, pubs)
		if err == nil {
			return nil
		}
		reasons = append(reasons, fmt.Sprintf("bundle %s: %v", b.Source, err))
	}
	if f.sigsErr != nil {
		reasons = append(reasons, fmt.Sprintf("fetching signatures (tag %s): %v", SignatureTag(img.Digest), f.sigsErr))
	}
	if f.bundlesErr != nil {
		reasons = append(reasons, fmt.Sprintf("fetching Sigstore bundles (OCI referrers): %v", f.bundlesErr))
	}
	if len(reasons) == 0 {
		return fmt.Errorf("no sigstore signature found for %s (no Sigstore bundle among its OCI referrers, no tag %s)", img.Digest, SignatureTag(img.Digest))
	}
	return fmt.Errorf("no valid signature: %s", strings.Join(reasons, "; "))
}

// policyKey is a public key from the policy with the sigstore-go
// verifiers for it.
type policyKey struct {
	pub crypto.PublicKey
	// legacy verifies cosign's simple-signing signatures (SHA-256 for
	// every key type, as cosign signs them); current verifies bundles
	// with the key type's default hash (P-384 → SHA-384).
	legacy, current *verify.Verifier
}

// keyMaterial is sigstore-go trusted material holding one public key and
// nothing else: no Fulcio CA, no Rekor or CT log, no timestamp authority.
// The bundle's key hint is not trusted to pick the key.
type keyMaterial struct {
	root.BaseTrustedMaterial
	key *root.ExpiringKey
}

func (k *keyMaterial) PublicKeyVerifier(string) (root.TimeConstrainedVerifier, error) {
	return k.key, nil
}

func newPolicyKey(pub crypto.PublicKey) (policyKey, error) {
	mk := func(v signature.Verifier) (*verify.Verifier, error) {
		// A key has no validity window, and no timestamp is required:
		// offline, key-based verification (see Requirement).
		tm := &keyMaterial{key: root.NewExpiringKey(v, time.Time{}, time.Time{})}
		return verify.NewVerifier(tm, verify.WithNoObserverTimestamps())
	}
	sha, err := signature.LoadVerifier(pub, crypto.SHA256)
	if err != nil {
		return policyKey{}, fmt.Errorf("loading public key: %w", err)
	}
	def, err := signature.LoadDefaultVerifier(pub)
	if err != nil {
		return policyKey{}, fmt.Errorf("loading public key: %w", err)
	}
	k := policyKey{pub: pub}
	if k.legacy, err = mk(sha); err != nil {
		return policyKey{}, err
	}
	if k.current, err = mk(def); err != nil {
		return policyKey{}, err
	}
	return k, nil
}

// verifyLegacy checks a simple-signing signature: it is put in a Sigstore
// bundle as a message signature over the payload and verified by
// sigstore-go, then the payload must name img's digest and an identity r
// accepts.
func verifyLegacy(r Requirement, img Image, s Signature, keys []policyKey) error {
	sum := sha256.Sum256(s.Payload)
	pb := &protobundle.Bundle{
		MediaType: MediaTypeBundle,
		VerificationMaterial: &protobundle.VerificationMaterial{
			Content: &protobundle.VerificationMaterial_PublicKey{PublicKey: &protocommon.PublicKeyIdentifier{}},
		},
		Content: &protobundle.Bundle_MessageSignature{MessageSignature: &protocommon.MessageSignature{
			MessageDigest: &protocommon.HashOutput{Algorithm: protocommon.HashAlgorithm_SHA2_256, Digest: sum[:]},
			Signature:     s.Signature,
		}},
	}
	b, err := bundle.NewBundle(pb)
	if err != nil {
		return fmt.Errorf("reading signature: %w", err)
	}
	ok := false
	for _, k := range keys {
		pol := verify.NewPolicy(verify.WithArtifact(bytes.NewReader(s.Payload)), verify.WithKey())
		if _, err := k.legacy.Verify(b, pol); err == nil {
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

// verifyBundle checks a cosign v3 bundle with sigstore-go: signed by one
// of the keys (a bundle carrying a Fulcio certificate is keyless and
// refused), over img's digest (the DSSE statement's subject or the
// message digest), and a DSSE statement must be cosign's signature
// predicate, not some other attestation. Transparency-log entries and
// timestamps in the bundle are not required and not checked (see
// Requirement). Cosign's statement names no image reference, so a
// requirement with an explicit signedIdentity cannot be met by it.
func verifyBundle(r Requirement, img Image, raw Bundle, keys []policyKey) error {
	var b bundle.Bundle
	if err := b.UnmarshalJSON(raw.JSON); err != nil {
		return fmt.Errorf("parsing bundle: %w", err)
	}
	vc, err := b.VerificationContent()
	if err != nil {
		return fmt.Errorf("reading bundle: %w", err)
	}
	if vc.Certificate() != nil {
		return errors.New("signed keyless (a Fulcio certificate, no public key); the policy names a public key, and keyless verification (fulcio, rekorPublicKey) is not supported in the guest")
	}
	algo, hexDigest, ok := strings.Cut(img.Digest, ":")
	want, err := hex.DecodeString(hexDigest)
	if !ok || algo != "sha256" || err != nil {
		return fmt.Errorf("image digest %q is not sha256:<hex>", img.Digest)
	}
	var res *verify.VerificationResult
	var errs []string
	for _, k := range keys {
		pol := verify.NewPolicy(verify.WithArtifactDigest("sha256", want), verify.WithKey())
		if res, err = k.current.Verify(&b, pol); err == nil {
			break
		}
		errs = append(errs, err.Error())
	}
	if res == nil {
		return fmt.Errorf("not a signature of %s by the policy's key: %s", img.Digest, strings.Join(errs, "; "))
	}
	if st := res.Statement; st != nil {
		if st.GetPredicateType() != PredicateCosignSign {
			return fmt.Errorf("in-toto predicate type is %q, want cosign's signature %q", st.GetPredicateType(), PredicateCosignSign)
		}
		for _, s := range st.GetSubject() {
			if s.GetDigest()["sha256"] == hexDigest && s.GetName() != "" {
				return MatchIdentity(r.SignedIdentity, img.Ref, s.GetName())
			}
		}
	}
	if r.SignedIdentity != nil {
		return fmt.Errorf("the bundle names no image reference, only the digest, so signedIdentity %s cannot be checked; drop signedIdentity from this scope or sign with the legacy format", r.SignedIdentity.Type)
	}
	return nil
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

func loadKeys(ctx context.Context, r Requirement, keys KeyFetcher) ([]policyKey, error) {
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
	var out []policyKey
	for i, b := range raw {
		pub, err := ParsePublicKey(b)
		if err != nil {
			return nil, fmt.Errorf("key %s: %w", names[i], err)
		}
		k, err := newPolicyKey(pub)
		if err != nil {
			return nil, fmt.Errorf("key %s: %w", names[i], err)
		}
		out = append(out, k)
	}
	return out, nil
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
