package podpolicy

import (
	"context"
	"io"
	"log"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// testRegistry is go-containerregistry's in-memory registry on loopback.
func testRegistry(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func pushImage(t *testing.T, ref string, img v1.Image) {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img, remote.WithContext(context.Background())); err != nil {
		t.Fatal(err)
	}
}

func configured(t *testing.T, cfg v1.Config, platform v1.Platform) v1.Image {
	t.Helper()
	img, err := random.Image(64, 1)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.Config, cf.OS, cf.Architecture = cfg, platform.OS, platform.Architecture
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func TestResolve(t *testing.T) {
	ctx := context.Background()
	host := testRegistry(t)
	amd := configured(t, v1.Config{Entrypoint: []string{"/amd64"}, Env: []string{"A=1"}}, Platform)
	arm := configured(t, v1.Config{Entrypoint: []string{"/arm64"}}, v1.Platform{OS: "linux", Architecture: "arm64"})
	pushImage(t, host+"/app:1", amd)
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &Platform}})
	r, _ := name.ParseReference(host + "/multi:1")
	if err := remote.WriteIndex(r, idx); err != nil {
		t.Fatal(err)
	}
	pushImage(t, host+"/armonly:1", arm)
	amdDigest, _ := amd.Digest()
	idxDigest, _ := idx.Digest()

	res := &Resolver{}
	got, err := res.Resolve(ctx, host+"/app:1")
	if err != nil {
		t.Fatal(err)
	}
	if want := host + "/app@" + amdDigest.String(); got.Ref != want || got.Config.Entrypoint[0] != "/amd64" || got.Config.Env[0] != "A=1" {
		t.Errorf("tag: %+v, want ref %s and the image's config", got, want)
	}
	// An index: its digest is pinned (what the node pulls), the config is
	// linux/amd64's.
	got, err = res.Resolve(ctx, host+"/multi:1")
	if err != nil {
		t.Fatal(err)
	}
	if want := host + "/multi@" + idxDigest.String(); got.Ref != want || got.Config.Entrypoint[0] != "/amd64" {
		t.Errorf("index: ref %s entrypoint %v, want %s and /amd64", got.Ref, got.Config.Entrypoint, want)
	}
	// A digest reference stays as written.
	byDigest := host + "/app@" + amdDigest.String()
	if got, err = res.Resolve(ctx, byDigest); err != nil || got.Ref != byDigest {
		t.Errorf("digest reference: %+v, %v", got, err)
	}
	// A tag and a digest: kept.
	both := host + "/app:1@" + amdDigest.String()
	if got, err = res.Resolve(ctx, both); err != nil || got.Ref != both {
		t.Errorf("tag+digest reference: %+v, %v", got, err)
	}
	if _, err := res.Resolve(ctx, host+"/armonly:1"); err == nil || !strings.Contains(err.Error(), "linux/arm64") {
		t.Errorf("arm64-only image: %v, want a refusal naming its platform", err)
	}
	if _, err := res.Resolve(ctx, host+"/absent:1"); err == nil || !strings.Contains(err.Error(), host+"/absent:1") || !strings.Contains(err.Error(), "--pin signature") {
		t.Errorf("absent image: %v, want a refusal naming it", err)
	}

	// An unreachable registry: refused when pinning digests, the
	// reference kept (and no config) when pinning signatures.
	unreachable := "127.0.0.1:1/app:1"
	if _, err := res.Resolve(ctx, unreachable); err == nil || !strings.Contains(err.Error(), unreachable) {
		t.Errorf("unreachable registry: %v, want a refusal naming %s", err, unreachable)
	}
	sig := &Resolver{Pin: PinSignature}
	if got, err := sig.Resolve(ctx, unreachable); err != nil || got.Ref != unreachable || got.Config != nil {
		t.Errorf("unreachable registry under --pin signature: %+v, %v", got, err)
	}
	if got, err := sig.Resolve(ctx, host+"/app:1"); err != nil || got.Ref != host+"/app:1" || got.Config == nil || got.Digest != amdDigest.String() {
		t.Errorf("--pin signature, reachable: %+v, %v, want the tag kept and the config read", got, err)
	}
}

func TestImagePolicies(t *testing.T) {
	def, err := DefaultImagePolicy([]string{"busybox@sha256:" + strings.Repeat("1", 64), "registry.test:5000/team/app@sha256:" + strings.Repeat("2", 64), "busybox:1"})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"default": [{"type": "reject"}], "transports": {"docker": {"docker.io/library/busybox": [{"type": "insecureAcceptAnything"}], "registry.test:5000/team/app": [{"type": "insecureAcceptAnything"}]}}}`
	if def != want {
		t.Errorf("default image policy\n got  %s\n want %s", def, want)
	}

	signed := `{"default": [{"type": "reject"}], "transports": {"docker": {
		"registry.test/signed": [{"type": "sigstoreSigned", "keyData": "LS0tLS1CRUdJTiBQVUJMSUMgS0VZLS0tLS0K"}],
		"registry.test/open": [{"type": "insecureAcceptAnything"}]}}}`
	if err := RequireSignatures(signed, []string{"registry.test/signed/app:1"}); err != nil {
		t.Errorf("signed scope: %v", err)
	}
	for ref, wantErr := range map[string]string{
		"registry.test/open/app:1": `image registry.test/open/app:1 is pinned by signature but the image policy's scope "registry.test/open" accepts it unsigned`,
		"other.test/app:1":         `image other.test/app:1: the image policy's scope "default" rejects it`,
	} {
		if err := RequireSignatures(signed, []string{ref}); err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("%s: %v, want %q", ref, err, wantErr)
		}
	}
	if err := RequireSignatures("", []string{"a:1"}); err == nil || !strings.Contains(err.Error(), "--image-policy") {
		t.Errorf("no image policy: %v", err)
	}
}
