package policy

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/options"
	"google.golang.org/protobuf/encoding/protojson"
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

// policyKey is a public key from the policy with its verifiers
// (sigstore's signature package).
type policyKey struct {
	// sha256 verifies with SHA-256 whatever the key type, as cosign's
	// legacy signatures and message signatures over a sha256 digest are
	// made; current uses the key type's default hash (P-384 → SHA-384),
	// as cosign v3 signs bundles.
	sha256, current signature.Verifier
}

func newPolicyKey(pub crypto.PublicKey) (policyKey, error) {
	sha, err := signature.LoadVerifier(pub, crypto.SHA256)
	if err != nil {
		return policyKey{}, fmt.Errorf("loading public key: %w", err)
	}
	def, err := signature.LoadDefaultVerifier(pub)
	if err != nil {
		return policyKey{}, fmt.Errorf("loading public key: %w", err)
	}
	return policyKey{sha256: sha, current: def}, nil
}

// verifyLegacy checks a simple-signing signature: by one of the keys, and
// the payload names img's digest and an identity r accepts.
func verifyLegacy(r Requirement, img Image, s Signature, keys []policyKey) error {
	ok := false
	for _, k := range keys {
		if k.sha256.VerifySignature(bytes.NewReader(s.Signature), bytes.NewReader(s.Payload)) == nil {
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

// Bundle media types read: v0.3 (cosign v3) and the earlier spellings.
var bundleMediaTypes = map[string]bool{
	MediaTypeBundle: true,
	"application/vnd.dev.sigstore.bundle+json;version=0.1": true,
	"application/vnd.dev.sigstore.bundle+json;version=0.2": true,
	"application/vnd.dev.sigstore.bundle.v0.2+json":        true,
}

// In-toto statement types a DSSE bundle may carry.
const (
	payloadTypeInToto = "application/vnd.in-toto+json"
	statementV01      = "https://in-toto.io/Statement/v0.1"
	statementV1       = "https://in-toto.io/Statement/v1"
)

// statement is the part of an in-toto statement the policy reads.
type statement struct {
	Type    string `json:"_type"`
	Subject []struct {
		Name   string            `json:"name"`
		Digest map[string]string `json:"digest"`
	} `json:"subject"`
	PredicateType string `json:"predicateType"`
}

// verifyBundle checks a cosign v3 bundle: signed by one of the keys (a
// bundle carrying a certificate is keyless and refused), over img's
// digest (the DSSE in-toto statement's subject, or the message digest of
// a message signature), and a statement must be cosign's signature
// predicate, not another attestation. Transparency-log entries and
// timestamps in the bundle are neither required nor checked (offline,
// key-based; see the package doc). Cosign's statement names no image
// reference, so a requirement with an explicit signedIdentity is not met
// by it. The bundle is read with the Sigstore protobuf types and the
// signature checked with sigstore's signature package and the DSSE
// pre-authentication encoding of go-securesystemslib, the checks
// sigstore-go's verifier makes for a key-signed bundle without a log
// (the tests hold this verifier to sigstore-go's verdicts); sigstore-go
// itself stays out of the guest for its size (+16.6 MB in the agent, for
// TUF, Rekor and CT clients the guest does not use).
func verifyBundle(r Requirement, img Image, raw Bundle, keys []policyKey) error {
	var pb protobundle.Bundle
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(raw.JSON, &pb); err != nil {
		return fmt.Errorf("parsing bundle: %w", err)
	}
	if !bundleMediaTypes[pb.GetMediaType()] {
		return fmt.Errorf("bundle media type %q is not a Sigstore bundle this guest reads (want %s)", pb.GetMediaType(), MediaTypeBundle)
	}
	switch pb.GetVerificationMaterial().GetContent().(type) {
	case *protobundle.VerificationMaterial_PublicKey:
	case *protobundle.VerificationMaterial_Certificate, *protobundle.VerificationMaterial_X509CertificateChain:
		return errors.New("signed keyless (a Fulcio certificate, no public key); the policy names a public key, and keyless verification (fulcio, rekorPublicKey) is not supported in the guest")
	default:
		return errors.New("bundle has no verification material")
	}
	algo, hexDigest, ok := strings.Cut(img.Digest, ":")
	want, err := hex.DecodeString(hexDigest)
	if !ok || algo != "sha256" || err != nil || len(want) != 32 {
		return fmt.Errorf("image digest %q is not sha256:<hex>", img.Digest)
	}
	switch c := pb.GetContent().(type) {
	case *protobundle.Bundle_DsseEnvelope:
		env := c.DsseEnvelope
		if len(env.GetSignatures()) != 1 {
			return fmt.Errorf("DSSE envelope has %d signatures, a Sigstore bundle has exactly 1", len(env.GetSignatures()))
		}
		if env.GetPayloadType() != payloadTypeInToto {
			return fmt.Errorf("DSSE payload type is %q, want %q", env.GetPayloadType(), payloadTypeInToto)
		}
		pae := dsse.PAE(env.GetPayloadType(), env.GetPayload())
		if !verifiedBy(keys, func(k policyKey) error {
			return k.current.VerifySignature(bytes.NewReader(env.GetSignatures()[0].GetSig()), bytes.NewReader(pae))
		}) {
			return errors.New("DSSE signature does not verify with the policy's key")
		}
		var st statement
		if err := json.Unmarshal(env.GetPayload(), &st); err != nil {
			return fmt.Errorf("parsing the signed in-toto statement: %w", err)
		}
		if st.Type != statementV1 && st.Type != statementV01 {
			return fmt.Errorf("signed payload is not an in-toto statement (_type %q)", st.Type)
		}
		if st.PredicateType != PredicateCosignSign {
			return fmt.Errorf("in-toto predicate type is %q, want cosign's signature %q", st.PredicateType, PredicateCosignSign)
		}
		for _, s := range st.Subject {
			if !strings.EqualFold(s.Digest["sha256"], hexDigest) {
				continue
			}
			if s.Name != "" {
				return MatchIdentity(r.SignedIdentity, img.Ref, s.Name)
			}
			return noIdentity(r)
		}
		var seen []string
		for _, s := range st.Subject {
			seen = append(seen, "sha256:"+s.Digest["sha256"])
		}
		return fmt.Errorf("signed statement is for %s, the image is %s", strings.Join(seen, ", "), img.Digest)
	case *protobundle.Bundle_MessageSignature:
		ms := c.MessageSignature
		md := ms.GetMessageDigest()
		if md.GetAlgorithm() != protocommon.HashAlgorithm_SHA2_256 || !bytes.Equal(md.GetDigest(), want) {
			return fmt.Errorf("message signature is over %s:%x, the image is %s", md.GetAlgorithm(), md.GetDigest(), img.Digest)
		}
		if !verifiedBy(keys, func(k policyKey) error {
			return k.sha256.VerifySignature(bytes.NewReader(ms.GetSignature()), nil, options.WithDigest(want))
		}) {
			return errors.New("message signature does not verify with the policy's key")
		}
		return noIdentity(r)
	}
	return errors.New("bundle has neither a DSSE envelope nor a message signature")
}

func verifiedBy(keys []policyKey, verify func(policyKey) error) bool {
	for _, k := range keys {
		if verify(k) == nil {
			return true
		}
	}
	return false
}

// noIdentity is the verdict on a bundle that binds only the digest.
func noIdentity(r Requirement) error {
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
			return fmt.Errorf("signed identity %q is not a reference: %w", signed, rerr)
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
			return fmt.Errorf("policy dockerReference %q: %w", id.DockerReference, err)
		}
		if !sTagged || canonical(sref) != canonical(want) {
			return fmt.Errorf("signed identity %q is not %s", signed, id.DockerReference)
		}
		return nil
	case ExactRepository:
		want, err := name.NewRepository(id.DockerRepository)
		if err != nil {
			return fmt.Errorf("policy dockerRepository %q: %w", id.DockerRepository, err)
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
