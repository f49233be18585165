// Package policy evaluates an image security policy with the semantics of
// containers-policy.json(5): a default requirement list and per-transport
// lists scoped by registry, namespace, repository or exact reference (the
// most specific scope that matches wins; within a list every requirement
// must hold). Supported requirements: insecureAcceptAnything, reject and
// sigstoreSigned with cosign public keys; signedBy (GPG) and Fulcio/Rekor
// options are refused with a clear "not supported" error.
//
// sigstoreSigned accepts both of cosign's formats, checked against the
// policy's public keys: cosign v3's Sigstore bundles attached to the image
// as OCI referrers (a DSSE envelope with an in-toto statement of predicate
// https://sigstore.dev/cosign/sign/v1 whose subject is the image digest,
// or a message signature over the digest), and the legacy simple-signing
// signatures under the "sha256-<hex>.sig" tag; one valid signature of
// either kind passes. Bundles are read with the Sigstore protobuf types
// (protobuf-specs), DSSE's pre-authentication encoding comes from
// go-securesystemslib and signatures are checked by sigstore/sigstore's
// signature package: the checks sigstore-go makes for a key-signed bundle
// without a log, which the tests hold to sigstore-go's own verdicts;
// sigstore-go itself would add 16.6 MB to the guest agent.
//
// Verification is offline and key-based. A bundle's transparency-log
// entries and timestamps are neither required nor checked, as
// containers-policy.json does for a sigstoreSigned requirement without
// rekorPublicKey (cosign v3 uploads to Rekor by default; the entry is
// ignored). Keyless signatures (a Fulcio certificate in the bundle) are
// refused by name, and the fulcio and rekorPublicKey* options at parse
// time: verifying keyless needs, per scope, the Fulcio CA certificates
// and the Rekor public key as trusted roots (the policy's fulcio.caData
// and rekorPublicKeyData, or a Sigstore trusted_root.json from the
// broker; never fetched over TUF by the guest), the identity to expect
// (fulcio.subjectEmail and fulcio.oidcIssuer), and a verified Rekor entry
// (its signed entry timestamp or inclusion proof) to date the signature
// within the short-lived certificate's validity, which is where
// sigstore-go's verifier (or its tlog and certificate checks) would come
// in. A cosign v3 statement names no image reference, only the digest,
// so a requirement with an explicit signedIdentity is met only by legacy
// signatures (or bundles whose statement subject has a name).
//
// RequireSigned is the rule for pods whose init-data gives layer
// decryption keys: encryption is not authentication, so images must be
// signed unless a named scope accepts them explicitly.
//
// Keys named by keyPath/keyPaths are read through a KeyFetcher, so a path
// may be a broker resource ("kbs:///repo/type/tag") or a guest file. Scope
// selection (For) and RequireSigned are pure functions; Check does the
// signature checks.
package policy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// Requirement types.
const (
	TypeAccept   = "insecureAcceptAnything"
	TypeReject   = "reject"
	TypeSignedBy = "signedBy"
	TypeSigstore = "sigstoreSigned"
)

// TransportDocker is the only transport the guest pulls with.
const TransportDocker = "docker"

// ErrRejected is wrapped by every refusal of an image by the policy.
var ErrRejected = errors.New("image rejected by the image security policy")

// Policy is a parsed containers-policy.json.
type Policy struct {
	Default    []Requirement                       `json:"default"`
	Transports map[string]map[string][]Requirement `json:"transports,omitempty"`
}

// Requirement is one policy requirement; which fields apply depends on
// Type.
type Requirement struct {
	Type           string    `json:"type"`
	KeyType        string    `json:"keyType,omitempty"`
	KeyPath        string    `json:"keyPath,omitempty"`
	KeyPaths       []string  `json:"keyPaths,omitempty"`
	KeyData        []byte    `json:"keyData,omitempty"`
	SignedIdentity *Identity `json:"signedIdentity,omitempty"`
	// Keyless (Fulcio) and transparency-log options are not supported;
	// they are parsed only to refuse them by name.
	Fulcio             json.RawMessage `json:"fulcio,omitempty"`
	RekorPublicKeyPath string          `json:"rekorPublicKeyPath,omitempty"`
	RekorPublicKeyData []byte          `json:"rekorPublicKeyData,omitempty"`
}

// Identity is a requirement's signedIdentity.
type Identity struct {
	Type             string `json:"type"`
	DockerReference  string `json:"dockerReference,omitempty"`
	DockerRepository string `json:"dockerRepository,omitempty"`
}

// Identity types.
const (
	MatchRepoDigestOrExact = "matchRepoDigestOrExact"
	MatchRepository        = "matchRepository"
	MatchExact             = "matchExact"
	ExactReference         = "exactReference"
	ExactRepository        = "exactRepository"
)

// Parse reads and validates a containers-policy.json document. Unknown
// fields and requirement types are errors naming them.
func Parse(data []byte) (*Policy, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var p Policy
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("parsing image security policy: %w", err)
	}
	if len(p.Default) == 0 {
		return nil, errors.New("image security policy: \"default\" must list at least one requirement")
	}
	if err := validate("default", p.Default); err != nil {
		return nil, err
	}
	for transport, scopes := range p.Transports {
		for scope, reqs := range scopes {
			where := fmt.Sprintf("transports.%s[%q]", transport, scope)
			if len(reqs) == 0 {
				return nil, fmt.Errorf("image security policy: %s lists no requirement", where)
			}
			if err := validate(where, reqs); err != nil {
				return nil, err
			}
		}
	}
	return &p, nil
}

func validate(where string, reqs []Requirement) error {
	for i, r := range reqs {
		at := fmt.Sprintf("image security policy: %s[%d] (%s)", where, i, r.Type)
		switch r.Type {
		case TypeAccept, TypeReject, TypeSignedBy:
		case TypeSigstore:
			n := 0
			if r.KeyPath != "" {
				n++
			}
			if len(r.KeyPaths) > 0 {
				n++
			}
			if len(r.KeyData) > 0 {
				n++
			}
			if len(r.Fulcio) > 0 || r.RekorPublicKeyPath != "" || len(r.RekorPublicKeyData) > 0 {
				return fmt.Errorf("%s: fulcio/rekor verification (keyless signatures, transparency-log checks) is not supported in the guest; use a cosign public key (keyPath, keyPaths or keyData)", at)
			}
			if n != 1 {
				return fmt.Errorf("%s: exactly one of keyPath, keyPaths, keyData must be set", at)
			}
			if id := r.SignedIdentity; id != nil {
				switch id.Type {
				case MatchRepoDigestOrExact, MatchRepository, MatchExact:
				case ExactReference:
					if id.DockerReference == "" {
						return fmt.Errorf("%s: signedIdentity exactReference needs dockerReference", at)
					}
				case ExactRepository:
					if id.DockerRepository == "" {
						return fmt.Errorf("%s: signedIdentity exactRepository needs dockerRepository", at)
					}
				default:
					return fmt.Errorf("%s: signedIdentity type %q is not supported", at, id.Type)
				}
			}
		case "":
			return fmt.Errorf("%s: requirement has no type", at)
		default:
			return fmt.Errorf("%s: unknown requirement type %q", at, r.Type)
		}
	}
	return nil
}

// For returns the requirements that apply to ref in the docker transport
// and the scope they came from ("" for the transport's default, "default"
// for the global one).
func (p *Policy) For(ref name.Reference) (scope string, reqs []Requirement) {
	scopes := p.Transports[TransportDocker]
	for _, s := range Scopes(ref) {
		if r, ok := scopes[s]; ok {
			return s, r
		}
	}
	if r, ok := scopes[""]; ok {
		return "", r
	}
	return "default", p.Default
}

// Scopes lists the docker-transport scopes that can match ref, most
// specific first: the reference itself, the repository, each enclosing
// namespace, the registry host, then wildcard domains (*.example.com).
func Scopes(ref name.Reference) []string {
	repo := repository(ref)
	out := []string{canonical(ref), repo}
	for s := repo; ; {
		i := strings.LastIndex(s, "/")
		if i < 0 {
			break
		}
		s = s[:i]
		out = append(out, s)
	}
	host := registry(ref)
	if h, _, ok := strings.Cut(host, ":"); !ok {
		for d := h; ; {
			i := strings.Index(d, ".")
			if i < 0 {
				break
			}
			d = d[i+1:]
			out = append(out, "*."+d)
		}
	}
	return out
}

func registry(ref name.Reference) string {
	r := ref.Context().RegistryStr()
	if r == name.DefaultRegistry {
		return "docker.io"
	}
	return r
}

// repository is ref's repository as containers-policy.json spells it
// (docker.io, not index.docker.io).
func repository(ref name.Reference) string {
	return registry(ref) + "/" + ref.Context().RepositoryStr()
}

// canonical is ref with its tag or digest.
func canonical(ref name.Reference) string {
	if d, ok := ref.(name.Digest); ok {
		return repository(ref) + "@" + d.DigestStr()
	}
	return repository(ref) + ":" + ref.Identifier()
}

// Image is what Check looks at.
type Image struct {
	// Ref is the reference the image was asked for.
	Ref name.Reference
	// Digest is what Ref resolved to ("sha256:..."): the manifest or
	// index digest signatures are made over.
	Digest string
	// Signatures returns the image's legacy cosign signatures (the .sig
	// tag); called only when a requirement needs them.
	Signatures func(ctx context.Context) ([]Signature, error)
	// Bundles returns the Sigstore bundles attached to Digest as OCI
	// referrers (cosign v3); called only when a requirement needs them.
	Bundles func(ctx context.Context) ([]Bundle, error)
}

// KeyFetcher returns the bytes of a key named by a policy keyPath: a
// broker resource URI (kbs:///repo/type/tag) or a file in the guest.
type KeyFetcher interface {
	Key(ctx context.Context, uri string) ([]byte, error)
}

// Check evaluates the requirements that apply to img. Every refusal wraps
// ErrRejected and names the image, the scope and the reason.
func (p *Policy) Check(ctx context.Context, img Image, keys KeyFetcher) error {
	scope, reqs := p.For(img.Ref)
	var f fetched
	for i, r := range reqs {
		at := fmt.Sprintf("%s[%d] %s", scopeName(scope), i, r.Type)
		switch r.Type {
		case TypeAccept:
		case TypeReject:
			return fmt.Errorf("%w: %s: %s rejects it", ErrRejected, img.Ref, at)
		case TypeSignedBy:
			return fmt.Errorf("%w: %s: %s: GPG signatures (signedBy) are not supported in the guest; use sigstoreSigned", ErrRejected, img.Ref, at)
		case TypeSigstore:
			f.fetch(ctx, img)
			if err := checkSigstore(ctx, r, img, f, keys); err != nil {
				return fmt.Errorf("%w: %s: %s: %w", ErrRejected, img.Ref, at, err)
			}
		default:
			return fmt.Errorf("%w: %s: %s: unknown requirement type", ErrRejected, img.Ref, at)
		}
	}
	return nil
}

// fetched is an image's signatures of both formats, read once per Check.
// A format that could not be read is an error only when no signature of
// the other verifies.
type fetched struct {
	done                bool
	sigs                []Signature
	bundles             []Bundle
	sigsErr, bundlesErr error
}

func (f *fetched) fetch(ctx context.Context, img Image) {
	if f.done {
		return
	}
	f.done = true
	if img.Signatures != nil {
		f.sigs, f.sigsErr = img.Signatures(ctx)
	}
	if img.Bundles != nil {
		f.bundles, f.bundlesErr = img.Bundles(ctx)
	}
}

func scopeName(scope string) string {
	switch scope {
	case "default":
		return "default"
	case "":
		return "transports.docker[\"\"]"
	}
	return fmt.Sprintf("transports.docker[%q]", scope)
}

// RequireSigned is the rule for a pod whose init-data gives image
// decryption keys: no image may reach them without a signature by
// default. Layer encryption is not authentication: anyone can wrap a
// layer key to the pod's public key, so an unsigned encrypted image is as
// much the attacker's as an unsigned plain one, and the guest would run
// it with the pod's secrets. Every scope an image can fall into without
// being named (the docker transport's "" scope, or the global default
// when there is none) must require sigstoreSigned or reject; a named
// scope (a registry, namespace, repository or reference) may still say
// insecureAcceptAnything, which is the policy accepting those images
// unsigned explicitly. The error names the scope and what to write.
func (p *Policy) RequireSigned() error {
	scope, reqs := "default", p.Default
	if r, ok := p.Transports[TransportDocker][""]; ok {
		scope, reqs = "", r
	}
	for _, r := range reqs {
		switch r.Type {
		case TypeSigstore, TypeReject, TypeSignedBy: // signedBy refuses every image in the guest
			return nil
		}
	}
	return fmt.Errorf("image security policy: %s accepts images without a signature (%s) while the init-data gives image decryption keys ([image] keys); anyone can encrypt an image to those keys, so require sigstoreSigned there (or reject), and name the images to accept unsigned in their own transports.docker scopes with insecureAcceptAnything", scopeName(scope), typesOf(reqs))
}

func typesOf(reqs []Requirement) string {
	t := make([]string, len(reqs))
	for i, r := range reqs {
		t[i] = r.Type
	}
	return strings.Join(t, ", ")
}
