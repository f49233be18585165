package service

import (
	"context"
	"io"
	"log"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"google.golang.org/grpc/codes"

	"github.com/veil-runtime/veil/attestation/initdata"
	"github.com/veil-runtime/veil/guest-agent/api"
	"github.com/veil-runtime/veil/guest-agent/volume"
)

// The init-data's [image] caps reach the puller: a layer over
// max_layer_bytes is refused with ResourceExhausted naming the key, the
// image and the layer.
func TestPullImageInitDataCaps(t *testing.T) {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	ref, _ := name.ParseReference(strings.TrimPrefix(srv.URL, "http://") + "/app:1")
	img, err := random.Image(4096, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	st := confidentialState(t, `version = "0.1.0"
algorithm = "sha256"

[image]
policy = '{"default": [{"type": "insecureAcceptAnything"}]}'
max_layer_bytes = 2048
`)
	a := newImageAPI(New(Config{Attest: st}), t.TempDir())
	_, err = a.PullImage(context.Background(), &api.PullImageRequest{Image: ref.String(), ContainerId: "c1"})
	wantCode(t, "pull over max_layer_bytes", err, codes.ResourceExhausted)
	for _, want := range []string{ref.String(), ld.String(), "over the limit image.max_layer_bytes = 2048 bytes uncompressed"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not say %q", err, want)
		}
	}
	if got := imageLimits(initdata.ImageLimits{MaxLayerBytes: 1, MaxLayerCompressedBytes: 2, MaxLayerEntries: 3, MaxImageBytes: 4}); got.LayerBytes != 1 || got.LayerCompressedBytes != 2 || got.LayerEntries != 3 || got.ImageBytes != 4 {
		t.Errorf("imageLimits mapped to %+v", got)
	}
}

// The init-data's [volumes] caps reach the Volume service.
func TestVolumeInitDataCaps(t *testing.T) {
	st := confidentialState(t, `version = "0.1.0"
algorithm = "sha256"

[volumes]
max_volume_bytes = 10
max_volume_entries = 7
max_total_bytes = 100
max_total_entries = 50
`)
	vols := volume.New(t.TempDir())
	a := &volumeAPI{s: New(Config{Attest: st, Volumes: vols})}
	ctx := context.Background()
	if _, err := a.CopyFile(ctx, &api.CopyFileRequest{Volume: "cm", Path: "a", Data: []byte("0123456789"), Mode: 0o644}); err != nil {
		t.Fatal(err)
	}
	_, err := a.CopyFile(ctx, &api.CopyFileRequest{Volume: "cm", Path: "b", Data: []byte("x"), Mode: 0o644})
	wantCode(t, "copy over max_volume_bytes", err, codes.ResourceExhausted)
	if err == nil || !strings.Contains(err.Error(), "volume cm: file b: over the limit volumes.max_volume_bytes = 10 bytes") {
		t.Errorf("error %v", err)
	}
	if got, want := vols.Limits(), (volume.Limits{VolumeBytes: 10, VolumeEntries: 7, TotalBytes: 100, TotalEntries: 50}); got != want {
		t.Errorf("limits %+v, want %+v", got, want)
	}
}
