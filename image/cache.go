package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// ErrBlobDigest is wrapped by the error for a blob whose content is not
// its digest or size.
var ErrBlobDigest = errors.New("blob content does not match its digest")

// Cache is a content store of verified blobs keyed by digest, shared by
// the pulls of one pod. A blob is stored under its digest only after its
// content verified; concurrent requests for one blob share one download.
type Cache struct {
	dir string

	mu       sync.Mutex
	inflight map[string]*flight
}

type flight struct {
	done chan struct{}
	err  error
}

// NewCache returns a cache in dir (created if needed).
func NewCache(dir string) (*Cache, error) {
	if err := os.MkdirAll(filepath.Join(dir, "sha256"), 0o700); err != nil {
		return nil, fmt.Errorf("creating image cache: %w", err)
	}
	return &Cache{dir: dir, inflight: map[string]*flight{}}, nil
}

// Path is where the blob d is (or would be) stored.
func (c *Cache) Path(d v1.Hash) string { return filepath.Join(c.dir, d.Algorithm, d.Hex) }

// Get returns the path of blob d, reading it from open when it is not
// cached yet. size is the descriptor's size.
func (c *Cache) Get(ctx context.Context, d v1.Hash, size int64, open func(context.Context) (io.ReadCloser, error)) (string, error) {
	if d.Algorithm != "sha256" || len(d.Hex) != sha256.Size*2 {
		return "", fmt.Errorf("blob digest %s: only sha256 is supported", d)
	}
	p := c.Path(d)
	for {
		c.mu.Lock()
		if _, err := os.Stat(p); err == nil {
			c.mu.Unlock()
			return p, nil
		}
		if f := c.inflight[d.String()]; f != nil {
			c.mu.Unlock()
			select {
			case <-f.done:
			case <-ctx.Done():
				return "", ctx.Err()
			}
			if f.err != nil && errors.Is(f.err, context.Canceled) && ctx.Err() == nil {
				continue // the other puller gave up; fetch it ourselves
			}
			return p, f.err
		}
		f := &flight{done: make(chan struct{})}
		c.inflight[d.String()] = f
		c.mu.Unlock()

		f.err = c.fill(ctx, d, size, open, p)
		c.mu.Lock()
		delete(c.inflight, d.String())
		c.mu.Unlock()
		close(f.done)
		return p, f.err
	}
}

// fill streams the blob to a temporary file, hashing as it goes, and
// moves it under its digest only if digest and size match.
func (c *Cache) fill(ctx context.Context, d v1.Hash, size int64, open func(context.Context) (io.ReadCloser, error), p string) error {
	rc, err := open(ctx)
	if err != nil {
		return err
	}
	defer rc.Close()
	tmp, err := os.CreateTemp(c.dir, ".blob-*")
	if err != nil {
		return fmt.Errorf("caching blob %s: %w", d, err)
	}
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), io.LimitReader(rc, size+1))
	if err != nil {
		return fmt.Errorf("downloading blob %s: %w", d, err)
	}
	if n != size {
		return fmt.Errorf("%w: blob %s is %d bytes, its descriptor says %d", ErrBlobDigest, d, n, size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != d.Hex {
		return fmt.Errorf("%w: blob %s has sha256:%s", ErrBlobDigest, d, got)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("caching blob %s: %w", d, err)
	}
	if err := os.Rename(tmp.Name(), p); err != nil {
		return fmt.Errorf("caching blob %s: %w", d, err)
	}
	ok = true
	return nil
}
