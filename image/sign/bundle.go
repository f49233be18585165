package sign

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	"github.com/sigstore/sigstore-go/pkg/bundle"
	sgsign "github.com/sigstore/sigstore-go/pkg/sign"
	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/veil-runtime/veil/image/policy"
)

// mediaTypeEmpty is the OCI empty descriptor's media type, the config of
// an artifact manifest that has none.
const mediaTypeEmpty = "application/vnd.oci.empty.v1+json"

// Statement is the in-toto statement cosign v3's sign makes for an image:
// the image digest as the one subject, cosign's signature predicate type,
// an empty predicate.
func Statement(digest v1.Hash) ([]byte, error) {
	return json.Marshal(map[string]any{
		"_type":         "https://in-toto.io/Statement/v1",
		"subject":       []any{map[string]any{"digest": map[string]string{digest.Algorithm: digest.Hex}}},
		"predicateType": policy.PredicateCosignSign,
		"predicate":     map[string]any{},
	})
}

// NewBundle signs statement (see Statement) with key into a Sigstore
// bundle (v0.3 JSON) with sigstore-go: a DSSE envelope of payload type
// application/vnd.in-toto+json, the verification material a public-key
// hint. No Rekor entry and no timestamp are requested (offline signing,
// what the guest verifies).
func NewBundle(statement []byte, key crypto.Signer) ([]byte, error) {
	kp, err := newKeypair(key)
	if err != nil {
		return nil, err
	}
	pb, err := sgsign.Bundle(&sgsign.DSSEData{Data: statement, PayloadType: "application/vnd.in-toto+json"}, kp, sgsign.BundleOptions{})
	if err != nil {
		return nil, fmt.Errorf("signing bundle: %w", err)
	}
	b, err := bundle.NewBundle(pb)
	if err != nil {
		return nil, fmt.Errorf("signing bundle: %w", err)
	}
	return b.MarshalJSON()
}

// keypair is sigstore-go's signing Keypair over a PEM key the user holds.
type keypair struct {
	key  crypto.Signer
	alg  signature.AlgorithmDetails
	hint []byte
}

func newKeypair(key crypto.Signer) (*keypair, error) {
	alg, err := signature.GetDefaultAlgorithmDetails(key.Public())
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	der, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	sum := sha256.Sum256(der)
	return &keypair{key: key, alg: alg, hint: []byte(base64.StdEncoding.EncodeToString(sum[:]))}, nil
}

func (k *keypair) GetHashAlgorithm() protocommon.HashAlgorithm { return k.alg.GetProtoHashType() }
func (k *keypair) GetSigningAlgorithm() protocommon.PublicKeyDetails {
	return k.alg.GetSignatureAlgorithm()
}
func (k *keypair) GetHint() []byte                { return k.hint }
func (k *keypair) GetKeyAlgorithm() string        { return "" }
func (k *keypair) GetPublicKey() crypto.PublicKey { return k.key.Public() }
func (k *keypair) GetPublicKeyPem() (string, error) {
	der, err := x509.MarshalPKIXPublicKey(k.key.Public())
	if err != nil {
		return "", err
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})), nil
}

// SignData signs data's digest (the whole data for Ed25519) and returns
// the signature and what was signed.
func (k *keypair) SignData(_ context.Context, data []byte) ([]byte, []byte, error) {
	h := k.alg.GetHashType()
	msg := data
	if h != crypto.Hash(0) {
		d := h.New()
		d.Write(data)
		msg = d.Sum(nil)
	}
	sig, err := k.key.Sign(rand.Reader, msg, h)
	return sig, msg, err
}

// rawManifest is a manifest to push as it is.
type rawManifest struct {
	raw []byte
	mt  types.MediaType
}

func (r rawManifest) RawManifest() ([]byte, error)        { return r.raw, nil }
func (r rawManifest) MediaType() (types.MediaType, error) { return r.mt, nil }

// Attach stores bundleJSON as an OCI referrer of subject in subject's
// repository, laid out as cosign v3 does: an OCI image manifest of
// artifactType MediaTypeBundle, the empty config, the bundle as its one
// layer, subject as its subject. Registries without the referrers API get
// the referrers tag schema index (sha256-<hex>) updated. It returns the
// referrer manifest's digest.
func Attach(subject name.Digest, subjectDesc v1.Descriptor, bundleJSON []byte, opts ...remote.Option) (v1.Hash, error) {
	repo := subject.Context()
	bl := static.NewLayer(bundleJSON, policy.MediaTypeBundle)
	cl := static.NewLayer([]byte("{}"), mediaTypeEmpty)
	for _, l := range []v1.Layer{bl, cl} {
		if err := remote.WriteLayer(repo, l, opts...); err != nil {
			return v1.Hash{}, fmt.Errorf("pushing bundle blobs to %s: %w", repo, err)
		}
	}
	desc := func(l v1.Layer, mt types.MediaType) v1.Descriptor {
		d, _ := l.Digest() // static layers cannot fail
		s, _ := l.Size()
		return v1.Descriptor{MediaType: mt, Digest: d, Size: s}
	}
	bd := desc(bl, policy.MediaTypeBundle)
	bd.Annotations = map[string]string{"org.opencontainers.image.title": bd.Digest.Algorithm + "-" + bd.Digest.Hex + ".sigstore.json"}
	sub := v1.Descriptor{MediaType: subjectDesc.MediaType, Digest: subjectDesc.Digest, Size: subjectDesc.Size}
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		ArtifactType:  policy.MediaTypeBundle,
		Config:        desc(cl, mediaTypeEmpty),
		Layers:        []v1.Descriptor{bd},
		Subject:       &sub,
		Annotations: map[string]string{
			"dev.sigstore.bundle.content":      "dsse-envelope",
			policy.AnnotationPredicateType:     policy.PredicateCosignSign,
			"org.opencontainers.image.created": time.Now().UTC().Format(time.RFC3339),
		},
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return v1.Hash{}, err
	}
	h, _, err := v1.SHA256(bytes.NewReader(raw))
	if err != nil {
		return v1.Hash{}, err
	}
	if err := remote.Put(repo.Digest(h.String()), rawManifest{raw: raw, mt: types.OCIManifestSchema1}, opts...); err != nil {
		return v1.Hash{}, fmt.Errorf("pushing bundle referrer to %s: %w", repo, err)
	}
	return h, nil
}

// BundleResult is what SignBundle stored.
type BundleResult struct {
	// Digest is what the reference resolved to, the signed digest.
	Digest v1.Hash
	// Referrer is the digest of the referrer manifest holding the bundle.
	Referrer v1.Hash
	// Bundle is the Sigstore bundle (JSON).
	Bundle []byte
}

// SignBundle resolves ref and signs its digest the way cosign v3 does by
// default: a Sigstore bundle attached as an OCI referrer (see Statement,
// NewBundle, Attach). opts are the registry options.
func SignBundle(ref name.Reference, key crypto.Signer, opts ...remote.Option) (*BundleResult, error) {
	desc, err := remote.Get(ref, opts...)
	if err != nil {
		return nil, fmt.Errorf("resolving %s: %w", ref, err)
	}
	st, err := Statement(desc.Digest)
	if err != nil {
		return nil, err
	}
	b, err := NewBundle(st, key)
	if err != nil {
		return nil, err
	}
	h, err := Attach(ref.Context().Digest(desc.Digest.String()), desc.Descriptor, b, opts...)
	if err != nil {
		return nil, err
	}
	return &BundleResult{Digest: desc.Digest, Referrer: h, Bundle: b}, nil
}
