package service

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/containerd/errdefs"

	"github.com/veil-runtime/veil/attestation/initdata"
	"github.com/veil-runtime/veil/attestation/kbs/client"
	"github.com/veil-runtime/veil/guest-agent/api"
	"github.com/veil-runtime/veil/guest-agent/attest"
	"github.com/veil-runtime/veil/guest-agent/containers"
	agentpolicy "github.com/veil-runtime/veil/guest-agent/policy"
	"github.com/veil-runtime/veil/image"
	"github.com/veil-runtime/veil/image/decrypt"
	"github.com/veil-runtime/veil/image/policy"
	"github.com/veil-runtime/veil/image/unpack"
)

// ImagesRoot holds guest-pulled images: <root>/<container_id>/rootfs and
// the pod's blob cache in <root>/.cache (tmpfs: /run is in memory). The
// agent policy admits a "bind" rootfs only at <root>/<container_id>/rootfs.
const ImagesRoot = agentpolicy.GuestImageRoot

// imageSecrets is what PullImage needs from the confidential state
// (guest-agent/attest) for veil-dev, veil-snp and veil-tdx: the
// init-data's [image] table (policy, layer key URIs, registry credentials
// URI, mirrors, TLS roots) and broker resources fetched after attestation.
type imageSecrets interface {
	ImagePolicy() string
	ImageKeys() []string
	ImageRegistry() (auth string, mirrors map[string][]string, tlsRoots string)
	ImageLimits() initdata.ImageLimits
	Resource(ctx context.Context, uri string) ([]byte, error)
}

var _ imageSecrets = (*attest.State)(nil)

// imageAPI serves the Image service: guest pull with image/.
type imageAPI struct {
	s    *Service
	root string

	mu     sync.Mutex
	puller *image.Puller
}

var _ api.ImageService = (*imageAPI)(nil)

func newImageAPI(s *Service, root string) *imageAPI { return &imageAPI{s: s, root: root} }

// pullerFor returns the pod's puller, made on first use with the policy,
// keys and registry settings of the pod's kind. A failure is not
// remembered: the next pull tries again (the broker may have been down).
func (a *imageAPI) pullerFor(ctx context.Context) (*image.Puller, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.puller != nil {
		return a.puller, nil
	}
	cfg := image.Config{CacheDir: filepath.Join(a.root, ".cache"), Log: a.s.cfg.Log}
	if st := a.s.cfg.Attest; st != nil && st.TEE() != attest.None {
		if err := confidentialPullConfig(ctx, st, &cfg); err != nil {
			return nil, err
		}
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

// confidentialPullConfig fills cfg from the init-data: the policy
// (required), decryption key URIs, mirrors, TLS roots, the pull caps, and
// the registry credentials fetched from the broker.
func confidentialPullConfig(ctx context.Context, sec imageSecrets, cfg *image.Config) error {
	doc := sec.ImagePolicy()
	if doc == "" {
		return fmt.Errorf("confidential pod: init-data has no image.policy (say insecureAcceptAnything explicitly to allow any image): %w", errdefs.ErrFailedPrecondition)
	}
	pol, err := policy.Parse([]byte(doc))
	if err != nil {
		return fmt.Errorf("init-data image.policy: %v: %w", err, errdefs.ErrFailedPrecondition)
	}
	if len(sec.ImageKeys()) > 0 {
		// Anyone can encrypt an image to the pod's keys: with keys, the
		// images reaching them unnamed must be signed.
		if err := pol.RequireSigned(); err != nil {
			return fmt.Errorf("init-data image.policy: %v: %w", err, errdefs.ErrFailedPrecondition)
		}
	}
	authURI, mirrors, roots := sec.ImageRegistry()
	cfg.Policy, cfg.DecryptionKeys, cfg.Keys = pol, sec.ImageKeys(), brokerKeys{sec}
	cfg.Mirrors, cfg.RootsPEM = mirrors, []byte(roots)
	cfg.Limits = imageLimits(sec.ImageLimits())
	if authURI != "" {
		raw, err := sec.Resource(ctx, authURI)
		if err != nil {
			return fmt.Errorf("registry credentials (init-data image.registry_auth): %v: %w", err, errdefs.ErrPermissionDenied)
		}
		if cfg.Auth, err = image.ParseAuth(raw); err != nil {
			return fmt.Errorf("registry credentials from %s: %v: %w", authURI, err, errdefs.ErrFailedPrecondition)
		}
	}
	return nil
}

// imageLimits are the puller's caps from the init-data's [image] keys
// (zero: the default, a share of guest memory).
func imageLimits(l initdata.ImageLimits) image.Limits {
	return image.Limits{
		LayerBytes:           l.MaxLayerBytes,
		LayerCompressedBytes: l.MaxLayerCompressedBytes,
		LayerEntries:         l.MaxLayerEntries,
		ImageBytes:           l.MaxImageBytes,
	}
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
	p, err := a.pullerFor(ctx)
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

// release removes a container's guest-pulled rootfs (it lives in guest
// memory); the pod's blob cache stays for the next container.
func (a *imageAPI) release(containerID string) error {
	if containers.CheckID("container id", containerID) != nil {
		return nil // never pulled: PullImage refuses such IDs
	}
	if err := os.RemoveAll(filepath.Join(a.root, containerID)); err != nil {
		return fmt.Errorf("removing the guest-pulled rootfs of %s: %w", containerID, err)
	}
	return nil
}

// pullErr gives a pull failure its gRPC code: refused by policy or keys,
// or a broker refusing a resource (denied, unknown, attestation failed) →
// PermissionDenied; a bad image (digests, paths, ciphertext) →
// FailedPrecondition; an image over a size or entry cap →
// ResourceExhausted.
func pullErr(err error) error {
	var brokerErr *client.Error
	switch {
	case errors.As(err, &brokerErr):
		return fmt.Errorf("%v: %w", err, errdefs.ErrPermissionDenied)
	case errors.Is(err, policy.ErrRejected), errors.Is(err, decrypt.ErrNoKey), errors.Is(err, decrypt.ErrWrongKey):
		return fmt.Errorf("%v: %w", err, errdefs.ErrPermissionDenied)
	case errors.Is(err, unpack.ErrLimit):
		return fmt.Errorf("%v: %w", err, errdefs.ErrResourceExhausted)
	case errors.Is(err, decrypt.ErrTampered), errors.Is(err, unpack.ErrEscape), errors.Is(err, unpack.ErrDiffID), errors.Is(err, image.ErrBlobDigest):
		return fmt.Errorf("%v: %w", err, errdefs.ErrFailedPrecondition)
	}
	return err
}
