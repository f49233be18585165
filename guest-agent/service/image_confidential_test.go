package service

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containers/ocicrypt"
	occonfig "github.com/containers/ocicrypt/config"
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
	"google.golang.org/grpc/codes"

	"github.com/veil-runtime/veil/attestation/initdata"
	"github.com/veil-runtime/veil/attestation/kbs"
	"github.com/veil-runtime/veil/attestation/kbs/server"
	attpolicy "github.com/veil-runtime/veil/attestation/policy"
	"github.com/veil-runtime/veil/guest-agent/api"
	"github.com/veil-runtime/veil/guest-agent/attest"
)

// TestPullImageConfidential pulls, as a veil-dev pod, an image with an
// ocicrypt-encrypted layer through everything the init-data's [image]
// table names: the reference's registry is mirrored to a TLS registry
// trusted through tls_roots that wants credentials (registry_auth, a
// broker resource), and the layer key is a broker resource; the broker is
// a real in-process veil-kbs in dev mode.
func TestPullImageConfidential(t *testing.T) {
	// The TLS registry, wanting basic auth.
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	tlsReg := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "pod" || p != "s3cret" {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		reg.ServeHTTP(w, r)
	}))
	defer tlsReg.Close()
	host := strings.TrimPrefix(tlsReg.URL, "https://")
	roots := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tlsReg.Certificate().Raw})

	priv, pub := rsaPair(t)
	img := encryptedImage(t, pub, "secret", "plaintext only in the guest")
	push := func(repo string) {
		ref, _ := name.ParseReference(host + "/" + repo)
		tr := tlsReg.Client().Transport
		if err := remote.Write(ref, img, remote.WithTransport(basicAuth{tr})); err != nil {
			t.Fatal(err)
		}
	}
	push("enc:1")

	// The broker: grants the key and the credentials to sample evidence.
	store, err := server.OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	must(t, store.SetAttestationPolicy(attpolicy.Attestation{Sample: &attpolicy.Sample{}, RequireInitData: true}))
	must(t, store.SetResourcePolicy(attpolicy.Resources{Rules: []attpolicy.ResourceRule{{Resource: "default/*/*", Tees: []kbs.Tee{kbs.TeeSample}}}}))
	must(t, store.SetResource("default/image-key/enc", priv))
	must(t, store.SetResource("default/credentials/registry", []byte(`{"auths": {"`+host+`": {"auth": "`+base64.StdEncoding.EncodeToString([]byte("pod:s3cret"))+`"}}}`)))
	srv, err := server.New(server.Config{Store: store, Dev: true})
	if err != nil {
		t.Fatal(err)
	}
	kbsSrv := httptest.NewServer(srv)
	defer kbsSrv.Close()

	// With layer keys, only named scopes may accept unsigned images.
	const namedAccept = `{"default": [{"type": "reject"}], "transports": {"docker": {"origin.example:5000/enc": [{"type": "insecureAcceptAnything"}]}}}`
	docWith := func(policy, keys string) []byte {
		return []byte(`version = "0.1.0"
algorithm = "sha256"

[broker]
url = "` + kbsSrv.URL + `"

[image]
policy = '` + policy + `'
keys = [` + keys + `]
registry_auth = "kbs:///default/credentials/registry"
tls_roots = '''` + string(roots) + `'''

[image.mirrors]
"origin.example:5000" = ["` + host + `"]
`)
	}
	docFor := func(keys string) []byte { return docWith(namedAccept, keys) }
	pod := func(doc []byte) *imageAPI {
		sum := initdata.Digest(doc)
		st, err := attest.New(attest.Config{Params: map[string]string{attest.TEEParam: attest.Sample, attest.InitDataDigestParam: hex.EncodeToString(sum[:])}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.SetInitData(context.Background(), doc); err != nil {
			t.Fatal(err)
		}
		return newImageAPI(New(Config{Attest: st}), t.TempDir())
	}
	ctx := context.Background()

	a := pod(docFor(`"kbs:///default/image-key/enc"`))
	res, err := a.PullImage(ctx, &api.PullImageRequest{Image: "origin.example:5000/enc:1", ContainerId: "c1"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(res.Rootfs, "secret"))
	if err != nil || string(got) != "plaintext only in the guest" {
		t.Fatalf("secret = %q, %v", got, err)
	}

	// Keys with a default that accepts unsigned images: refused before
	// any pull, naming the image, the scope and the rule.
	a = pod(docWith(`{"default": [{"type": "insecureAcceptAnything"}]}`, `"kbs:///default/image-key/enc"`))
	_, err = a.PullImage(ctx, &api.PullImageRequest{Image: "origin.example:5000/enc:1", ContainerId: "c1"})
	wantCode(t, "keys with an accept-anything default", err, codes.FailedPrecondition)
	for _, want := range []string{"origin.example:5000/enc:1", "default accepts images without a signature (insecureAcceptAnything)", "[image] keys"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("keys with an accept-anything default: %v, want %q", err, want)
		}
	}

	// A key the broker does not hold: refused, naming the key.
	a = pod(docFor(`"kbs:///default/image-key/missing"`))
	_, err = a.PullImage(ctx, &api.PullImageRequest{Image: "origin.example:5000/enc:1", ContainerId: "c1"})
	wantCode(t, "pull with a missing broker key", err, codes.PermissionDenied)
	if !strings.Contains(err.Error(), "default/image-key/missing") {
		t.Errorf("error does not name the key: %v", err)
	}
}

// basicAuth pushes as the test registry's user.
type basicAuth struct{ rt http.RoundTripper }

func (b basicAuth) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.SetBasicAuth("pod", "s3cret")
	return b.rt.RoundTrip(r)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func rsaPair(t *testing.T) (privPEM, pubPEM []byte) {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}),
		pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub})
}

// encryptedImage is a one-layer image holding file, its layer encrypted
// by ocicrypt (JWE) for pubPEM.
func encryptedImage(t *testing.T, pubPEM []byte, file, body string) v1.Image {
	t.Helper()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return tarOne(file, body), nil })
	if err != nil {
		t.Fatal(err)
	}
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
	diffID, _ := l.DiffID()
	mt := types.MediaType(string(types.OCILayer) + "+encrypted")
	img, err := mutate.Append(mutate.MediaType(empty.Image, types.OCIManifestSchema1),
		mutate.Addendum{Layer: withDiffID{static.NewLayer(ct, mt), diffID}, Annotations: ann, MediaType: mt})
	if err != nil {
		t.Fatal(err)
	}
	return mutate.ConfigMediaType(img, types.OCIConfigJSON)
}

// withDiffID reports the plaintext's diffID for an encrypted layer.
type withDiffID struct {
	v1.Layer
	diffID v1.Hash
}

func (l withDiffID) DiffID() (v1.Hash, error) { return l.diffID, nil }

// tarOne is a tar stream holding one regular file.
func tarOne(file, body string) io.ReadCloser {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: file, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body))}) //nolint:errcheck // in-memory
	tw.Write([]byte(body))                                                                              //nolint:errcheck // in-memory
	tw.Close()
	return io.NopCloser(&buf)
}
