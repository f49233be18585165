package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/veil-runtime/veil/image"
	"github.com/veil-runtime/veil/image/decrypt"
	"github.com/veil-runtime/veil/image/policy"
)

// plainRegistry serves an in-process registry over plain HTTP (what
// --insecure is for); pushes to readonly/ are refused.
func plainRegistry(t *testing.T) string {
	t.Helper()
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/v2/readonly/") && r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			io.WriteString(w, `{"errors":[{"code":"DENIED","message":"repository is read-only"}]}`) //nolint:errcheck // test server
			return
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func runImage(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := imageCmd(args, &out)
	return out.String(), err
}

// TestImageEncryptSignCLI drives `veil image` against a plain-HTTP
// registry: encrypt (from the registry and from an OCI layout) with a
// generated key, which the guest puller then uses; keygen and sign, which
// the guest's sigstoreSigned policy accepts; and the errors for a missing
// image, a bad key and a refused push.
func TestImageEncryptSignCLI(t *testing.T) {
	host := plainRegistry(t)
	dir := t.TempDir()
	src := host + "/app/plain:1"
	img, err := random.Image(512, 2)
	if err != nil {
		t.Fatal(err)
	}
	srcRef, _ := name.ParseReference(src, name.Insecure)
	if err := remote.Write(srcRef, img, remote.WithTransport(http.DefaultTransport)); err != nil {
		t.Fatal(err)
	}
	lp, err := layout.Write(filepath.Join(dir, "layout"), empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := lp.AppendImage(img); err != nil {
		t.Fatal(err)
	}

	key := filepath.Join(dir, "image.key")
	out, err := runImage(t, "encrypt", "--insecure", "--generate-key", key, "--key-type", "ec", "--resource", "default/image-key/app", src, host+"/app/enc:1")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"pushed " + host + "/app/enc@sha256:", "veil-kbs resource set", "default/image-key/app " + key, "--image-key kbs:///default/image-key/app"} {
		if !strings.Contains(out, want) {
			t.Errorf("encrypt output lacks %q:\n%s", want, out)
		}
	}
	if fi, err := os.Stat(key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("generated key: %v %v", fi, err)
	}
	if _, err := runImage(t, "encrypt", "--insecure", "--recipient", "jwe:"+key+".pub", filepath.Join(dir, "layout"), host+"/app/enc-layout:1"); err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{host + "/app/enc:1", host + "/app/enc-layout:1"} {
		r, _ := name.ParseReference(ref, name.Insecure)
		enc, err := remote.Image(r)
		if err != nil {
			t.Fatal(err)
		}
		m, _ := enc.Manifest()
		for _, l := range m.Layers {
			if !decrypt.IsEncrypted(string(l.MediaType)) {
				t.Errorf("%s: layer %s is %s", ref, l.Digest, l.MediaType)
			}
		}
		// The guest's puller decrypts it with the private key.
		pd := t.TempDir()
		p, _ := image.New(image.Config{CacheDir: filepath.Join(pd, "c"), DecryptionKeys: []string{key}, Transport: http.DefaultTransport})
		if _, err := p.Pull(context.Background(), ref, filepath.Join(pd, "rootfs")); err != nil {
			t.Errorf("pulling %s: %v", ref, err)
		}
	}

	// keygen + sign, verified by image/policy.
	prefix := filepath.Join(dir, "cosign")
	if _, err := runImage(t, "keygen", "-o", prefix); err != nil {
		t.Fatal(err)
	}
	if _, err := runImage(t, "keygen", "-o", prefix); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Errorf("keygen over an existing key: %v", err)
	}
	if out, err = runImage(t, "sign", "--insecure", "--format", "legacy", "--key", prefix+".key", src); err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	if !strings.Contains(out, d.String()) {
		t.Errorf("sign output %q does not name %s", out, d)
	}
	pub, _ := os.ReadFile(prefix + ".pub")
	sigImg, err := remote.Image(srcRef.Context().Tag(policy.SignatureTag(d.String())))
	if err != nil {
		t.Fatal(err)
	}
	sm, _ := sigImg.Manifest()
	layer, _ := sigImg.LayerByDigest(sm.Layers[0].Digest)
	rc, _ := layer.Compressed()
	payload, _ := io.ReadAll(rc)
	rc.Close()
	sig := sm.Layers[0].Annotations[policy.AnnotationSignature]
	pol, _ := policy.Parse(mustJSON(t, map[string]any{"default": []any{map[string]any{"type": "sigstoreSigned", "keyData": pub}}}))
	check := func(s []policy.Signature) error {
		return pol.Check(context.Background(), policy.Image{Ref: srcRef, Digest: d.String(), Signatures: func(context.Context) ([]policy.Signature, error) { return s, nil }}, nil)
	}
	raw := decodeB64(t, sig)
	if err := check([]policy.Signature{{Payload: payload, Signature: raw}}); err != nil {
		t.Errorf("signature made by veil image sign: %v", err)
	}
	tampered := bytes.Replace(payload, []byte(d.Hex[:8]), []byte("00000000"), 1)
	if err := check([]policy.Signature{{Payload: tampered, Signature: raw}}); err == nil {
		t.Error("a tampered payload verified")
	}

	// The default format, cosign v3's bundle as an OCI referrer, with
	// another key: the guest's puller accepts the image under a policy
	// for that key, which the legacy signature cannot satisfy.
	prefix2 := filepath.Join(dir, "cosign2")
	if _, err := runImage(t, "keygen", "-o", prefix2); err != nil {
		t.Fatal(err)
	}
	if out, err = runImage(t, "sign", "--insecure", "--key", prefix2+".key", src); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, d.String()) || !strings.Contains(out, "Sigstore bundle in referrer") {
		t.Errorf("sign output %q does not name %s and the referrer", out, d)
	}
	pub2, _ := os.ReadFile(prefix2 + ".pub")
	for name, pk := range map[string][]byte{"bundle key": pub2, "legacy key": pub} {
		pol, _ := policy.Parse(mustJSON(t, map[string]any{"default": []any{map[string]any{"type": "sigstoreSigned", "keyData": pk}}}))
		pd := t.TempDir()
		p, _ := image.New(image.Config{CacheDir: filepath.Join(pd, "c"), Policy: pol, Transport: http.DefaultTransport})
		if _, err := p.Pull(context.Background(), src, filepath.Join(pd, "rootfs")); err != nil {
			t.Errorf("pulling %s signed with the %s: %v", src, name, err)
		}
	}

	// Errors name what was wrong.
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no such image", []string{"encrypt", "--insecure", "--recipient", "jwe:" + key + ".pub", host + "/app/missing:1", host + "/app/x:1"}, "reading image " + host + "/app/missing:1"},
		{"private key as recipient", []string{"encrypt", "--insecure", "--recipient", "jwe:" + key, src, host + "/app/x:1"}, "private key"},
		{"not a key", []string{"encrypt", "--insecure", "--recipient", "jwe:" + filepath.Join(dir, "layout", "index.json"), src, host + "/app/x:1"}, "not a public key"},
		{"no recipient", []string{"encrypt", "--insecure", src, host + "/app/x:1"}, "no recipient"},
		{"push refused", []string{"encrypt", "--insecure", "--recipient", "jwe:" + key + ".pub", src, host + "/readonly/x:1"}, "pushing " + host + "/readonly/x:1"},
		{"sign with a public key", []string{"sign", "--insecure", "--key", prefix + ".pub", src}, `"PUBLIC KEY" is not a private key`},
		{"sign a missing image", []string{"sign", "--insecure", "--key", prefix + ".key", host + "/app/missing:1"}, "resolving " + host + "/app/missing:1"},
		{"sign in an unknown format", []string{"sign", "--insecure", "--format", "v2", "--key", prefix + ".key", src}, `--format "v2": want bundle or legacy`},
	} {
		if _, err := runImage(t, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		} else {
			t.Logf("%s: %v", tc.name, err)
		}
	}
	gen := filepath.Join(dir, "failed.key")
	if _, err := runImage(t, "encrypt", "--insecure", "--generate-key", gen, src, host+"/readonly/y:1"); err == nil {
		t.Error("push to readonly/ succeeded")
	}
	if _, err := os.Stat(gen); !os.IsNotExist(err) {
		t.Errorf("a failed encrypt left its generated key: %v", err)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func decodeB64(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
