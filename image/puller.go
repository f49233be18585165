package image

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/veil-runtime/veil/image/decrypt"
	"github.com/veil-runtime/veil/image/policy"
	"github.com/veil-runtime/veil/image/unpack"
)

// KeyFetcher returns a key held by the key broker, named by a
// kbs:///repo/type/tag URI. The agent implements it with its broker
// client, after attestation.
type KeyFetcher interface {
	Key(ctx context.Context, uri string) ([]byte, error)
}

// Backoff is the retry schedule of registry requests and blob downloads.
type Backoff struct {
	// Initial is the first wait; each retry waits Factor times longer.
	Initial time.Duration
	Factor  float64
	// Attempts is how many times a request is tried in all.
	Attempts int
}

// Config is what a Puller needs. Everything comes from the caller
// (init-data, the broker), nothing from the host.
type Config struct {
	// CacheDir holds the pod's blob cache.
	CacheDir string
	// Platform picked from an index; default linux/amd64.
	Platform v1.Platform
	// Auth has registry credentials; registries without an entry are
	// pulled anonymously.
	Auth Auth
	// Mirrors maps a registry host to mirror hosts tried before it.
	Mirrors map[string][]string
	// RootsPEM are extra TLS roots for registries (PEM).
	RootsPEM []byte
	// Policy is the image security policy; nil accepts every image (the
	// caller decides when that is allowed).
	Policy *policy.Policy
	// DecryptionKeys name the private keys for encrypted layers: broker
	// URIs (kbs:///...) or guest files. Fetched on the first encrypted layer.
	DecryptionKeys []string
	// Keys fetches broker resources (policy keys, decryption keys).
	Keys KeyFetcher
	// Jobs bounds concurrent layer downloads; default 3.
	Jobs int
	// Backoff of retries; zero fields take defaults (0.5 s, x2, 4 tries).
	Backoff Backoff
	Log     *slog.Logger
	// Transport replaces the HTTP transport (tests); RootsPEM then unused.
	Transport http.RoundTripper
	// Limits caps layer and image sizes; zero fields take
	// DefaultLimits(Memory).
	Limits Limits
	// Memory is the guest's RAM the default caps are a share of; 0 reads
	// it (GuestMemory).
	Memory int64
}

// Result describes a pulled image.
type Result struct {
	// ManifestDigest is the digest of the image manifest unpacked.
	ManifestDigest string
	// Digest is what the reference resolved to (index or manifest), the
	// digest signatures are checked against.
	Digest string
	// Config is the image config JSON.
	Config []byte
	// Rootfs is the unpacked root filesystem.
	Rootfs string
	// Source is the reference actually pulled (a mirror or the original).
	Source string
}

// Puller pulls images for one pod.
type Puller struct {
	cfg   Config
	cache *Cache
	rt    http.RoundTripper
	keys  keySource

	keyMu   sync.Mutex
	decKeys [][]byte
}

// New returns a Puller with its cache in cfg.CacheDir.
func New(cfg Config) (*Puller, error) {
	if cfg.CacheDir == "" {
		return nil, errors.New("image puller: no cache directory")
	}
	if cfg.Platform.OS == "" {
		cfg.Platform = v1.Platform{OS: "linux", Architecture: "amd64"}
	}
	if cfg.Jobs <= 0 {
		cfg.Jobs = 3
	}
	if cfg.Backoff.Initial <= 0 {
		cfg.Backoff.Initial = 500 * time.Millisecond
	}
	if cfg.Backoff.Factor < 1 {
		cfg.Backoff.Factor = 2
	}
	if cfg.Backoff.Attempts <= 0 {
		cfg.Backoff.Attempts = 4
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Memory <= 0 {
		cfg.Memory = GuestMemory()
	}
	cfg.Limits = cfg.Limits.withDefaults(cfg.Memory)
	rt := cfg.Transport
	if rt == nil {
		var err error
		if rt, err = httpTransport(cfg.RootsPEM); err != nil {
			return nil, err
		}
	}
	cache, err := NewCache(cfg.CacheDir)
	if err != nil {
		return nil, err
	}
	return &Puller{cfg: cfg, cache: cache, rt: rt, keys: keySource{broker: cfg.Keys}}, nil
}

func (p *Puller) options(ctx context.Context) []remote.Option {
	return []remote.Option{
		remote.WithContext(ctx),
		remote.WithTransport(p.rt),
		remote.WithAuthFromKeychain(p.cfg.Auth),
		remote.WithPlatform(p.cfg.Platform),
		remote.WithUserAgent("veil-agent"),
		remote.WithRetryBackoff(remote.Backoff{
			Duration: p.cfg.Backoff.Initial,
			Factor:   p.cfg.Backoff.Factor,
			Jitter:   0.1,
			Steps:    p.cfg.Backoff.Attempts,
		}),
	}
}

// maxConfigSize bounds the one blob held in memory.
const maxConfigSize = 8 << 20

// Pull pulls reference and unpacks it at rootfs, which must not exist.
// rootfs appears only once the whole image has verified.
func (p *Puller) Pull(ctx context.Context, reference, rootfs string) (*Result, error) {
	ref, err := name.ParseReference(reference)
	if err != nil {
		return nil, fmt.Errorf("parsing image reference %q: %w", reference, err)
	}
	if _, err := os.Lstat(rootfs); err == nil {
		return nil, fmt.Errorf("pulling %s: rootfs %s already exists", reference, rootfs)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	opts := p.options(ctx)

	src, desc, err := p.resolve(ref, opts)
	if err != nil {
		return nil, err
	}
	res := &Result{Digest: desc.Digest.String(), Rootfs: rootfs, Source: src.String()}
	if p.cfg.Policy != nil {
		img := policy.Image{Ref: ref, Digest: res.Digest, Signatures: func(ctx context.Context) ([]policy.Signature, error) {
			return signatures(src.Context(), desc.Digest, p.options(ctx))
		}, Bundles: func(ctx context.Context) ([]policy.Bundle, error) {
			return bundles(src.Context(), desc.Digest, p.options(ctx))
		}}
		if err := p.cfg.Policy.Check(ctx, img, p.keys); err != nil {
			return nil, err
		}
	}
	img, err := desc.Image()
	if err != nil {
		return nil, fmt.Errorf("pulling %s for %s: %w", reference, p.cfg.Platform, err)
	}
	m, err := img.Manifest()
	if err != nil {
		return nil, fmt.Errorf("pulling %s: manifest: %w", reference, err)
	}
	md, err := img.Digest()
	if err != nil {
		return nil, fmt.Errorf("pulling %s: %w", reference, err)
	}
	res.ManifestDigest = md.String()
	if m.Config.Size > maxConfigSize {
		return nil, fmt.Errorf("pulling %s: config blob is %d bytes (limit %d)", reference, m.Config.Size, maxConfigSize)
	}
	if res.Config, err = img.RawConfigFile(); err != nil {
		return nil, fmt.Errorf("pulling %s: config: %w", reference, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("pulling %s: parsing config: %w", reference, err)
	}
	if cf.OS != "" && (cf.OS != p.cfg.Platform.OS || cf.Architecture != p.cfg.Platform.Architecture) {
		return nil, fmt.Errorf("pulling %s: image is for %s/%s, the guest needs %s", reference, cf.OS, cf.Architecture, p.cfg.Platform)
	}
	if len(cf.RootFS.DiffIDs) != len(m.Layers) {
		return nil, fmt.Errorf("pulling %s: manifest has %d layers, config has %d diffIDs", reference, len(m.Layers), len(cf.RootFS.DiffIDs))
	}
	for i, l := range m.Layers {
		if err := p.cfg.Limits.checkCompressed(l.Size); err != nil {
			return nil, fmt.Errorf("pulling %s: layer %d (%s): %w", reference, i, l.Digest, err)
		}
	}
	var keys [][]byte
	for _, l := range m.Layers {
		if decrypt.IsEncrypted(string(l.MediaType)) {
			if keys, err = p.decryptionKeys(ctx); err != nil {
				return nil, fmt.Errorf("pulling %s: %w", reference, err)
			}
			break
		}
	}
	if err := p.unpackAll(ctx, img, m.Layers, cf.RootFS.DiffIDs, keys, rootfs); err != nil {
		return nil, fmt.Errorf("pulling %s: %w", reference, err)
	}
	p.cfg.Log.Info("image pulled", "image", reference, "source", res.Source, "digest", res.ManifestDigest, "layers", len(m.Layers))
	return res, nil
}

// resolve fetches ref's descriptor from the first source that has it.
func (p *Puller) resolve(ref name.Reference, opts []remote.Option) (name.Reference, *remote.Descriptor, error) {
	cands, err := candidates(ref, p.cfg.Mirrors)
	if err != nil {
		return nil, nil, err
	}
	var errs []string
	for _, c := range cands {
		desc, err := remote.Get(c, opts...)
		if err == nil {
			return c, desc, nil
		}
		p.cfg.Log.Warn("resolving image", "source", c.String(), "err", err)
		errs = append(errs, fmt.Sprintf("%s: %v", c, err))
	}
	return nil, nil, fmt.Errorf("resolving %s: %s", ref, strings.Join(errs, "; "))
}

// decryptionKeys fetches the private keys once per Puller.
func (p *Puller) decryptionKeys(ctx context.Context) ([][]byte, error) {
	p.keyMu.Lock()
	defer p.keyMu.Unlock()
	if p.decKeys != nil {
		return p.decKeys, nil
	}
	if len(p.cfg.DecryptionKeys) == 0 {
		return nil, decrypt.ErrNoKey
	}
	var keys [][]byte
	for _, uri := range p.cfg.DecryptionKeys {
		k, err := p.keys.Key(ctx, uri)
		if err != nil {
			return nil, fmt.Errorf("fetching decryption key %s: %w", uri, err)
		}
		keys = append(keys, k)
	}
	p.decKeys = keys
	return keys, nil
}

// unpackAll downloads layers into the cache, at most Jobs at a time, and
// applies each, in order, as soon as it and those before it are there, in
// a temporary directory renamed to rootfs at the end.
func (p *Puller) unpackAll(ctx context.Context, img v1.Image, layers []v1.Descriptor, diffIDs []v1.Hash, keys [][]byte, rootfs string) (err error) {
	parent := filepath.Dir(rootfs)
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", parent, err)
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(rootfs)+".pull-")
	if err != nil {
		return fmt.Errorf("creating unpack directory: %w", err)
	}
	defer func() {
		if err != nil {
			if rerr := os.RemoveAll(tmp); rerr != nil {
				p.cfg.Log.Error("removing partial rootfs", "dir", tmp, "err", rerr)
			}
		}
	}()

	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	sem := make(chan struct{}, p.cfg.Jobs)
	paths := make([]string, len(layers))
	var used int64 // uncompressed bytes of the layers applied
	done := make([]chan error, len(layers))
	for i, l := range layers {
		done[i] = make(chan error, 1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				done[i] <- ctx.Err()
				return
			}
			defer func() { <-sem }()
			var err error
			paths[i], err = p.fetch(ctx, img, l)
			done[i] <- err
		}()
	}
	for i, l := range layers {
		select {
		case err := <-done[i]:
			if err != nil {
				return fmt.Errorf("layer %d (%s): %w", i, l.Digest, err)
			}
		case <-ctx.Done():
			return ctx.Err()
		}
		st, err := p.apply(tmp, paths[i], l, diffIDs[i], keys, p.cfg.Limits.layer(used))
		if err != nil {
			return fmt.Errorf("layer %d (%s): %w", i, l.Digest, err)
		}
		used += st.Bytes
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	if err := os.Rename(tmp, rootfs); err != nil {
		return fmt.Errorf("moving rootfs into place: %w", err)
	}
	return nil
}

// fetch puts layer l in the cache, retrying with backoff.
func (p *Puller) fetch(ctx context.Context, img v1.Image, l v1.Descriptor) (string, error) {
	wait := p.cfg.Backoff.Initial
	for attempt := 1; ; attempt++ {
		path, err := p.cache.Get(ctx, l.Digest, l.Size, func(context.Context) (io.ReadCloser, error) {
			layer, err := img.LayerByDigest(l.Digest)
			if err != nil {
				return nil, err
			}
			return layer.Compressed()
		})
		if err == nil || ctx.Err() != nil || attempt >= p.cfg.Backoff.Attempts {
			return path, err
		}
		p.cfg.Log.Warn("downloading layer, retrying", "digest", l.Digest.String(), "attempt", attempt, "err", err)
		if err := sleep(ctx, wait); err != nil {
			return "", err
		}
		wait = time.Duration(float64(wait) * p.cfg.Backoff.Factor)
	}
}

// apply unpacks one cached layer into dir under lim.
func (p *Puller) apply(dir, path string, l v1.Descriptor, diffID v1.Hash, keys [][]byte, lim unpack.Limits) (unpack.Stats, error) {
	f, err := os.Open(path)
	if err != nil {
		return unpack.Stats{}, err
	}
	defer f.Close()
	var r io.Reader = f
	if decrypt.IsEncrypted(string(l.MediaType)) {
		if r, err = decrypt.Layer(f, l, keys); err != nil {
			return unpack.Stats{}, err
		}
	}
	return unpack.Layer(dir, r, diffID.String(), lim, p.cfg.Log)
}

// Limits on what a signature tag may make the guest read.
const (
	maxSignatures  = 32
	maxPayloadSize = 1 << 20
)

// signatures reads the cosign signatures of digest from repo; an image
// without a signature tag has none.
func signatures(repo name.Repository, digest v1.Hash, opts []remote.Option) ([]policy.Signature, error) {
	tag := repo.Tag(policy.SignatureTag(digest.String()))
	img, err := remote.Image(tag, opts...)
	if err != nil {
		var terr *transport.Error
		if errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound {
			return nil, nil
		}
		return nil, fmt.Errorf("reading %s: %w", tag, err)
	}
	m, err := img.Manifest()
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", tag, err)
	}
	var sigs []policy.Signature
	for _, l := range m.Layers {
		b64, ok := l.Annotations[policy.AnnotationSignature]
		if !ok {
			continue
		}
		if len(sigs) == maxSignatures {
			break
		}
		if l.Size > maxPayloadSize {
			return nil, fmt.Errorf("reading %s: signature payload %s is %d bytes (limit %d)", tag, l.Digest, l.Size, maxPayloadSize)
		}
		sig, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			return nil, fmt.Errorf("reading %s: signature annotation of %s is not base64: %w", tag, l.Digest, err)
		}
		layer, err := img.LayerByDigest(l.Digest)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", tag, err)
		}
		rc, err := layer.Compressed()
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", tag, err)
		}
		payload, err := io.ReadAll(rc) // size bounded above, digest verified at EOF
		rc.Close()
		if err != nil {
			return nil, fmt.Errorf("reading %s payload %s: %w", tag, l.Digest, err)
		}
		sigs = append(sigs, policy.Signature{Payload: payload, Signature: sig})
	}
	return sigs, nil
}
