package testimages

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Spec describes one image: its name inside the registry (repository path
// and tag, no host), its layers (bottom first) and its run configuration.
type Spec struct {
	Name   string
	Layers [][]Entry
	Config v1.Config
}

// Build returns the OCI image described by spec.
func Build(spec Spec) (v1.Image, error) {
	var layers []v1.Layer
	for i, entries := range spec.Layers {
		data, err := LayerTar(entries)
		if err != nil {
			return nil, fmt.Errorf("building layer %d of %s: %w", i, spec.Name, err)
		}
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(data)), nil
		}, tarball.WithMediaType(types.OCILayer), tarball.WithCompressedCaching)
		if err != nil {
			return nil, fmt.Errorf("building layer %d of %s: %w", i, spec.Name, err)
		}
		layers = append(layers, l)
	}
	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	img, err := mutate.AppendLayers(base, layers...)
	if err != nil {
		return nil, fmt.Errorf("assembling %s: %w", spec.Name, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("reading config of %s: %w", spec.Name, err)
	}
	cf = cf.DeepCopy()
	cf.Architecture = "amd64"
	cf.OS = "linux"
	cf.Created = v1.Time{Time: Epoch}
	cf.Config = spec.Config
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("setting config of %s: %w", spec.Name, err)
	}
	return img, nil
}

// Push builds every spec and writes it to the registry at host (for example
// "127.0.0.1:5000") through transport, which lets a caller reach a registry
// that is not on its own network. It returns each image's digest by name.
func Push(ctx context.Context, host string, transport http.RoundTripper, specs []Spec) (map[string]string, error) {
	digests := map[string]string{}
	for _, s := range specs {
		img, err := Build(s)
		if err != nil {
			return nil, err
		}
		ref, err := name.ParseReference(host+"/"+s.Name, name.Insecure)
		if err != nil {
			return nil, fmt.Errorf("parsing image name %s: %w", s.Name, err)
		}
		if err := remote.Write(ref, img, remote.WithContext(ctx), remote.WithTransport(transport)); err != nil {
			return nil, fmt.Errorf("pushing %s: %w", ref, err)
		}
		d, err := img.Digest()
		if err != nil {
			return nil, fmt.Errorf("computing digest of %s: %w", s.Name, err)
		}
		digests[s.Name] = d.String()
	}
	return digests, nil
}
