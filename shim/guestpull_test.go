package shim

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/veil-runtime/veil/guest-agent/api"
	"github.com/veil-runtime/veil/shim/config"
)

func TestGuestPullRef(t *testing.T) {
	tests := []struct {
		name, image, want, wantErr string
	}{
		{name: "cri reference", image: "127.0.0.1:5000/app:1", want: "127.0.0.1:5000/app:1"},
		{name: "short name", image: "busybox", want: "busybox"},
		{name: "by digest", image: "reg.example/app@sha256:" + strings.Repeat("a", 64), want: "reg.example/app@sha256:" + strings.Repeat("a", 64)},
		{name: "no annotation", wantErr: "no io.kubernetes.cri.image-name annotation"},
		{name: "image id", image: "sha256:" + strings.Repeat("b", 64), wantErr: "is an image ID"},
		{name: "not a reference", image: "UPPER/Case::x", wantErr: `image "UPPER/Case::x"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := &specs.Spec{Annotations: map[string]string{}}
			if tt.image != "" {
				spec.Annotations[ImageNameAnnotation] = tt.image
			}
			got, err := guestPullRef(spec)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errdefs.IsInvalidArgument(err) {
					t.Fatalf("error %v, want InvalidArgument containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("guestPullRef = %q, %v", got, err)
			}
		})
	}
}

// fakeImage is the agent's Image service: it records the pulls and
// answers with err, or a rootfs under /run/veil/images.
type fakeImage struct {
	api.ImageService
	pulls []*api.PullImageRequest
	err   error
}

func (f *fakeImage) PullImage(_ context.Context, r *api.PullImageRequest) (*api.PullImageResponse, error) {
	f.pulls = append(f.pulls, r)
	if f.err != nil {
		return nil, f.err
	}
	return &api.PullImageResponse{ManifestDigest: "sha256:m", Rootfs: "/run/veil/images/" + r.GetContainerId() + "/rootfs"}, nil
}

func TestGuestPull(t *testing.T) {
	spec := &specs.Spec{Annotations: map[string]string{ImageNameAnnotation: "reg.example/enc:1"}}
	img := &fakeImage{}
	p := &pod{id: "pod1", agent: &agentConn{image: img}, dead: make(chan struct{})}
	s := &service{}
	st, err := s.guestPull(context.Background(), p, "c1", spec)
	if err != nil {
		t.Fatal(err)
	}
	if st.GetDriver() != "bind" || st.GetSource() != "/run/veil/images/c1/rootfs" {
		t.Errorf("rootfs storage %+v", st)
	}
	if len(img.pulls) != 1 || img.pulls[0].GetImage() != "reg.example/enc:1" || img.pulls[0].GetContainerId() != "c1" {
		t.Errorf("pulls %+v", img.pulls)
	}

	// The agent's reason reaches the user with the image's name and class.
	for _, tc := range []struct {
		agentErr error
		is       func(error) bool
		want     string
	}{
		{fmt.Errorf("image reg.example/enc:1 rejected by policy: %w", errdefs.ErrPermissionDenied), errdefs.IsPermissionDenied, "refused: image policy or decryption key"},
		{fmt.Errorf("layer sha256:x: digest mismatch: %w", errdefs.ErrFailedPrecondition), errdefs.IsFailedPrecondition, "did not verify"},
	} {
		img.err = errgrpc.ToGRPC(tc.agentErr)
		_, err := s.guestPull(context.Background(), p, "c2", spec)
		if err == nil || !tc.is(err) || !strings.Contains(err.Error(), "pulling image reg.example/enc:1 in the guest") ||
			!strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.agentErr.Error()[:20]) {
			t.Errorf("error %v", err)
		}
	}
	close(p.dead)
	if _, err := s.guestPull(context.Background(), p, "c3", spec); !errdefs.IsUnavailable(err) || !strings.Contains(err.Error(), "pod VM pod1 is gone") {
		t.Errorf("dead VM: %v", err)
	}
}

// fakeRemover is the agent's Container service as releaseGuestImage sees
// it: it records RemoveContainer and answers NotFound (never created).
type fakeRemover struct {
	api.ContainerService
	removed []*api.RemoveContainerRequest
}

func (f *fakeRemover) RemoveContainer(_ context.Context, r *api.RemoveContainerRequest) (*emptypb.Empty, error) {
	f.removed = append(f.removed, r)
	return nil, errgrpc.ToGRPC(fmt.Errorf("container %s: %w", r.GetContainerId(), errdefs.ErrNotFound))
}

func TestReleaseGuestImage(t *testing.T) {
	rm := &fakeRemover{}
	p := &pod{id: "pod1", agent: &agentConn{container: rm}, dead: make(chan struct{})}
	p.cfg.Agent.CallTimeout = config.Duration(time.Second)
	(&service{}).releaseGuestImage(context.Background(), p, "c1")
	if len(rm.removed) != 1 || rm.removed[0].GetContainerId() != "c1" || !rm.removed[0].GetForce() {
		t.Fatalf("RemoveContainer calls %+v, want one forced removal of c1", rm.removed)
	}
}
