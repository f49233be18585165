package podpolicy

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	imgpolicy "github.com/veil-runtime/veil/image/policy"
)

// Pin says how a policy binds an image.
type Pin string

const (
	// PinDigest binds the image's digest: a reference without one
	// becomes name@sha256:..., which the pod must then use.
	PinDigest Pin = "digest"
	// PinSignature keeps the reference as written; the init-data image
	// policy must demand a signature for it.
	PinSignature Pin = "signature"
)

// Platform is the platform whose image config the generator reads.
var Platform = v1.Platform{OS: "linux", Architecture: "amd64"}

// Resolver looks images up in their registries.
type Resolver struct {
	// Pin is PinDigest (the default when empty) or PinSignature.
	Pin Pin
	// Insecure lists registry hosts ("registry:5000") spoken to over
	// plain HTTP.
	Insecure []string
	// Options are extra go-containerregistry options (a transport, for
	// tests and mirrors).
	Options []remote.Option
}

// Resolve looks up ref (as a manifest spells it): its digest and its
// linux/amd64 config. Under PinDigest an unreachable registry is an
// error naming the image; under PinSignature it is not, and the result
// has no config.
func (r *Resolver) Resolve(ctx context.Context, ref string) (Image, error) {
	var nopts []name.Option
	parsed, err := name.ParseReference(ref)
	if err != nil {
		return Image{}, fmt.Errorf("image %q: %w", ref, err)
	}
	for _, h := range r.Insecure {
		if parsed.Context().RegistryStr() == h {
			nopts = append(nopts, name.Insecure)
		}
	}
	if parsed, err = name.ParseReference(ref, nopts...); err != nil {
		return Image{}, fmt.Errorf("image %q: %w", ref, err)
	}
	opts := append([]remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain),
		remote.WithPlatform(Platform), remote.WithUserAgent("veil-policy-generate")}, r.Options...)
	desc, err := remote.Get(parsed, opts...)
	if err == nil {
		var img v1.Image
		if img, err = desc.Image(); err == nil {
			var cf *v1.ConfigFile
			if cf, err = img.ConfigFile(); err == nil {
				if cf.OS != "" && (cf.OS != Platform.OS || cf.Architecture != Platform.Architecture) {
					return Image{}, fmt.Errorf("image %s is %s/%s, not %s/%s", ref, cf.OS, cf.Architecture, Platform.OS, Platform.Architecture)
				}
				return Image{Ref: r.bind(ref, parsed, desc.Digest.String()), Digest: desc.Digest.String(), Config: &cf.Config}, nil
			}
		}
	}
	if r.Pin == PinSignature {
		return Image{Ref: ref}, nil
	}
	return Image{}, fmt.Errorf("resolving image %s to a digest (the policy pins each image by digest; --pin signature binds the reference and a signature instead): %w", ref, err)
}

// bind is the reference the policy binds: ref pinned to digest, spelled
// as the manifest spells it (the CRI hands the agent the pod's own
// string).
func (r *Resolver) bind(ref string, parsed name.Reference, digest string) string {
	if r.Pin == PinSignature {
		return ref
	}
	if _, ok := parsed.(name.Digest); ok {
		return ref
	}
	if t, ok := parsed.(name.Tag); ok && strings.HasSuffix(ref, ":"+t.TagStr()) {
		ref = strings.TrimSuffix(ref, ":"+t.TagStr())
	}
	return ref + "@" + digest
}

// DefaultImagePolicy is the image security policy (containers-policy.json)
// for digest-pinned images when the author gives none: every other
// repository rejected, the pod's own repositories accepted (their
// content is pinned by the agent policy's digests).
func DefaultImagePolicy(refs []string) (string, error) {
	var scopes []string
	for _, ref := range refs {
		parsed, err := name.ParseReference(ref)
		if err != nil {
			return "", fmt.Errorf("image %q: %w", ref, err)
		}
		repo := imgpolicy.Scopes(parsed)[1]
		if !contains(scopes, repo) {
			scopes = append(scopes, repo)
		}
	}
	var b strings.Builder
	b.WriteString(`{"default": [{"type": "reject"}], "transports": {"docker": {`)
	for i, s := range scopes {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%q: [{\"type\": \"insecureAcceptAnything\"}]", s)
	}
	b.WriteString("}}}")
	return b.String(), nil
}

// RequireSignatures checks that imagePolicy demands a signature for each
// reference (PinSignature binds no digest, so a policy that would accept
// anything there would bind nothing).
func RequireSignatures(imagePolicy string, refs []string) error {
	if imagePolicy == "" {
		return errors.New("--pin signature needs an image policy (--image-policy) that demands a signature (sigstoreSigned) for each image")
	}
	p, err := imgpolicy.Parse([]byte(imagePolicy))
	if err != nil {
		return err
	}
	for _, ref := range refs {
		parsed, err := name.ParseReference(ref)
		if err != nil {
			return fmt.Errorf("image %q: %w", ref, err)
		}
		scope, reqs := p.For(parsed)
		signed := false
		for _, r := range reqs {
			switch r.Type {
			case imgpolicy.TypeSigstore, imgpolicy.TypeSignedBy:
				signed = true
			case imgpolicy.TypeReject:
				return fmt.Errorf("image %s: the image policy's scope %q rejects it", ref, scopeName(scope))
			}
		}
		if !signed {
			return fmt.Errorf("image %s is pinned by signature but the image policy's scope %q accepts it unsigned: add a sigstoreSigned requirement for it, or pin by digest", ref, scopeName(scope))
		}
	}
	return nil
}

func scopeName(s string) string {
	if s == "" {
		return "docker (transport default)"
	}
	return s
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
