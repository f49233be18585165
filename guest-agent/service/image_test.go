package service

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"google.golang.org/grpc/codes"

	"github.com/veil-runtime/veil/guest-agent/api"
	"github.com/veil-runtime/veil/guest-agent/attest"
	"github.com/veil-runtime/veil/image"
	"github.com/veil-runtime/veil/image/decrypt"
	"github.com/veil-runtime/veil/image/policy"
	"github.com/veil-runtime/veil/image/unpack"
)

func TestPullImagePlainPod(t *testing.T) {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	ref, _ := name.ParseReference(strings.TrimPrefix(srv.URL, "http://") + "/app:1")
	img, err := random.Image(1024, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	a := newImageAPI(New(Config{}), root)
	ctx := context.Background()
	res, err := a.PullImage(ctx, &api.PullImageRequest{Image: ref.String(), ContainerId: "c1"})
	if err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	if res.Rootfs != filepath.Join(root, "c1", "rootfs") || res.ManifestDigest != d.String() || len(res.Config) == 0 {
		t.Errorf("response %+v", res)
	}
	if _, err := os.Stat(res.Rootfs); err != nil {
		t.Error(err)
	}
	_, err = a.PullImage(ctx, &api.PullImageRequest{Image: ref.String(), ContainerId: "c1"})
	wantCode(t, "second pull for c1", err, codes.AlreadyExists)
	// Removing the container frees its rootfs; the pod's cache stays.
	if err := a.release("c1"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "c1")); !os.IsNotExist(err) {
		t.Errorf("rootfs of a removed container: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, ".cache")); err != nil {
		t.Errorf("blob cache after a release: %v", err)
	}
	if err := a.release("../x"); err != nil {
		t.Errorf("release of an invalid id: %v", err)
	}
	_, err = a.PullImage(ctx, &api.PullImageRequest{Image: ref.String(), ContainerId: "../c2"})
	wantCode(t, "container id ../c2", err, codes.InvalidArgument)
}

// A confidential pod never pulls without the init-data's image policy.
func TestPullImageConfidentialNeedsPolicy(t *testing.T) {
	st, err := attest.New(attest.Config{Params: map[string]string{attest.TEEParam: attest.Sample}})
	if err != nil {
		t.Fatal(err)
	}
	a := newImageAPI(New(Config{Attest: st}), t.TempDir())
	_, err = a.PullImage(context.Background(), &api.PullImageRequest{Image: "127.0.0.1:1/app:1", ContainerId: "c1"})
	wantCode(t, "confidential pull", err, codes.FailedPrecondition)
}

// A pull error crosses ttrpc (and the shim, and containerd) with its class
// named once: a multi-%w error came back as "...: permission denied\npermission denied".
func TestPullErrRoundTripsOnce(t *testing.T) {
	for _, cause := range []error{
		fmt.Errorf("pulling app: %w", decrypt.ErrNoKey),
		fmt.Errorf("image rejected: %w", policy.ErrRejected),
		fmt.Errorf("layer: %w", image.ErrBlobDigest),
		fmt.Errorf("layer: %w", &unpack.LimitError{Cap: unpack.Cap{Name: image.KeyMaxImageBytes, Max: 1}, Unit: "bytes uncompressed"}),
	} {
		got := errgrpc.ToNative(errgrpc.ToGRPC(pullErr(cause))).Error()
		if strings.Contains(got, "\n") || !strings.HasPrefix(got, cause.Error()+": ") {
			t.Errorf("pull error %q arrives as %q", cause, got)
		}
	}
}

// RemoveContainer frees a guest-pulled rootfs, also for a container that
// was never created (the shim's cleanup after a Create that pulled and
// then failed), and leaves the pod's blob cache.
func TestRemoveContainerReleasesGuestPulledRootfs(t *testing.T) {
	fx := serve(t)
	for _, d := range []string{"c9/rootfs/bin", ".cache/sha256"} {
		if err := os.MkdirAll(filepath.Join(fx.images, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	_, err := fx.client.Container.RemoveContainer(context.Background(), &api.RemoveContainerRequest{ContainerId: "c9", Force: true})
	wantCode(t, "removing a container that was never created", err, codes.NotFound)
	if _, err := os.Stat(filepath.Join(fx.images, "c9")); !os.IsNotExist(err) {
		t.Errorf("guest-pulled rootfs after RemoveContainer: %v", err)
	}
	if _, err := os.Stat(filepath.Join(fx.images, ".cache", "sha256")); err != nil {
		t.Errorf("blob cache after RemoveContainer: %v", err)
	}
}
