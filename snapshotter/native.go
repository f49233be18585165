package snapshotter

import (
	"fmt"

	"github.com/distribution/reference"
)

// NativeImage is an image whose layers the Snapshotter always prepares
// natively, even when the CRI pulls it for a guest-pull handler: the
// node's sandbox (pause) image and the --native-image references.
type NativeImage struct {
	// Ref is the reference as configured.
	Ref string
	// Source says where Ref came from, for the log: "--native-image",
	// "sandbox image of /etc/containerd/config.toml", ...
	Source string
	named  reference.Named
}

// ParseNativeImage parses ref as containerd's CRI does (Docker Hub names
// normalized: pause:3.10 is docker.io/library/pause:3.10). A bare
// repository name (no tag, no digest) stands for every tag and digest of
// that repository.
func ParseNativeImage(ref, source string) (NativeImage, error) {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return NativeImage{}, fmt.Errorf("parsing native image %q (%s): %w", ref, source, err)
	}
	return NativeImage{Ref: ref, Source: source, named: named}, nil
}

// Matches reports whether the image the CRI pulls, imageRef (its
// cri.image-ref label, normalized by the CRI: a reference with both a tag
// and a digest has lost its tag) of manifest manifestDigest (its
// cri.manifest-digest label, may be empty), is n. The repositories must be
// the same; then n matches when it names no tag or digest, when the tags
// are the same, or when n's digest is the reference's digest or the
// manifest's (n pinned by a platform manifest's digest). A reference that
// does not parse matches nothing.
func (n NativeImage) Matches(imageRef, manifestDigest string) bool {
	if n.named == nil {
		return false
	}
	r, err := reference.ParseNormalizedNamed(imageRef)
	if err != nil || r.Name() != n.named.Name() {
		return false
	}
	nt, nTagged := n.named.(reference.Tagged)
	nd, nDigested := n.named.(reference.Digested)
	if !nTagged && !nDigested {
		return true
	}
	if rt, ok := r.(reference.Tagged); ok && nTagged && rt.Tag() == nt.Tag() {
		return true
	}
	if !nDigested {
		return false
	}
	if rd, ok := r.(reference.Digested); ok && rd.Digest() == nd.Digest() {
		return true
	}
	return manifestDigest != "" && manifestDigest == nd.Digest().String()
}
