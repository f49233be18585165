package image

import (
	"fmt"
	"io"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/veil-runtime/veil/image/policy"
)

// bundles reads the Sigstore bundles attached to digest in repo as OCI
// referrers (cosign v3's signatures): the referrers API, or the referrers
// tag schema ("sha256-<hex>") where the registry has no such API. A
// referrer is read when its artifactType may be a Sigstore bundle (see
// maybeBundle) and its predicate annotation, if any, is cosign's
// signature predicate; at most maxSignatures referrer manifests are read,
// each bundle at most maxPayloadSize bytes. An image without referrers has
// none. What the registry says here is only a hint of where to look: the
// policy verifies every bundle's signature and digest itself.
func bundles(repo name.Repository, digest v1.Hash, opts []remote.Option) ([]policy.Bundle, error) {
	subject := repo.Digest(digest.String())
	idx, err := remote.Referrers(subject, opts...)
	if err != nil {
		return nil, fmt.Errorf("listing the referrers of %s: %w", subject, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("listing the referrers of %s: %w", subject, err)
	}
	var out []policy.Bundle
	read := 0
	for _, d := range im.Manifests {
		if !maybeBundle(d.ArtifactType) {
			continue
		}
		if pt, ok := d.Annotations[policy.AnnotationPredicateType]; ok && pt != policy.PredicateCosignSign {
			continue // another attestation (SBOM, provenance)
		}
		if read == maxSignatures {
			break
		}
		read++
		b, ok, err := referredBundle(repo.Digest(d.Digest.String()), opts)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, b)
		}
	}
	return out, nil
}

// maybeBundle says whether a referrer of artifactType can hold a bundle:
// a Sigstore bundle type, or the empty config's type, which registries
// that take a referrer's type from its config rather than its
// artifactType field report (go-containerregistry's registry does).
func maybeBundle(artifactType string) bool {
	return strings.HasPrefix(artifactType, policy.MediaTypeBundlePrefix) || artifactType == mediaTypeEmpty || artifactType == ""
}

// mediaTypeEmpty is the OCI empty descriptor's media type.
const mediaTypeEmpty = "application/vnd.oci.empty.v1+json"

// referredBundle reads the bundle layer of one referrer manifest; ok is
// false for a referrer without one (an artifact of another kind).
func referredBundle(ref name.Digest, opts []remote.Option) (b policy.Bundle, ok bool, err error) {
	img, err := remote.Image(ref, opts...)
	if err != nil {
		return policy.Bundle{}, false, fmt.Errorf("reading referrer %s: %w", ref, err)
	}
	m, err := img.Manifest()
	if err != nil {
		return policy.Bundle{}, false, fmt.Errorf("reading referrer %s: %w", ref, err)
	}
	for _, l := range m.Layers {
		if !strings.HasPrefix(string(l.MediaType), policy.MediaTypeBundlePrefix) {
			continue
		}
		if l.Size > maxPayloadSize {
			return policy.Bundle{}, false, fmt.Errorf("reading referrer %s: bundle %s is %d bytes (limit %d)", ref, l.Digest, l.Size, maxPayloadSize)
		}
		layer, err := img.LayerByDigest(l.Digest)
		if err != nil {
			return policy.Bundle{}, false, fmt.Errorf("reading referrer %s: %w", ref, err)
		}
		rc, err := layer.Compressed()
		if err != nil {
			return policy.Bundle{}, false, fmt.Errorf("reading referrer %s: %w", ref, err)
		}
		raw, err := io.ReadAll(io.LimitReader(rc, maxPayloadSize+1)) // digest verified at EOF
		rc.Close()
		if err != nil {
			return policy.Bundle{}, false, fmt.Errorf("reading bundle %s of %s: %w", l.Digest, ref, err)
		}
		return policy.Bundle{Source: ref.DigestStr(), JSON: raw}, true, nil
	}
	return policy.Bundle{}, false, nil
}
