package sign_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/veil-runtime/veil/image"
	"github.com/veil-runtime/veil/image/policy"
	"github.com/veil-runtime/veil/image/sign"
)

func startRegistry(t *testing.T) (string, http.RoundTripper) {
	t.Helper()
	srv := httptest.NewUnstartedServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "https://"), srv.Client().Transport
}

func pushRandom(t *testing.T, ref name.Reference, rt http.RoundTripper) v1.Image {
	t.Helper()
	img, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img, remote.WithTransport(rt)); err != nil {
		t.Fatal(err)
	}
	return img
}

// pull runs the guest's puller under a sigstoreSigned policy for pub.
func pull(t *testing.T, rt http.RoundTripper, pub []byte, ref string) error {
	t.Helper()
	doc, _ := json.Marshal(map[string]any{"default": []any{map[string]any{"type": "sigstoreSigned", "keyData": pub}}})
	pol, err := policy.Parse(doc)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p, err := image.New(image.Config{CacheDir: filepath.Join(dir, "cache"), Policy: pol, Transport: rt})
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Pull(context.Background(), ref, filepath.Join(dir, "rootfs"))
	return err
}

// TestSignVerifies: a signature made by Sign with a Keygen key passes the
// guest's sigstoreSigned check (image/policy through image.Puller); the
// image under another key, or the tag moved to a different manifest
// after signing, is refused.
func TestSignVerifies(t *testing.T) {
	host, rt := startRegistry(t)
	ref, _ := name.ParseReference(host + "/app/signed:1")
	pushRandom(t, ref, rt)
	privPEM, pubPEM, err := sign.Keygen()
	if err != nil {
		t.Fatal(err)
	}
	key, err := sign.ParsePrivateKey(privPEM)
	if err != nil {
		t.Fatal(err)
	}
	if err := pull(t, rt, pubPEM, ref.String()); err == nil || !strings.Contains(err.Error(), "no sigstore signature found") {
		t.Fatalf("unsigned image: %v, want 'no sigstore signature found'", err)
	}
	res, err := sign.Sign(ref, key, remote.WithTransport(rt))
	if err != nil {
		t.Fatal(err)
	}
	if res.Tag.TagStr() != policy.SignatureTag(res.Digest.String()) {
		t.Errorf("signature tag %s", res.Tag)
	}
	if err := pull(t, rt, pubPEM, ref.String()); err != nil {
		t.Fatalf("signed image refused: %v", err)
	}
	// By digest, too (identity matched by repository).
	if err := pull(t, rt, pubPEM, host+"/app/signed@"+res.Digest.String()); err != nil {
		t.Fatalf("signed image by digest refused: %v", err)
	}
	// A second signature with another key is added, not replacing.
	_, pub2, _ := sign.Keygen()
	if err := pull(t, rt, pub2, ref.String()); err == nil || !strings.Contains(err.Error(), "not signed by the policy's key") {
		t.Fatalf("image under another key: %v, want 'not signed by the policy's key'", err)
	}
	priv2, pub2, _ := sign.Keygen()
	key2, _ := sign.ParsePrivateKey(priv2)
	if _, err := sign.Sign(ref, key2, remote.WithTransport(rt)); err != nil {
		t.Fatal(err)
	}
	sigImg, _ := remote.Image(res.Tag, remote.WithTransport(rt))
	if m, _ := sigImg.Manifest(); len(m.Layers) != 2 {
		t.Errorf("signature manifest has %d layers after two signatures, want 2", len(m.Layers))
	}
	for _, pub := range [][]byte{pubPEM, pub2} {
		if err := pull(t, rt, pub, ref.String()); err != nil {
			t.Errorf("after the second signature: %v", err)
		}
	}

	// The tag now names a tampered manifest (an annotation added): its
	// digest has no signature; given the old signature it does not verify.
	tampered := mutate.Annotations(mustImage(t, ref, rt), map[string]string{"x": "y"}).(v1.Image)
	if err := remote.Write(ref, tampered, remote.WithTransport(rt)); err != nil {
		t.Fatal(err)
	}
	if err := pull(t, rt, pubPEM, ref.String()); !errors.Is(err, policy.ErrRejected) || !strings.Contains(err.Error(), "no sigstore signature found") {
		t.Errorf("tampered manifest: %v, want a rejection", err)
	}
	td, _ := tampered.Digest()
	old, _ := remote.Image(res.Tag, remote.WithTransport(rt))
	if err := remote.Write(ref.Context().Tag(policy.SignatureTag(td.String())), old, remote.WithTransport(rt)); err != nil {
		t.Fatal(err)
	}
	if err := pull(t, rt, pubPEM, ref.String()); !errors.Is(err, policy.ErrRejected) || !strings.Contains(err.Error(), "signature is for manifest "+res.Digest.String()) {
		t.Errorf("tampered manifest with the old signature copied: %v, want 'signature is for manifest'", err)
	}
}

func mustImage(t *testing.T, ref name.Reference, rt http.RoundTripper) v1.Image {
	t.Helper()
	img, err := remote.Image(ref, remote.WithTransport(rt))
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// TestParsePrivateKeyRefuses names what is wrong with a key file.
func TestParsePrivateKeyRefuses(t *testing.T) {
	_, pub, _ := sign.Keygen()
	for _, tc := range []struct {
		name, key, want string
	}{
		{"public key", string(pub), `"PUBLIC KEY" is not a private key`},
		{"cosign key", "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n", "cosign's encrypted key format"},
		{"garbage", "nope", "not a PEM private key"},
	} {
		if _, err := sign.ParsePrivateKey([]byte(tc.key)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}
