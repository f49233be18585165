package encrypt_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/veil-runtime/veil/image"
	"github.com/veil-runtime/veil/image/decrypt"
	"github.com/veil-runtime/veil/image/encrypt"
)

// startRegistry serves an in-process registry over TLS; rt trusts it.
func startRegistry(t *testing.T) (host string, rt http.RoundTripper, opts []remote.Option) {
	t.Helper()
	srv := httptest.NewUnstartedServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	rt = srv.Client().Transport
	return strings.TrimPrefix(srv.URL, "https://"), rt, []remote.Option{remote.WithTransport(rt)}
}

func tarLayer(t *testing.T, mt types.MediaType, file, body string) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: file, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body)), ModTime: time.Unix(1700000000, 0)}); err != nil {
		t.Fatal(err)
	}
	tw.Write([]byte(body)) //nolint:errcheck // in memory
	tw.Close()
	raw := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(raw)), nil }, tarball.WithMediaType(mt))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// pushPlain pushes a two-layer Docker-media-type image and returns it.
func pushPlain(t *testing.T, ref name.Reference, opts []remote.Option) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image,
		tarLayer(t, types.DockerLayer, "one", "first layer"),
		tarLayer(t, types.DockerLayer, "two", "second layer"))
	if err != nil {
		t.Fatal(err)
	}
	img, err = mutate.Config(img, v1.Config{Cmd: []string{"/bin/true"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img, opts...); err != nil {
		t.Fatal(err)
	}
	return img
}

func mustRef(t *testing.T, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// encryptAndPush runs what `veil image encrypt` does.
func encryptAndPush(t *testing.T, src, dst name.Reference, pub []byte, opts []remote.Option) {
	t.Helper()
	img, err := remote.Image(src, opts...)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := encrypt.Image(img, [][]byte{pub}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(dst, enc, opts...); err != nil {
		t.Fatal(err)
	}
}

// TestEncryptDecryptRoundTrip: every layer of the pushed image is
// encrypted (OCI +encrypted media type, JWE annotation, no plaintext
// blob), the config keeps the plaintext diffIDs, and image/decrypt with
// the private key gives layers whose uncompressed digests are those
// diffIDs; the guest puller unpacks it with the key and refuses it with
// another key.
func TestEncryptDecryptRoundTrip(t *testing.T) {
	for _, kt := range []encrypt.KeyType{encrypt.RSA, encrypt.EC} {
		t.Run(string(kt), func(t *testing.T) {
			host, rt, opts := startRegistry(t)
			src, dst := mustRef(t, host+"/app/plain:1"), mustRef(t, host+"/app/enc:1")
			plain := pushPlain(t, src, opts)
			priv, pub, err := encrypt.GenerateKey(kt)
			if err != nil {
				t.Fatal(err)
			}
			encryptAndPush(t, src, dst, pub, opts)

			got, err := remote.Image(dst, opts...)
			if err != nil {
				t.Fatal(err)
			}
			m, _ := got.Manifest()
			cfg, _ := got.ConfigFile()
			wantCfg, _ := plain.ConfigFile()
			plainLayers, _ := plain.Layers()
			if m.MediaType != types.OCIManifestSchema1 || len(m.Layers) != 2 {
				t.Fatalf("manifest %s with %d layers", m.MediaType, len(m.Layers))
			}
			for i, d := range m.Layers {
				pd, _ := plainLayers[i].Digest()
				if d.MediaType != types.OCILayer+decrypt.EncryptedSuffix || d.Annotations[decrypt.AnnotationJWE] == "" || d.Digest == pd {
					t.Fatalf("layer %d: %s %s annotations %v: not an encrypted layer", i, d.MediaType, d.Digest, d.Annotations)
				}
				if cfg.RootFS.DiffIDs[i] != wantCfg.RootFS.DiffIDs[i] {
					t.Fatalf("config diffID %d is %s, the plaintext's is %s", i, cfg.RootFS.DiffIDs[i], wantCfg.RootFS.DiffIDs[i])
				}
				l, _ := got.LayerByDigest(d.Digest)
				rc, _ := l.Compressed()
				pr, err := decrypt.Layer(rc, d, [][]byte{priv})
				if err != nil {
					t.Fatal(err)
				}
				zr, err := gzip.NewReader(pr)
				if err != nil {
					t.Fatal(err)
				}
				h := sha256.New()
				if _, err := io.Copy(h, zr); err != nil {
					t.Fatal(err)
				}
				rc.Close()
				if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != wantCfg.RootFS.DiffIDs[i].String() {
					t.Errorf("layer %d decrypts to %s, want diffID %s", i, got, wantCfg.RootFS.DiffIDs[i])
				}
				if _, err := decrypt.Layer(bytes.NewReader(nil), d, [][]byte{mustKey(t)}); !errors.Is(err, decrypt.ErrWrongKey) {
					t.Errorf("layer %d with another key: %v, want ErrWrongKey", i, err)
				}
			}
			if cfg.Config.Cmd[0] != "/bin/true" {
				t.Errorf("config lost: %+v", cfg.Config)
			}

			// The guest's puller, key as a file.
			dir := t.TempDir()
			keyFile := filepath.Join(dir, "key.pem")
			os.WriteFile(keyFile, priv, 0o600) //nolint:errcheck // checked by the pull
			p, err := image.New(image.Config{CacheDir: filepath.Join(dir, "cache"), DecryptionKeys: []string{keyFile}, Transport: rt})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := p.Pull(context.Background(), dst.String(), filepath.Join(dir, "rootfs")); err != nil {
				t.Fatal(err)
			}
			if b, _ := os.ReadFile(filepath.Join(dir, "rootfs", "two")); string(b) != "second layer" {
				t.Errorf("pulled rootfs /two = %q", b)
			}
			other := filepath.Join(dir, "other.pem")
			os.WriteFile(other, mustKey(t), 0o600) //nolint:errcheck // checked by the pull
			p, _ = image.New(image.Config{CacheDir: filepath.Join(dir, "cache2"), DecryptionKeys: []string{other}, Transport: rt})
			if _, err := p.Pull(context.Background(), dst.String(), filepath.Join(dir, "rootfs2")); !errors.Is(err, decrypt.ErrWrongKey) {
				t.Errorf("pull with another key: %v, want ErrWrongKey", err)
			}
		})
	}
}

func mustKey(t *testing.T) []byte {
	t.Helper()
	priv, _, err := encrypt.GenerateKey(encrypt.EC)
	if err != nil {
		t.Fatal(err)
	}
	return priv
}

// TestEncryptRefusesBadInput: keys that are not recipients and layers
// that cannot be encrypted are refused by name.
func TestEncryptRefusesBadInput(t *testing.T) {
	priv, pub, _ := encrypt.GenerateKey(encrypt.EC)
	img, _ := mutate.AppendLayers(empty.Image, tarLayer(t, types.DockerLayer, "a", "b"))
	for _, tc := range []struct {
		name string
		keys [][]byte
		want string
	}{
		{"private key", [][]byte{priv}, "private key"},
		{"garbage", [][]byte{[]byte("not a key")}, "not a public key"},
		{"none", nil, "no recipient"},
	} {
		if _, err := encrypt.Image(img, tc.keys, t.TempDir()); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	enc, err := encrypt.Image(img, [][]byte{pub}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := encrypt.Image(enc, [][]byte{pub}, t.TempDir()); err == nil || !strings.Contains(err.Error(), "already encrypted") {
		t.Errorf("encrypting twice: %v, want 'already encrypted'", err)
	}
}
