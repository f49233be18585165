package shim

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	"github.com/google/go-containerregistry/pkg/name"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/veil-runtime/veil/guest-agent/api"
	"github.com/veil-runtime/veil/shim/metrics"
)

// ImageNameAnnotation is the OCI spec annotation naming a container's
// image. containerd's CRI sets it on every container (the image the user
// asked for, else the image's first reference); ctr users pass it
// themselves (ctr run --annotation io.kubernetes.cri.image-name=<ref>).
const ImageNameAnnotation = "io.kubernetes.cri.image-name"

// guestPullTimeout bounds one image pull in the guest: registry round
// trips, the broker, and unpacking under software emulation take far
// longer than an ordinary agent call.
const guestPullTimeout = 10 * time.Minute

// guestPullRef is the image reference a container's rootfs is pulled from
// in the guest: the CRI's image-name annotation. An image ID (sha256:...,
// which only the host's image store knows) or a reference that does not
// parse is refused with the reason.
func guestPullRef(spec *specs.Spec) (string, error) {
	ref := spec.Annotations[ImageNameAnnotation]
	if ref == "" {
		return "", fmt.Errorf("guest pull: the container has no %s annotation naming its image (the CRI sets it; with ctr pass --annotation %s=<ref>): %w",
			ImageNameAnnotation, ImageNameAnnotation, errdefs.ErrInvalidArgument)
	}
	if strings.HasPrefix(ref, "sha256:") {
		return "", fmt.Errorf("guest pull: image %s is an image ID, not a registry reference the guest can pull (create the container from the image's name): %w", ref, errdefs.ErrInvalidArgument)
	}
	if _, err := name.ParseReference(ref); err != nil {
		return "", fmt.Errorf("guest pull: image %q: %w: %w", ref, err, errdefs.ErrInvalidArgument)
	}
	return ref, nil
}

// guestPull asks the agent to pull the container's image and returns the
// rootfs storage for CreateContainer: a "bind" of the guest path the
// agent unpacked the verified image to. The host's snapshot is not used.
// The spec containerd made from the host's copy of the image config
// (entrypoint, env, user, working directory) is applied as it is; the
// guest's copy of the config is only logged by digest.
func (s *service) guestPull(ctx context.Context, p *pod, cid string, spec *specs.Spec) (*api.Storage, error) {
	ref, err := guestPullRef(spec)
	if err != nil {
		return nil, err
	}
	if p.agent.image == nil {
		return nil, fmt.Errorf("guest pull of %s: the agent connection has no Image service: %w", ref, errdefs.ErrNotImplemented)
	}
	start := time.Now()
	s.metrics.MarkContainer(cid, metrics.ContainerPullStarted)
	cctx, cancel := context.WithTimeout(ctx, guestPullTimeout)
	defer cancel()
	resp, err := p.agent.image.PullImage(cctx, &api.PullImageRequest{Image: ref, ContainerId: cid})
	if err != nil {
		s.metrics.ForgetContainer(cid)
		if p.isDead() {
			return nil, fmt.Errorf("pulling image %s in the guest: pod VM %s is gone: %w", ref, p.id, errdefs.ErrUnavailable)
		}
		return nil, guestPullError(ref, errgrpc.ToNative(err))
	}
	s.metrics.MarkContainer(cid, metrics.ContainerImagePulled)
	log.G(ctx).WithField("image", ref).WithField("manifest", resp.GetManifestDigest()).
		WithField("took", time.Since(start).Round(time.Millisecond)).Info("image pulled in the guest")
	return &api.Storage{Driver: "bind", Source: resp.GetRootfs()}, nil
}

// releaseGuestImage frees a pulled rootfs after a Create that failed
// later: the agent's RemoveContainer drops the container's image also when
// the container was never created (a NotFound answer is expected then).
func (s *service) releaseGuestImage(ctx context.Context, p *pod, cid string) {
	s.metrics.ForgetContainer(cid)
	cctx, cancel := p.callCtx(context.WithoutCancel(ctx))
	defer cancel()
	_, err := p.agent.container.RemoveContainer(cctx, &api.RemoveContainerRequest{ContainerId: cid, Force: true})
	if err != nil && !errdefs.IsNotFound(errgrpc.ToNative(err)) {
		log.G(ctx).WithError(err).WithField("container", cid).Warn("releasing the guest-pulled image after a failed create")
	}
}

// guestPullError names the image and keeps the agent's reason (policy,
// key, digest) and its errdefs class.
func guestPullError(ref string, err error) error {
	what := "pulling image " + ref + " in the guest"
	switch {
	case errdefs.IsPermissionDenied(err):
		what += " (refused: image policy or decryption key)"
	case errdefs.IsFailedPrecondition(err) && !errors.Is(err, context.DeadlineExceeded):
		what += " (the image did not verify or the pod cannot pull)"
	}
	return fmt.Errorf("%s: %w", what, err)
}
