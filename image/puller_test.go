package image

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containers/ocicrypt"
	occonfig "github.com/containers/ocicrypt/config"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/veil-runtime/veil/image/decrypt"
	"github.com/veil-runtime/veil/image/policy"
	"github.com/veil-runtime/veil/image/unpack"
)

// --- the in-process registry, with hooks to misbehave ---

type testRegistry struct {
	srv  *httptest.Server
	host string

	mu        sync.Mutex
	blobGets  map[string]int // digest → GETs
	inflight  int
	maxFlight int
	// hook may answer a request itself (return true) to misbehave.
	hook func(w http.ResponseWriter, r *http.Request) bool
}

func newRegistry(t *testing.T, tlsServer bool) *testRegistry {
	t.Helper()
	tr := &testRegistry{blobGets: map[string]int{}}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:") {
			d := r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]
			tr.mu.Lock()
			tr.blobGets[d]++
			tr.inflight++
			tr.maxFlight = max(tr.maxFlight, tr.inflight)
			tr.mu.Unlock()
			defer func() { tr.mu.Lock(); tr.inflight--; tr.mu.Unlock() }()
		}
		tr.mu.Lock()
		hook := tr.hook
		tr.mu.Unlock()
		if hook != nil && hook(w, r) {
			return
		}
		reg.ServeHTTP(w, r)
	})
	tr.srv = httptest.NewUnstartedServer(h)
	tr.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	if tlsServer {
		tr.srv.StartTLS()
	} else {
		tr.srv.Start()
	}
	t.Cleanup(tr.srv.Close)
	tr.host = strings.TrimPrefix(strings.TrimPrefix(tr.srv.URL, "http://"), "https://")
	return tr
}

func (tr *testRegistry) setHook(h func(w http.ResponseWriter, r *http.Request) bool) {
	tr.mu.Lock()
	tr.hook = h
	tr.mu.Unlock()
}

func (tr *testRegistry) gets(d v1.Hash) int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.blobGets[d.String()]
}

// --- images built in the test ---

type entry struct {
	name, link, body string
	typ              byte
}

func tarOf(t *testing.T, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		hdr := &tar.Header{Name: e.name, Typeflag: typ, Linkname: e.link, Mode: 0o755, ModTime: time.Unix(1700000000, 0)}
		if typ == tar.TypeReg {
			hdr.Mode, hdr.Size = 0o644, int64(len(e.body))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if typ == tar.TypeReg {
			tw.Write([]byte(e.body))
		}
	}
	tw.Close()
	return buf.Bytes()
}

func layerOf(t *testing.T, entries ...entry) v1.Layer {
	t.Helper()
	b := tarOf(t, entries...)
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// diffLayer is a layer whose DiffID is set by the test (encrypted layers,
// lying configs).
type diffLayer struct {
	v1.Layer
	diffID v1.Hash
}

func (l diffLayer) DiffID() (v1.Hash, error) { return l.diffID, nil }

func imageOf(t *testing.T, arch string, layers ...mutate.Addendum) v1.Image {
	t.Helper()
	img, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{OS: "linux", Architecture: arch, RootFS: v1.RootFS{Type: "layers"}, Config: v1.Config{Cmd: []string{"/bin/sh"}}})
	if err != nil {
		t.Fatal(err)
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, layers...)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func plain(layers ...v1.Layer) []mutate.Addendum {
	var out []mutate.Addendum
	for _, l := range layers {
		out = append(out, mutate.Addendum{Layer: l})
	}
	return out
}

func push(t *testing.T, ref string, img v1.Image) v1.Hash {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img, remote.WithTransport(insecureTransport())); err != nil {
		t.Fatalf("pushing %s: %v", ref, err)
	}
	d, _ := img.Digest()
	return d
}

func insecureTransport() http.RoundTripper {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig.InsecureSkipVerify = true //nolint:gosec // pushing to the test's own registry
	return t
}

// encrypted returns layer l encrypted by ocicrypt for pubPEM, as an
// addendum carrying ocicrypt's annotations; tamper flips a ciphertext byte.
func encrypted(t *testing.T, l v1.Layer, pubPEM []byte, tamper bool) mutate.Addendum {
	t.Helper()
	cc, err := occonfig.EncryptWithJwe([][]byte{pubPEM})
	if err != nil {
		t.Fatal(err)
	}
	rc, _ := l.Compressed()
	defer rc.Close()
	d, _ := l.Digest()
	size, _ := l.Size()
	encR, fin, err := ocicrypt.EncryptLayer(cc.EncryptConfig, rc, ocispec.Descriptor{MediaType: string(types.OCILayer), Digest: digest.Digest(d.String()), Size: size})
	if err != nil {
		t.Fatal(err)
	}
	ct, err := io.ReadAll(encR)
	if err != nil {
		t.Fatal(err)
	}
	ann, err := fin()
	if err != nil {
		t.Fatal(err)
	}
	if tamper {
		ct[len(ct)/2] ^= 0x40
	}
	diffID, _ := l.DiffID()
	mt := types.MediaType(string(types.OCILayer) + "+encrypted")
	return mutate.Addendum{Layer: diffLayer{static.NewLayer(ct, mt), diffID}, Annotations: ann, MediaType: mt}
}

// --- keys ---

type fakeBroker struct {
	mu   sync.Mutex
	res  map[string][]byte
	seen []string
}

func (b *fakeBroker) Key(_ context.Context, uri string) ([]byte, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.seen = append(b.seen, uri)
	if k, ok := b.res[uri]; ok {
		return k, nil
	}
	return nil, fmt.Errorf("broker: resource %s denied by the resource policy", uri)
}

func rsaKeyPair(t *testing.T) (privPEM, pubPEM []byte) {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}),
		pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub})
}

// --- pulling ---

type pod struct {
	dir string
	p   *Puller
}

func newPod(t *testing.T, cfg Config) *pod {
	t.Helper()
	dir := t.TempDir()
	cfg.CacheDir = filepath.Join(dir, "cache")
	if cfg.Backoff.Initial == 0 {
		cfg.Backoff = Backoff{Initial: time.Millisecond, Factor: 2, Attempts: 2}
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &pod{dir: dir, p: p}
}

func (pd *pod) rootfs(id string) string { return filepath.Join(pd.dir, "images", id, "rootfs") }

func (pd *pod) pull(t *testing.T, ref, id string) (*Result, error) {
	t.Helper()
	return pd.p.Pull(context.Background(), ref, pd.rootfs(id))
}

// assertNothingLeft checks that a failed pull left nothing next to the rootfs.
func (pd *pod) assertNothingLeft(t *testing.T, id string) {
	t.Helper()
	ents, err := os.ReadDir(filepath.Dir(pd.rootfs(id)))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	if len(ents) != 0 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("failed pull left %v in %s", names, filepath.Dir(pd.rootfs(id)))
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestPullUnpacksLayersInOrder(t *testing.T) {
	reg := newRegistry(t, false)
	ref := reg.host + "/app/base:1"
	push(t, ref, imageOf(t, "amd64", plain(
		layerOf(t, entry{name: "etc/", typ: tar.TypeDir}, entry{name: "etc/os-release", body: "v1"}, entry{name: "etc/gone", body: "x"}, entry{name: "bin/busybox", body: "bb"}),
		layerOf(t, entry{name: "etc/os-release", body: "v2"}, entry{name: "etc/.wh.gone"}, entry{name: "bin/sh", typ: tar.TypeLink, link: "bin/busybox"}),
	)...))
	pd := newPod(t, Config{})
	res, err := pd.pull(t, ref, "c1")
	if err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(res.Rootfs, "etc/os-release")); got != "v2" {
		t.Errorf("os-release = %q, want the upper layer's", got)
	}
	if _, err := os.Stat(filepath.Join(res.Rootfs, "etc/gone")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("whiteout not applied: %v", err)
	}
	if got := readFile(t, filepath.Join(res.Rootfs, "bin/sh")); got != "bb" {
		t.Errorf("hard link bin/sh = %q", got)
	}
	var cfg v1.ConfigFile
	if err := json.Unmarshal(res.Config, &cfg); err != nil || cfg.Config.Cmd[0] != "/bin/sh" {
		t.Errorf("config %s: %v", res.Config, err)
	}
	if !strings.HasPrefix(res.ManifestDigest, "sha256:") || res.ManifestDigest != res.Digest {
		t.Errorf("digests %q %q", res.ManifestDigest, res.Digest)
	}
	if _, err := pd.pull(t, ref, "c1"); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("second pull into the same rootfs: %v", err)
	}
}

func TestPullPicksPlatformFromIndex(t *testing.T) {
	reg := newRegistry(t, false)
	arm := imageOf(t, "arm64", plain(layerOf(t, entry{name: "arch", body: "arm64"}))...)
	amd := imageOf(t, "amd64", plain(layerOf(t, entry{name: "arch", body: "amd64"}))...)
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
	)
	r, _ := name.ParseReference(reg.host + "/multi:1")
	if err := remote.WriteIndex(r, idx); err != nil {
		t.Fatal(err)
	}
	pd := newPod(t, Config{})
	res, err := pd.pull(t, r.String(), "c1")
	if err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(res.Rootfs, "arch")); got != "amd64" {
		t.Errorf("arch = %q, want amd64", got)
	}
	idxDigest, _ := idx.Digest()
	amdDigest, _ := amd.Digest()
	if res.Digest != idxDigest.String() || res.ManifestDigest != amdDigest.String() {
		t.Errorf("digest %s manifest %s, want index %s manifest %s", res.Digest, res.ManifestDigest, idxDigest, amdDigest)
	}
	// A single-platform image for another architecture is refused by name.
	push(t, reg.host+"/armonly:1", arm)
	if _, err := pd.pull(t, reg.host+"/armonly:1", "c2"); err == nil || !strings.Contains(err.Error(), "image is for linux/arm64") {
		t.Errorf("arm64 image: %v", err)
	}
	pd.assertNothingLeft(t, "c2")
}

func TestPullSharedLayersOncePerPod(t *testing.T) {
	reg := newRegistry(t, false)
	base := layerOf(t, entry{name: "base", body: strings.Repeat("b", 4096)})
	push(t, reg.host+"/a:1", imageOf(t, "amd64", plain(base, layerOf(t, entry{name: "a", body: "a"}))...))
	push(t, reg.host+"/b:1", imageOf(t, "amd64", plain(base, layerOf(t, entry{name: "b", body: "b"}))...))
	pd := newPod(t, Config{})
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i, ref := range []string{"/a:1", "/b:1", "/a:1", "/b:1"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = pd.pull(t, reg.host+ref, fmt.Sprint("c", i))
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("pull %d: %v", i, err)
		}
	}
	d, _ := base.Digest()
	if n := reg.gets(d); n != 1 {
		t.Errorf("shared layer fetched %d times by one pod, want 1", n)
	}
	for i := range 4 {
		if got := readFile(t, filepath.Join(pd.rootfs(fmt.Sprint("c", i)), "base")); len(got) != 4096 {
			t.Errorf("c%d base has %d bytes", i, len(got))
		}
	}
}

// The registry holds each blob request until Jobs of them are in flight:
// downloads run concurrently and never more than Jobs at once.
func TestPullBoundsConcurrentDownloads(t *testing.T) {
	reg := newRegistry(t, false)
	var layers []v1.Layer
	for i := range 6 {
		layers = append(layers, layerOf(t, entry{name: fmt.Sprint("f", i), body: fmt.Sprint(i)}))
	}
	push(t, reg.host+"/many:1", imageOf(t, "amd64", plain(layers...)...))
	const jobs = 2
	cfgDigest := configDigest(t, reg.host+"/many:1")
	var mu sync.Mutex
	cond := sync.NewCond(&mu)
	waiting, released := 0, 0
	reg.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet || !strings.Contains(r.URL.Path, "/blobs/") || strings.Contains(r.URL.Path, cfgDigest) {
			return false
		}
		mu.Lock()
		waiting++
		if waiting-released >= jobs {
			released = waiting
			cond.Broadcast()
		}
		for released < waiting && waiting-released < jobs {
			cond.Wait()
		}
		mu.Unlock()
		return false
	})
	pd := newPod(t, Config{Jobs: jobs})
	if _, err := pd.pull(t, reg.host+"/many:1", "c1"); err != nil {
		t.Fatal(err)
	}
	reg.mu.Lock()
	defer reg.mu.Unlock()
	if reg.maxFlight != jobs {
		t.Errorf("max concurrent blob downloads = %d, want %d", reg.maxFlight, jobs)
	}
}

func configDigest(t *testing.T, ref string) string {
	t.Helper()
	r, _ := name.ParseReference(ref)
	img, err := remote.Image(r)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := img.Manifest()
	return m.Config.Digest.String()
}

func blobHook(d v1.Hash, serve func(w http.ResponseWriter, body []byte)) func(w http.ResponseWriter, r *http.Request) bool {
	return func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/blobs/"+d.String()) {
			return false
		}
		return serveModified(w, r, serve)
	}
}

var blobSource sync.Map // digest → bytes, filled by the tests that tamper

func serveModified(w http.ResponseWriter, r *http.Request, serve func(w http.ResponseWriter, body []byte)) bool {
	d := r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]
	b, ok := blobSource.Load(d)
	if !ok {
		return false
	}
	serve(w, b.([]byte))
	return true
}

func remember(t *testing.T, l v1.Layer) v1.Hash {
	t.Helper()
	rc, _ := l.Compressed()
	b, _ := io.ReadAll(rc)
	d, _ := l.Digest()
	blobSource.Store(d.String(), b)
	return d
}

func TestPullRejectsMisbehavingRegistry(t *testing.T) {
	for _, tc := range []struct {
		name  string
		serve func(w http.ResponseWriter, body []byte)
		want  string
	}{
		{"wrong blob digest", func(w http.ResponseWriter, b []byte) {
			b = append([]byte(nil), b...)
			b[len(b)-1] ^= 0xff
			w.Write(b)
		}, "checksum"},
		{"truncated layer", func(w http.ResponseWriter, b []byte) {
			w.Header().Set("Content-Length", fmt.Sprint(len(b)))
			w.WriteHeader(http.StatusOK)
			w.Write(b[:len(b)/2])
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}, "unexpected EOF"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := newRegistry(t, false)
			l := layerOf(t, entry{name: "f", body: strings.Repeat("data", 1000)})
			ref := reg.host + "/bad:1"
			push(t, ref, imageOf(t, "amd64", plain(l)...))
			d := remember(t, l)
			reg.setHook(blobHook(d, tc.serve))
			pd := newPod(t, Config{})
			_, err := pd.pull(t, ref, "c1")
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), d.String()) {
				t.Fatalf("err = %v, want it to name %s and %q", err, d, tc.want)
			}
			if n := reg.gets(d); n != 2 {
				t.Errorf("blob fetched %d times, want 2 (one retry)", n)
			}
			pd.assertNothingLeft(t, "c1")
			if _, err := os.Stat(pd.p.cache.Path(d)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("unverified blob in the cache: %v", err)
			}
		})
	}
}

func TestPullRetriesTransientFailure(t *testing.T) {
	reg := newRegistry(t, false)
	l := layerOf(t, entry{name: "f", body: strings.Repeat("data", 1000)})
	ref := reg.host + "/flaky:1"
	push(t, ref, imageOf(t, "amd64", plain(l)...))
	d := remember(t, l)
	var once sync.Once
	reg.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		hit := false
		if strings.HasSuffix(r.URL.Path, d.String()) && r.Method == http.MethodGet {
			once.Do(func() {
				hit = true
				blobHook(d, func(w http.ResponseWriter, b []byte) {
					w.Header().Set("Content-Length", fmt.Sprint(len(b)))
					w.WriteHeader(http.StatusOK)
					w.Write(b[:10])
					w.(http.Flusher).Flush()
					panic(http.ErrAbortHandler)
				})(w, r)
			})
		}
		return hit
	})
	pd := newPod(t, Config{})
	res, err := pd.pull(t, ref, "c1")
	if err != nil {
		t.Fatalf("pull with one broken download: %v", err)
	}
	if got := readFile(t, filepath.Join(res.Rootfs, "f")); len(got) != 4000 {
		t.Errorf("f has %d bytes", len(got))
	}
	if n := reg.gets(d); n != 2 {
		t.Errorf("blob fetched %d times, want 2", n)
	}
}

func TestPullRejectsWrongManifestDigest(t *testing.T) {
	reg := newRegistry(t, false)
	a := push(t, reg.host+"/m:a", imageOf(t, "amd64", plain(layerOf(t, entry{name: "a", body: "a"}))...))
	b := imageOf(t, "amd64", plain(layerOf(t, entry{name: "b", body: "b"}))...)
	push(t, reg.host+"/m:b", b)
	raw, _ := b.RawManifest()
	reg.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.HasSuffix(r.URL.Path, "/manifests/"+a.String()) {
			return false
		}
		w.Header().Set("Content-Type", string(types.OCIManifestSchema1))
		w.Header().Set("Docker-Content-Digest", a.String())
		w.Write(raw)
		return true
	})
	pd := newPod(t, Config{})
	_, err := pd.pull(t, reg.host+"/m@"+a.String(), "c1")
	if err == nil || !strings.Contains(err.Error(), "does not match requested digest") {
		t.Fatalf("err = %v, want a manifest digest mismatch", err)
	}
	pd.assertNothingLeft(t, "c1")
}

func TestPullRejectsPathEscapeLayer(t *testing.T) {
	reg := newRegistry(t, false)
	ref := reg.host + "/escape:1"
	push(t, ref, imageOf(t, "amd64", plain(
		layerOf(t, entry{name: "ok", body: "fine"}),
		layerOf(t, entry{name: "../../../../escaped", body: "pwned"}),
	)...))
	pd := newPod(t, Config{})
	_, err := pd.pull(t, ref, "c1")
	if !errors.Is(err, unpack.ErrEscape) || !strings.Contains(err.Error(), "../../../../escaped") {
		t.Fatalf("err = %v, want ErrEscape naming the entry", err)
	}
	pd.assertNothingLeft(t, "c1")
	for _, d := range []string{pd.dir, filepath.Dir(pd.dir)} {
		if _, err := os.Stat(filepath.Join(d, "escaped")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("escaped file written at %s", d)
		}
	}
}

func TestPullRejectsDiffIDMismatch(t *testing.T) {
	reg := newRegistry(t, false)
	l := layerOf(t, entry{name: "f", body: "real"})
	wrong := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("0", 64)}
	ref := reg.host + "/liar:1"
	push(t, ref, imageOf(t, "amd64", mutate.Addendum{Layer: diffLayer{l, wrong}}))
	pd := newPod(t, Config{})
	_, err := pd.pull(t, ref, "c1")
	if !errors.Is(err, unpack.ErrDiffID) {
		t.Fatalf("err = %v, want ErrDiffID", err)
	}
	pd.assertNothingLeft(t, "c1")
}

func TestPullEncryptedLayer(t *testing.T) {
	priv, pub := rsaKeyPair(t)
	otherPriv, _ := rsaKeyPair(t)
	secret := layerOf(t, entry{name: "secret", body: "plaintext only in the guest"})
	reg := newRegistry(t, false)
	push(t, reg.host+"/enc:1", imageOf(t, "amd64", mutate.Addendum{Layer: layerOf(t, entry{name: "base", body: "b"})}, encrypted(t, secret, pub, false)))
	push(t, reg.host+"/enc:tampered", imageOf(t, "amd64", encrypted(t, secret, pub, true)))
	broker := &fakeBroker{res: map[string][]byte{"kbs:///default/image-key/enc": priv, "kbs:///default/image-key/other": otherPriv}}

	t.Run("key from the broker", func(t *testing.T) {
		pd := newPod(t, Config{Keys: broker, DecryptionKeys: []string{"kbs:///default/image-key/enc"}})
		res, err := pd.pull(t, reg.host+"/enc:1", "c1")
		if err != nil {
			t.Fatal(err)
		}
		if got := readFile(t, filepath.Join(res.Rootfs, "secret")); got != "plaintext only in the guest" {
			t.Errorf("secret = %q", got)
		}
		// The cache holds the ciphertext only.
		d, _ := secret.Digest()
		filepath.Walk(filepath.Join(pd.dir, "cache"), func(p string, fi os.FileInfo, err error) error {
			if err == nil && !fi.IsDir() && strings.HasSuffix(p, d.Hex) {
				t.Errorf("plaintext layer blob cached at %s", p)
			}
			return nil
		})
	})
	for _, tc := range []struct {
		name, ref string
		keys      []string
		is        error
		want      string
	}{
		{"missing key", "/enc:1", nil, decrypt.ErrNoKey, "no decryption key is configured"},
		{"wrong key", "/enc:1", []string{"kbs:///default/image-key/other"}, decrypt.ErrWrongKey, "unwraps"},
		{"key denied by the broker", "/enc:1", []string{"kbs:///default/image-key/denied"}, nil, "denied by the resource policy"},
		{"tampered ciphertext", "/enc:tampered", []string{"kbs:///default/image-key/enc"}, decrypt.ErrTampered, "HMAC"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pd := newPod(t, Config{Keys: broker, DecryptionKeys: tc.keys})
			_, err := pd.pull(t, reg.host+tc.ref, "c1")
			if err == nil || (tc.is != nil && !errors.Is(err, tc.is)) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %v containing %q", err, tc.is, tc.want)
			}
			pd.assertNothingLeft(t, "c1")
		})
	}
}

// signImage stores a cosign-style signature of digest under its .sig tag.
func signImage(t *testing.T, repo string, d v1.Hash, key *ecdsa.PrivateKey, identity string) {
	t.Helper()
	var p policy.Payload
	p.Critical.Identity.DockerReference = identity
	p.Critical.Image.DockerManifestDigest = d.String()
	p.Critical.Type = "cosign container image signature"
	payload, _ := json.Marshal(p)
	h := sha256.Sum256(payload)
	sig, err := ecdsa.SignASN1(rand.Reader, key, h[:])
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.Append(mutate.MediaType(empty.Image, types.OCIManifestSchema1), mutate.Addendum{
		Layer:       static.NewLayer(payload, policy.MediaTypePayload),
		Annotations: map[string]string{policy.AnnotationSignature: base64.StdEncoding.EncodeToString(sig)},
	})
	if err != nil {
		t.Fatal(err)
	}
	push(t, repo+":"+policy.SignatureTag(d.String()), img)
}

func TestPullSignaturePolicy(t *testing.T) {
	reg := newRegistry(t, false)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pubDER, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	signed := push(t, reg.host+"/signed/app:1", imageOf(t, "amd64", plain(layerOf(t, entry{name: "f", body: "s"}))...))
	signImage(t, reg.host+"/signed/app", signed, key, reg.host+"/signed/app")
	push(t, reg.host+"/signed/unsigned:1", imageOf(t, "amd64", plain(layerOf(t, entry{name: "f", body: "u"}))...))
	forged := push(t, reg.host+"/signed/forged:1", imageOf(t, "amd64", plain(layerOf(t, entry{name: "f", body: "f"}))...))
	signImage(t, reg.host+"/signed/forged", forged, other, reg.host+"/signed/forged")
	push(t, reg.host+"/blocked:1", imageOf(t, "amd64", plain(layerOf(t, entry{name: "f", body: "b"}))...))

	pol, err := policy.Parse([]byte(fmt.Sprintf(`{
		"default": [{"type": "insecureAcceptAnything"}],
		"transports": {"docker": {
			%q: [{"type": "sigstoreSigned", "keyPath": "kbs:///default/cosign-key/1", "signedIdentity": {"type": "matchRepository"}}],
			%q: [{"type": "reject"}]
		}}}`, reg.host+"/signed", reg.host+"/blocked")))
	if err != nil {
		t.Fatal(err)
	}
	broker := &fakeBroker{res: map[string][]byte{"kbs:///default/cosign-key/1": pubPEM}}
	for _, tc := range []struct{ ref, want string }{
		{"/signed/app:1", ""},
		{"/signed/unsigned:1", "no sigstore signature found"},
		{"/signed/forged:1", "not signed by the policy's key"},
		{"/blocked:1", "reject rejects it"},
	} {
		t.Run(tc.ref, func(t *testing.T) {
			pd := newPod(t, Config{Policy: pol, Keys: broker})
			res, err := pd.pull(t, reg.host+tc.ref, "c1")
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if readFile(t, filepath.Join(res.Rootfs, "f")) != "s" {
					t.Error("wrong content")
				}
				return
			}
			if !errors.Is(err, policy.ErrRejected) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want a rejection containing %q", err, tc.want)
			}
			pd.assertNothingLeft(t, "c1")
			if _, err := os.Stat(filepath.Join(pd.dir, "cache", "sha256")); err == nil {
				ents, _ := os.ReadDir(filepath.Join(pd.dir, "cache", "sha256"))
				if len(ents) != 0 {
					t.Errorf("a rejected image's layers were downloaded: %d blobs", len(ents))
				}
			}
		})
	}
	if !strings.Contains(strings.Join(broker.seen, ","), "kbs:///default/cosign-key/1") {
		t.Errorf("policy key not fetched through the KeyFetcher: %v", broker.seen)
	}
}

func TestPullRegistryAuth(t *testing.T) {
	reg := newRegistry(t, false)
	ref := reg.host + "/private:1"
	push(t, ref, imageOf(t, "amd64", plain(layerOf(t, entry{name: "f", body: "p"}))...))
	reg.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if u, p, ok := r.BasicAuth(); ok && u == "pod" && p == "s3cret" {
			return false
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
		w.WriteHeader(http.StatusUnauthorized)
		return true
	})
	if _, err := newPod(t, Config{}).pull(t, ref, "c1"); err == nil || !strings.Contains(err.Error(), "UNAUTHORIZED") && !strings.Contains(err.Error(), "401") {
		t.Fatalf("anonymous pull of a private image: %v", err)
	}
	auth, err := ParseAuth([]byte(`{"auths": {"` + reg.host + `": {"auth": "` + base64.StdEncoding.EncodeToString([]byte("pod:s3cret")) + `"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := newPod(t, Config{Auth: auth}).pull(t, ref, "c1"); err != nil {
		t.Fatalf("pull with credentials: %v", err)
	}
	if a, _ := auth.Resolve(mustRegistry(t, "other.example.com")); a != authn.Anonymous {
		t.Errorf("registry without credentials got %v", a)
	}
}

func mustRegistry(t *testing.T, host string) name.Registry {
	r, err := name.NewRegistry(host)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestPullMirrors(t *testing.T) {
	origin := newRegistry(t, false)
	mirror := newRegistry(t, false)
	push(t, mirror.host+"/lib/app:1", imageOf(t, "amd64", plain(layerOf(t, entry{name: "from", body: "mirror"}))...))
	push(t, origin.host+"/lib/app:1", imageOf(t, "amd64", plain(layerOf(t, entry{name: "from", body: "origin"}))...))
	push(t, origin.host+"/lib/only-origin:1", imageOf(t, "amd64", plain(layerOf(t, entry{name: "from", body: "origin"}))...))
	pd := newPod(t, Config{Mirrors: map[string][]string{origin.host: {mirror.host}}})
	res, err := pd.pull(t, origin.host+"/lib/app:1", "c1")
	if err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(res.Rootfs, "from")); got != "mirror" || !strings.HasPrefix(res.Source, mirror.host) {
		t.Errorf("pulled %q from %s, want the mirror", got, res.Source)
	}
	res, err = pd.pull(t, origin.host+"/lib/only-origin:1", "c2")
	if err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(res.Rootfs, "from")); got != "origin" {
		t.Errorf("fallback pulled %q, want the origin's", got)
	}
}

func TestPullTLSRoots(t *testing.T) {
	reg := newRegistry(t, true)
	ref := reg.host + "/tls:1"
	push(t, ref, imageOf(t, "amd64", plain(layerOf(t, entry{name: "f", body: "t"}))...))
	root := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: reg.srv.Certificate().Raw})
	// Without the root, the loopback registry's plain-HTTP fallback is
	// refused by the TLS server, and the certificate is not trusted.
	if _, err := newPod(t, Config{}).pull(t, ref, "c1"); err == nil {
		t.Fatal("pull from a TLS registry with an untrusted certificate succeeded")
	}
	if _, err := newPod(t, Config{RootsPEM: root}).pull(t, ref, "c1"); err != nil {
		t.Fatalf("pull with the registry's root: %v", err)
	}
	if _, err := New(Config{CacheDir: t.TempDir(), RootsPEM: []byte("junk")}); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Errorf("junk roots: %v", err)
	}
}

func TestPullLimits(t *testing.T) {
	reg := newRegistry(t, false)
	body := strings.Repeat("x", 3000)
	l0 := layerOf(t, entry{name: "a", body: body})
	l1 := layerOf(t, entry{name: "b", body: body}, entry{name: "c", body: body})
	ref := reg.host + "/big:1"
	push(t, ref, imageOf(t, "amd64", plain(l0, l1)...))
	d0, _ := l0.Digest()
	d1, _ := l1.Digest()
	for _, tc := range []struct {
		name  string
		lim   Limits
		layer string // the refused layer's index and digest
		want  string
	}{
		{"layer bytes", Limits{LayerBytes: 1024}, "layer 0 (" + d0.String() + ")", "over the limit image.max_layer_bytes = 1024 bytes uncompressed"},
		{"image bytes", Limits{ImageBytes: 8192}, "layer 1 (" + d1.String() + ")", "over the limit image.max_image_bytes = 8192 bytes uncompressed (earlier layers took 4608)"},
		{"entries", Limits{LayerEntries: 1}, "layer 1 (" + d1.String() + ")", "over the limit image.max_layer_entries = 1 entries"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pd := newPod(t, Config{Limits: tc.lim})
			_, err := pd.pull(t, ref, "c1")
			if !errors.Is(err, unpack.ErrLimit) {
				t.Fatalf("err = %v, want ErrLimit", err)
			}
			for _, want := range []string{ref, tc.layer, tc.want} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
			pd.assertNothingLeft(t, "c1")
		})
	}

	// The compressed cap is checked on the manifest, before any download.
	ref = reg.host + "/big-compressed:1"
	l2 := layerOf(t, entry{name: "d", body: body})
	push(t, ref, imageOf(t, "amd64", plain(l2)...))
	d2, _ := l2.Digest()
	size, _ := l2.Size()
	pd := newPod(t, Config{Limits: Limits{LayerCompressedBytes: 100}})
	_, err := pd.pull(t, ref, "c1")
	want := "layer 0 (" + d2.String() + "): blob is " + strconv.FormatInt(size, 10) + " bytes: over the limit image.max_layer_compressed_bytes = 100 bytes compressed"
	if !errors.Is(err, unpack.ErrLimit) || !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %v, want ErrLimit saying %q", err, want)
	}
	if n := reg.gets(d2); n != 0 {
		t.Errorf("the refused blob was downloaded %d times", n)
	}
	pd.assertNothingLeft(t, "c1")
}

func TestPullDefaultLimitsFromMemory(t *testing.T) {
	pd := newPod(t, Config{Memory: 256 << 20, Limits: Limits{ImageBytes: 1 << 30}})
	want := Limits{LayerBytes: 64 << 20, LayerCompressedBytes: 64 << 20, LayerEntries: 65536, ImageBytes: 1 << 30}
	if got := pd.p.cfg.Limits; got != want {
		t.Errorf("limits %+v, want %+v (defaults a quarter of 256 MiB, the image cap as given)", got, want)
	}
	if GuestMemory() <= 0 {
		t.Error("GuestMemory() read nothing from sysinfo")
	}
}
