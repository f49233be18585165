//go:build e2e

package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/veil-runtime/veil/attestation/initdata"
	"github.com/veil-runtime/veil/attestation/kbs"
	"github.com/veil-runtime/veil/attestation/kbs/server"
	attpolicy "github.com/veil-runtime/veil/attestation/policy"
	"github.com/veil-runtime/veil/image/encrypt"
	"github.com/veil-runtime/veil/image/sign"
	"github.com/veil-runtime/veil/tools/e2e/harness"
	"github.com/veil-runtime/veil/tools/e2e/testimages"
)

// runtimeHandlerAnnotation makes containerd's CRI pull a pod's images with
// its handler's snapshotter (veil's, for veil-dev) when the client does
// not name the handler in PullImage (crictl does not; kubelet does with
// the RuntimeClassInImageCriApi feature gate).
const runtimeHandlerAnnotation = "io.containerd.cri.runtime-handler"

// TestGuestPull runs veil-dev pods whose images the guest pulls, verifies
// and decrypts itself (shim/guestpull.go, image/), with containerd on the
// host leaving the layers to the guest (veil's proxy snapshotter):
//
//   - a container runs from an image whose layers the host never fetched
//     or unpacked (containerd's content store lacks the layer, the
//     snapshotter's directories are empty);
//   - an image encrypted by `veil image encrypt`'s code (image/encrypt,
//     every layer, ocicrypt JWE) runs when the key is a resource the
//     in-process veil-kbs (dev mode, sample TEE accepted) releases after
//     attestation, and fails naming the reason when the broker denies the
//     key, when the pod has no key, or when the image policy rejects its
//     repository;
//   - under a sigstoreSigned policy an unsigned image is refused and one
//     signed by `veil image sign`'s code (image/sign) runs; the encrypted
//     image is signed as cosign v3 signs (a Sigstore bundle as an OCI
//     referrer), which a pod with layer keys requires.
//
// It runs when VEIL_E2E_HANDLERS names veil-dev.
func TestGuestPull(t *testing.T) {
	ctx := veilDevTest(t, "veil-dev-guestpull", 20*time.Minute)
	base := registryImage(t, env.Image(testimages.BusyboxImage))

	// The images, pushed to the e2e registry.
	marker := fmt.Sprintf("guest-pulled %d", time.Now().UnixNano())
	markerLayer := tarLayer(t, "marker", marker)
	plainRef := push(t, "guestpull/plain:1", appendLayers(t, base, mutate.Addendum{Layer: markerLayer}))
	// Encrypted and signed by the code behind `veil image encrypt` and
	// `veil image sign`.
	priv, pub, err := encrypt.GenerateKey(encrypt.RSA)
	if err != nil {
		t.Fatal(err)
	}
	secret := "plaintext only in the guest"
	encImage, err := encrypt.Image(appendLayers(t, base, mutate.Addendum{Layer: tarLayer(t, "secret", secret)}), [][]byte{pub}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	encRef := push(t, "guestpull/enc:1", encImage)
	signPriv, cosignPub, err := sign.Keygen()
	if err != nil {
		t.Fatal(err)
	}
	signKey, err := sign.ParsePrivateKey(signPriv)
	if err != nil {
		t.Fatal(err)
	}
	signedRef := push(t, "guestpull/signed/app:1", appendLayers(t, base, mutate.Addendum{Layer: tarLayer(t, "signed", "yes")}))
	signedName, err := name.ParseReference(signedRef, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sign.Sign(signedName, signKey, remote.WithTransport(env.Registry.Transport)); err != nil {
		t.Fatal(err)
	}
	// The encrypted image is signed as cosign v3 does (a Sigstore bundle
	// as an OCI referrer): a pod with layer keys pulls only signed images
	// unless a named scope accepts them (policy.RequireSigned).
	encName, err := name.ParseReference(encRef, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sign.SignBundle(encName, signKey, remote.WithTransport(env.Registry.Transport)); err != nil {
		t.Fatal(err)
	}
	unsignedRef := push(t, "guestpull/signed/unsigned:1", appendLayers(t, base, mutate.Addendum{Layer: tarLayer(t, "signed", "no")}))
	// The same encrypted image, in a repository the policy rejects.
	blockedRef := push(t, "guestpull/blocked:1", encImage)

	broker := startBroker(t, map[string][]byte{"default/image-key/e2e": priv, "default/image-key/denied": priv}, "default/image-key/e2e")

	imagePolicy, _ := json.Marshal(map[string]any{
		"default": []any{map[string]any{"type": "insecureAcceptAnything"}},
		"transports": map[string]any{"docker": map[string]any{
			env.Registry.Host + "/guestpull/signed":  []any{map[string]any{"type": "sigstoreSigned", "keyData": cosignPub}},
			env.Registry.Host + "/guestpull/blocked": []any{map[string]any{"type": "reject"}},
		}},
	})

	encPolicy, _ := json.Marshal(map[string]any{
		"default": []any{map[string]any{"type": "reject"}},
		"transports": map[string]any{"docker": map[string]any{
			env.Registry.Host + "/guestpull/enc": []any{map[string]any{"type": "sigstoreSigned", "keyData": cosignPub}},
		}},
	})

	t.Run("policies: the guest pulls, the host unpacks nothing", func(t *testing.T) {
		pod := guestPullPod(t, ctx, "gp-policy", guestPullInitData("", string(imagePolicy), nil))
		id := startAndWait(t, ctx, pod, "plain", plainRef, "cat /marker; echo; sleep 3600")
		waitLogs(t, ctx, id, marker, time.Minute)

		// containerd never fetched the marker layer, and no snapshot of
		// the veil snapshotter holds a file but the sandbox image's.
		layerDigest, _ := markerLayer.Digest()
		blobs := runOut(t, ctx, env.NetNS.Command(ctx, env.Bin("ctr"), "--address", env.Address, "--namespace", "k8s.io", "content", "ls", "-q"))
		if strings.Contains(blobs, layerDigest.String()) {
			t.Errorf("containerd's content store holds the guest-pulled layer %s", layerDigest)
		}
		if dirs, files, _ := veilSnapshotFiles(t); dirs < 2 || len(files) != 0 {
			t.Errorf("veil snapshotter: %d directories, files %v; want snapshots and no files but the sandbox image's", dirs, files)
		}

		id = startAndWait(t, ctx, pod, "signed", signedRef, "cat /signed; echo; sleep 3600")
		waitLogs(t, ctx, id, "yes", time.Minute)

		for _, tc := range []struct{ name, ref, want string }{
			{"unsigned", unsignedRef, "no sigstore signature found"},
			{"blocked", blockedRef, "reject rejects it"},
			{"encrypted-without-key", encRef, "no decryption key is configured"},
		} {
			_, err := env.StartContainer(ctx, pod, harness.ContainerConfig(tc.name, tc.ref, []string{"true"}, false))
			if err == nil || !strings.Contains(err.Error(), tc.ref) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s: %v, want a refusal naming %s and %q", tc.name, err, tc.ref, tc.want)
			} else {
				t.Logf("%s: %v", tc.name, err)
			}
		}
	})

	t.Run("encrypted image with the key from veil-kbs", func(t *testing.T) {
		pod := guestPullPod(t, ctx, "gp-enc", guestPullInitData(broker, string(encPolicy), []string{"kbs:///default/image-key/e2e"}))
		id := startAndWait(t, ctx, pod, "enc", encRef, "cat /secret; echo; sleep 3600")
		waitLogs(t, ctx, id, secret, time.Minute)
	})

	t.Run("encrypted image, key denied by the broker", func(t *testing.T) {
		pod := guestPullPod(t, ctx, "gp-denied", guestPullInitData(broker, string(encPolicy), []string{"kbs:///default/image-key/denied"}))
		_, err := env.StartContainer(ctx, pod, harness.ContainerConfig("enc", encRef, []string{"true"}, false))
		if err == nil || !strings.Contains(err.Error(), encRef) || !strings.Contains(err.Error(), "broker refused resource default/image-key/denied") {
			t.Fatalf("encrypted image with a denied key: %v, want a refusal naming the image and the denied key", err)
		}
		t.Logf("%v", err)
	})
}

// guestPullInitData is a veil-dev init-data document for guest pull: the
// e2e agent policy, imagePolicy, the registry's guest mirror, and when
// broker is set the broker and layer keys.
func guestPullInitData(broker, imagePolicy string, keys []string) string {
	doc := "version = \"0.1.0\"\nalgorithm = \"sha256\"\n"
	if broker != "" {
		doc += fmt.Sprintf("\n[broker]\nurl = %q\n", broker)
	}
	doc += fmt.Sprintf("\n[agent]\npolicy = '''\n%s'''\n\n[image]\npolicy = '''%s'''\n", harness.VeilDevPolicy, imagePolicy)
	if len(keys) > 0 {
		q := make([]string, len(keys))
		for i, k := range keys {
			q[i] = strconv.Quote(k)
		}
		doc += "keys = [" + strings.Join(q, ", ") + "]\n"
	}
	return doc + env.Registry.GuestImageTable()
}

// guestPullPod starts a veil-dev pod with its own init-data whose images
// containerd pulls with the handler's snapshotter.
func guestPullPod(t *testing.T, ctx context.Context, name, doc string) *harness.Pod {
	t.Helper()
	if _, err := initdata.Parse([]byte(doc)); err != nil {
		t.Fatalf("init-data of %s: %v\n%s", name, err, doc)
	}
	ann, err := initdata.EncodeAnnotation([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	pod, err := env.RunPodWith(ctx, harness.VeilDev, name, func(c map[string]any) {
		c["annotations"] = map[string]string{initdata.Annotation: ann, runtimeHandlerAnnotation: harness.VeilDev}
	})
	if err != nil {
		t.Fatal(err)
	}
	removeLater(t, pod)
	return pod
}

func startAndWait(t *testing.T, ctx context.Context, pod *harness.Pod, name, ref, script string) string {
	t.Helper()
	id, err := env.StartContainer(ctx, pod, harness.ContainerConfig(name, ref, []string{"sh", "-c", script}, false))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.WaitContainer(ctx, id, "CONTAINER_RUNNING", time.Minute); err != nil {
		t.Fatal(err)
	}
	return id
}

func runOut(t *testing.T, ctx context.Context, cmd interface{ Output() ([]byte, error) }) string {
	t.Helper()
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// startBroker runs veil-kbs in dev mode (sample evidence accepted) in the
// environment's network namespace, holding resources and granting only
// granted to the sample TEE; it returns the URL guests reach it at.
func startBroker(t *testing.T, resources map[string][]byte, granted string) string {
	t.Helper()
	store, err := server.OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := store.SetAttestationPolicy(attpolicy.Attestation{Sample: &attpolicy.Sample{}, RequireInitData: true}); err != nil {
		t.Fatal(err)
	}
	if err := store.SetResourcePolicy(attpolicy.Resources{Rules: []attpolicy.ResourceRule{{Resource: granted, Tees: []kbs.Tee{kbs.TeeSample}}}}); err != nil {
		t.Fatal(err)
	}
	for p, data := range resources {
		if err := store.SetResource(p, data); err != nil {
			t.Fatal(err)
		}
	}
	h, err := server.New(server.Config{Store: store, Dev: true})
	if err != nil {
		t.Fatal(err)
	}
	url, stop, err := env.ServeOnBridge(h)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return url
}

// --- images ---

func registryImage(t *testing.T, ref string) v1.Image {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(r, remote.WithTransport(env.Registry.Transport))
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// push writes img as repo:tag to the e2e registry and returns its name.
func push(t *testing.T, repoTag string, img v1.Image) string {
	t.Helper()
	ref := env.Image(repoTag)
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img, remote.WithTransport(env.Registry.Transport)); err != nil {
		t.Fatalf("pushing %s: %v", ref, err)
	}
	return ref
}

func appendLayers(t *testing.T, base v1.Image, adds ...mutate.Addendum) v1.Image {
	t.Helper()
	img, err := mutate.Append(base, adds...)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// tarLayer is a gzip layer with one file at the root.
func tarLayer(t *testing.T, file, body string) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: file, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body)), ModTime: time.Unix(1700000000, 0)}); err != nil {
		t.Fatal(err)
	}
	tw.Write([]byte(body)) //nolint:errcheck // in memory
	tw.Close()
	raw := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(raw)), nil }, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	return l
}
