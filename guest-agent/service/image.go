package service

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/containerd/errdefs"

	"github.com/veil-runtime/veil/guest-agent/api"
	"github.com/veil-runtime/veil/guest-agent/attest"
	"github.com/veil-runtime/veil/guest-agent/containers"
	"github.com/veil-runtime/veil/image"
	"github.com/veil-runtime/veil/image/decrypt"
	"github.com/veil-runtime/veil/image/policy"
	"github.com/veil-runtime/veil/image/unpack"
)

// ImagesRoot holds guest-pulled images: <root>/<container_id>/rootfs and
// the pod's blob cache in <root>/.cache (tmpfs: /run is in memory).
const ImagesRoot = "/run/veil/images"

// imageSecrets is what PullImage needs from the confidential state
// (guest-agent/attest) for veil-dev, veil-snp and veil-tdx: the init-data's
// image security policy, the broker URIs of the layer decryption keys, and
// broker resources fetched after attestation. Until the state provides it,
// confidential pods cannot pull.
type imageSecrets interface {
	ImagePolicy() string
	ImageKeys() []string
	Resource(ctx context.Context, uri string) ([]byte, error)
}

// imageAPI serves the Image service: guest pull with image/.
type imageAPI struct {
	s    *Service
	root string

	mu     sync.Mutex
	puller *image.Puller
}

var _ api.ImageService = (*imageAPI)(nil)

func newImageAPI(s *Service, root string) *imageAPI { return &imageAPI{s: s, root: root} }

// pullerFor returns the pod's puller, made on first use with the policy
// and keys of the pod's kind.
func (a *imageAPI) pullerFor() (*image.Puller, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.puller != nil {
		return a.puller, nil
	}
	cfg := image.Config{CacheDir: filepath.Join(a.root, ".cache"), Log: a.s.cfg.Log}
	if st := a.s.cfg.Attest; st != nil && st.TEE() != attest.None {
		sec, ok := any(st).(imageSecrets)
		if !ok {
			return nil, fmt.Errorf("confidential pod (%s): the agent cannot read the image policy and broker keys yet: %w", st.TEE(), errdefs.ErrFailedPrecondition)
		}
		doc := sec.ImagePolicy()
		if doc == "" {
			return nil, fmt.Errorf("confidential pod: init-data has no image.policy (say insecureAcceptAnything explicitly to allow any image): %w", errdefs.ErrFailedPrecondition)
		}
		pol, err := policy.Parse([]byte(doc))
		if err != nil {
			return nil, fmt.Errorf("init-data image.policy: %v: %w", err, errdefs.ErrFailedPrecondition)
		}
		cfg.Policy, cfg.DecryptionKeys, cfg.Keys = pol, sec.ImageKeys(), brokerKeys{sec}
	}
	// An ordinary (veil) pod trusts its host: no policy, which accepts
	// every image.
	p, err := image.New(cfg)
	if err != nil {
		return nil, err
	}
	a.puller = p
	return p, nil
}

type brokerKeys struct{ sec imageSecrets }

func (b brokerKeys) Key(ctx context.Context, uri string) ([]byte, error) {
	return b.sec.Resource(ctx, uri)
}

func (a *imageAPI) PullImage(ctx context.Context, req *api.PullImageRequest) (*api.PullImageResponse, error) {
	if err := containers.CheckID("container id", req.GetContainerId()); err != nil {
		return nil, rpcErr(err)
	}
	if req.GetImage() == "" {
		return nil, rpcErr(fmt.Errorf("pull image: no image reference: %w", errdefs.ErrInvalidArgument))
	}
	p, err := a.pullerFor()
	if err != nil {
		return nil, rpcErr(fmt.Errorf("pull image %s: %w", req.GetImage(), err))
	}
	rootfs := filepath.Join(a.root, req.GetContainerId(), "rootfs")
	if _, err := os.Lstat(rootfs); err == nil {
		return nil, rpcErr(fmt.Errorf("pull image %s: container %s already has a rootfs: %w", req.GetImage(), req.GetContainerId(), errdefs.ErrAlreadyExists))
	}
	res, err := p.Pull(ctx, req.GetImage(), rootfs)
	if err != nil {
		a.s.cfg.Log.Error("pulling image", "image", req.GetImage(), "container", req.GetContainerId(), "err", err)
		return nil, rpcErr(pullErr(err))
	}
	return &api.PullImageResponse{ManifestDigest: res.ManifestDigest, Config: res.Config, Rootfs: res.Rootfs}, nil
}

// pullErr gives a pull failure its gRPC code: refused by policy or keys →
// PermissionDenied; a bad image (digests, paths, ciphertext) →
// FailedPrecondition.
func pullErr(err error) error {
	switch {
	case errors.Is(err, policy.ErrRejected), errors.Is(err, decrypt.ErrNoKey), errors.Is(err, decrypt.ErrWrongKey):
		return fmt.Errorf("%w: %w", err, errdefs.ErrPermissionDenied)
	case errors.Is(err, decrypt.ErrTampered), errors.Is(err, unpack.ErrEscape), errors.Is(err, unpack.ErrDiffID), errors.Is(err, image.ErrBlobDigest):
		return fmt.Errorf("%w: %w", err, errdefs.ErrFailedPrecondition)
	}
	return err
}
