// Package snapshotter is veil's containerd proxy snapshotter for the
// handlers whose guests pull their own images (veil-dev, veil-snp,
// veil-tdx; shim/guestpull.go). containerd must neither unpack nor
// decrypt those images on the host, so for every layer snapshot the CRI
// asks for while pulling an image — a Prepare carrying the target label
// containerd.io/snapshot.ref and the CRI's containerd.io/snapshot/cri.image-ref
// (containerd's `disable_snapshot_annotations = false`) — Snapshotter
// commits an empty layer under the target name, records the image
// reference on it as labels, and answers AlreadyExists: the
// remote-snapshotter protocol, which makes containerd skip fetching and
// applying the layer. The container's own (active) snapshot on top of
// such layers is an empty directory: the shim does not use it.
//
// Native images are the exception: the node's sandbox (pause) image,
// which containerd's config pins (read at each decision, imports
// followed: SandboxImage; containerd's default registry.k8s.io/pause when
// the config pins none or cannot be read), and the references given as
// Options.NativeImages (veil-snapshotter --native-image). Their layers are
// prepared natively, so containerd fetches and unpacks them as for any
// snapshotter. containerd's CRI image store is one for all snapshotters:
// when a guest-pull pod is the node's first, the CRI pulls the sandbox
// image through this snapshotter, and later runc or veil pods, whose
// snapshotter must unpack it from containerd's content store, would fail
// with `content digest ... not found` had its layers been skipped
// (kubelet never pulls the sandbox image again: it exists). The pause
// image is public and runs nothing in a confidential guest, so unpacking
// it on the host gives the host nothing it does not have.
//
// Everything else (a Prepare without the CRI's labels, views, containers,
// Remove, Walk, Usage) is containerd's native snapshotter, so an image
// pulled without the labels (ctr pull) is unpacked as usual.
//
// Serve wraps a Snapshotter in containerd's snapshot gRPC service
// (contrib/snapshotservice) on a unix socket; containerd reaches it as
//
//	[proxy_plugins.veil]
//	  type = "snapshot"
//	  address = "/run/veil/snapshotter.sock"
//
// and a runtime handler selects it with the per-runtime option
// snapshotter = "veil" (runtimeclass/containerdcfg).
package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/contrib/snapshotservice"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/plugins/snapshots/native"
	"github.com/containerd/errdefs"
	"google.golang.org/grpc"

	"github.com/veil-runtime/veil/runtimeclass/containerdcfg"
)

// Labels the Snapshotter reads (set by containerd's unpacker and CRI).
const (
	// LabelTarget names the committed snapshot a layer Prepare is for.
	LabelTarget = snapshots.LabelSnapshotRef
	// LabelImageRef is the image reference the CRI is pulling
	// (containerd's pkg/snapshotters.TargetRefLabel).
	LabelImageRef = "containerd.io/snapshot/cri.image-ref"
	// LabelLayerDigest is the layer's (compressed, maybe encrypted) digest
	// (pkg/snapshotters.TargetLayerDigestLabel).
	LabelLayerDigest = "containerd.io/snapshot/cri.layer-digest"
	// LabelManifestDigest is the digest of the image manifest the layer
	// belongs to (pkg/snapshotters.TargetManifestDigestLabel).
	LabelManifestDigest = "containerd.io/snapshot/cri.manifest-digest"
)

// LabelGuestPulled marks the layers the Snapshotter skipped; its value is
// the image reference the guest pulls.
const LabelGuestPulled = "io.veil.snapshotter/guest-pulled"

// Decision is what Prepare does with one request.
type Decision struct {
	// Skip: commit an empty layer named Target and answer AlreadyExists.
	Skip   bool
	Target string
	// ImageRef and Layer are recorded on the skipped layer.
	ImageRef string
	Layer    string
	// Native is set when the layer would be skipped but its image is a
	// native one: the entry it matched.
	Native *NativeImage
}

// Decide is the Snapshotter's one decision, over a Prepare's labels: a
// layer snapshot of an image the CRI pulls (both the target and the
// image-ref labels present) is skipped, unless the image is one of native
// (NativeImage.Matches); anything else is prepared by the native
// snapshotter.
func Decide(labels map[string]string, native []NativeImage) Decision {
	target, ref := labels[LabelTarget], labels[LabelImageRef]
	if target == "" || ref == "" {
		return Decision{}
	}
	d := Decision{Skip: true, Target: target, ImageRef: ref, Layer: labels[LabelLayerDigest]}
	for i := range native {
		if native[i].Matches(ref, labels[LabelManifestDigest]) {
			d.Skip, d.Native = false, &native[i]
			break
		}
	}
	return d
}

// Options are the Snapshotter's settings beyond its root.
type Options struct {
	// Log receives the decisions; nil discards them.
	Log *slog.Logger
	// NativeImages are references whose layers are always prepared
	// natively (veil-snapshotter --native-image; ParseNativeImage).
	NativeImages []string
	// ContainerdConfig is containerd's config file; the sandbox image it
	// pins is native too, read again at each decision (SandboxImage) so
	// a changed config counts once containerd uses it. Empty, or when the
	// file cannot be read: containerd's default sandbox repository
	// (containerdcfg.DefaultSandboxRepository).
	ContainerdConfig string
}

// Snapshotter is the native snapshotter with layer skipping.
type Snapshotter struct {
	snapshots.Snapshotter
	log              *slog.Logger
	native           []NativeImage
	containerdConfig string
}

var _ snapshots.Snapshotter = (*Snapshotter)(nil)

// New opens (creating) the snapshotter's state under root.
func New(root string, opts Options) (*Snapshotter, error) {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var nativeImages []NativeImage
	for _, ref := range opts.NativeImages {
		n, err := ParseNativeImage(ref, "--native-image")
		if err != nil {
			return nil, err
		}
		nativeImages = append(nativeImages, n)
	}
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("creating snapshotter root: %w", err)
	}
	inner, err := native.NewSnapshotter(filepath.Join(root, "native"))
	if err != nil {
		return nil, fmt.Errorf("opening native snapshots in %s: %w", root, err)
	}
	return &Snapshotter{Snapshotter: inner, log: log, native: nativeImages, containerdConfig: opts.ContainerdConfig}, nil
}

// NativeImages are the images whose layers Prepare does not skip now: the
// configured ones (Options.NativeImages) and the node's sandbox image as
// containerd's config pins it (a warning is logged when the config cannot
// be read).
func (s *Snapshotter) NativeImages() []NativeImage {
	out := slices.Clone(s.native)
	ref, source := containerdcfg.DefaultSandboxRepository, "containerd's default sandbox image"
	if s.containerdConfig != "" {
		switch r, file, err := SandboxImage(s.containerdConfig); {
		case err != nil:
			s.log.Warn("reading the sandbox image from containerd's config; taking containerd's default", "config", s.containerdConfig, "err", err)
		case r != "":
			ref, source = r, "sandbox image of "+file
		}
	}
	n, err := ParseNativeImage(ref, source)
	if err != nil {
		s.log.Warn("the sandbox image does not parse; taking containerd's default", "err", err)
		n, _ = ParseNativeImage(containerdcfg.DefaultSandboxRepository, "containerd's default sandbox image")
	}
	return append(out, n)
}

// Prepare skips the layers Decide says the guest pulls, and otherwise
// prepares an active snapshot natively.
func (s *Snapshotter) Prepare(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	var info snapshots.Info
	for _, o := range opts {
		if err := o(&info); err != nil {
			return nil, err
		}
	}
	var native []NativeImage
	if info.Labels[LabelTarget] != "" && info.Labels[LabelImageRef] != "" {
		native = s.NativeImages()
	}
	d := Decide(info.Labels, native)
	if d.Native != nil {
		s.log.Info("layer prepared on the host: native image", "image", d.ImageRef, "layer", d.Layer,
			"snapshot", d.Target, "native", d.Native.Ref, "source", d.Native.Source)
	}
	if !d.Skip {
		return s.Snapshotter.Prepare(ctx, key, parent, opts...)
	}
	if _, err := s.Snapshotter.Stat(ctx, d.Target); err == nil {
		return nil, fmt.Errorf("layer %s of %s: %w", d.Target, d.ImageRef, errdefs.ErrAlreadyExists)
	}
	labels := map[string]string{LabelGuestPulled: d.ImageRef}
	for k, v := range info.Labels {
		labels[k] = v
	}
	if _, err := s.Snapshotter.Prepare(ctx, key, parent, snapshots.WithLabels(labels)); err != nil {
		return nil, err
	}
	if err := s.Snapshotter.Commit(ctx, d.Target, key, snapshots.WithLabels(labels)); err != nil {
		if rerr := s.Snapshotter.Remove(ctx, key); rerr != nil && !errdefs.IsNotFound(rerr) {
			s.log.Warn("removing the skipped layer's active snapshot", "key", key, "err", rerr)
		}
		if !errdefs.IsAlreadyExists(err) {
			return nil, fmt.Errorf("committing the empty layer %s of %s: %w", d.Target, d.ImageRef, err)
		}
	}
	s.log.Info("layer left to the guest", "image", d.ImageRef, "layer", d.Layer, "snapshot", d.Target)
	return nil, fmt.Errorf("layer %s of %s is pulled in the guest: %w", d.Target, d.ImageRef, errdefs.ErrAlreadyExists)
}

// Serve serves sn on a unix socket at address until ctx is done.
func Serve(ctx context.Context, sn snapshots.Snapshotter, address string) error {
	ln, err := Listen(address)
	if err != nil {
		return err
	}
	return ServeListener(ctx, sn, ln)
}

// Listen creates the unix socket at address (replacing a stale one), so a
// caller can serve it in the background knowing clients can connect.
func Listen(address string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(address), 0o755); err != nil {
		return nil, fmt.Errorf("creating socket directory: %w", err)
	}
	if err := os.Remove(address); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("removing stale socket %s: %w", address, err)
	}
	ln, err := net.Listen("unix", address)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", address, err)
	}
	return ln, nil
}

// ServeListener serves sn on ln until ctx is done; it closes ln.
func ServeListener(ctx context.Context, sn snapshots.Snapshotter, ln net.Listener) error {
	srv := grpc.NewServer()
	snapshotsapi.RegisterSnapshotsServer(srv, snapshotservice.FromSnapshotter(sn))
	stop := context.AfterFunc(ctx, srv.GracefulStop)
	defer stop()
	if err := srv.Serve(ln); err != nil {
		return fmt.Errorf("serving snapshots on %s: %w", ln.Addr(), err)
	}
	return nil
}
