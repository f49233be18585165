package main

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
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
	"github.com/veil-runtime/veil/tools/e2e/harness"
	"github.com/veil-runtime/veil/tools/e2e/testimages"
)

// demoKey is the broker resource holding the image's private key.
const demoKey = "default/image-key/demo"

// secret is in the encrypted image's top layer; only the guest sees it.
const secret = "decrypted inside the guest"

// encryptedDemo runs a veil-dev pod whose image `veil image encrypt`'s
// code (image/encrypt) encrypted for a fresh key held by an in-process
// veil-kbs (dev mode: the sample TEE's evidence is accepted) on the
// bridge: first with a resource policy releasing the key to the sample
// TEE, then, for the same pod, with a policy that denies it. It prints
// what the container and the broker said.
func encryptedDemo(ctx context.Context, env *harness.Env, w io.Writer) error {
	start := time.Now()
	ref, priv, err := pushEncrypted(env)
	if err != nil {
		return err
	}
	logs := &brokerLog{}
	store, url, stopBroker, err := startBroker(env, priv, logs)
	if err != nil {
		return err
	}
	defer stopBroker()
	fmt.Fprintf(w, "\n== veil-dev: encrypted image ==\n%s: every layer encrypted with ocicrypt (veil image encrypt) for a key only veil-kbs at %s holds as %s\n", ref, url, demoKey)

	allow := attpolicy.Resources{Rules: []attpolicy.ResourceRule{{Resource: demoKey, Tees: []kbs.Tee{kbs.TeeSample}}}}
	if err := store.SetResourcePolicy(allow); err != nil {
		return err
	}
	fmt.Fprintf(w, "\n-- resource policy releases %s to attested sample TEEs --\n", demoKey)
	out, err := runEncrypted(ctx, env, "demo-enc", ref, url)
	if err != nil {
		return fmt.Errorf("encrypted image with the key released: %w\nbroker:\n%s", err, logs.take())
	}
	fmt.Fprintf(w, "broker:\n%scontainer: %s\n", logs.take(), out)

	// No rule for the key: the broker refuses it after attestation.
	if err := store.SetResourcePolicy(attpolicy.Resources{Rules: []attpolicy.ResourceRule{{Resource: "default/other/*", Tees: []kbs.Tee{kbs.TeeSample}}}}); err != nil {
		return err
	}
	fmt.Fprintf(w, "\n-- resource policy no longer names %s --\n", demoKey)
	_, err = runEncrypted(ctx, env, "demo-enc-denied", ref, url)
	if err == nil {
		return fmt.Errorf("the encrypted image ran although the broker's policy denies %s", demoKey)
	}
	if !strings.Contains(err.Error(), "broker refused resource "+demoKey) {
		return fmt.Errorf("the encrypted image failed, but not because the key was denied: %w", err)
	}
	fmt.Fprintf(w, "broker:\n%spod: %s\n", logs.take(), reason(err))
	fmt.Fprintf(w, "\nveil-dev encrypted image demo: %s\n", time.Since(start).Round(time.Millisecond))
	return nil
}

// pushEncrypted pushes busybox plus a layer holding the secret, every
// layer encrypted for a new key, and returns its reference and the
// private key.
func pushEncrypted(env *harness.Env) (string, []byte, error) {
	opts := remote.WithTransport(env.Registry.Transport)
	base, err := name.ParseReference(env.Image(testimages.BusyboxImage), name.Insecure)
	if err != nil {
		return "", nil, err
	}
	img, err := remote.Image(base, opts)
	if err != nil {
		return "", nil, fmt.Errorf("reading %s: %w", base, err)
	}
	layer, err := fileLayer("secret", secret)
	if err != nil {
		return "", nil, err
	}
	if img, err = mutate.AppendLayers(img, layer); err != nil {
		return "", nil, err
	}
	priv, pub, err := encrypt.GenerateKey(encrypt.EC)
	if err != nil {
		return "", nil, err
	}
	tmp, err := os.MkdirTemp("", "veil-demo-encrypt-")
	if err != nil {
		return "", nil, err
	}
	defer os.RemoveAll(tmp)
	enc, err := encrypt.Image(img, [][]byte{pub}, tmp)
	if err != nil {
		return "", nil, err
	}
	ref := env.Image("demo/encrypted:1")
	dst, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return "", nil, err
	}
	if err := remote.Write(dst, enc, opts); err != nil {
		return "", nil, fmt.Errorf("pushing %s: %w", ref, err)
	}
	return ref, priv, nil
}

func fileLayer(file, body string) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: file, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body)), ModTime: time.Unix(1700000000, 0)}); err != nil {
		return nil, err
	}
	if _, err := tw.Write([]byte(body)); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	raw := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(raw)), nil }, tarball.WithMediaType(types.OCILayer))
}

// startBroker runs veil-kbs in dev mode in the environment's network
// namespace, holding the key; guests reach it on the bridge.
func startBroker(env *harness.Env, key []byte, logs *brokerLog) (*server.Store, string, func(), error) {
	dir, err := os.MkdirTemp("", "veil-demo-kbs-")
	if err != nil {
		return nil, "", nil, err
	}
	fail := func(err error) (*server.Store, string, func(), error) {
		os.RemoveAll(dir)
		return nil, "", nil, err
	}
	store, err := server.OpenStore(dir)
	if err != nil {
		return fail(err)
	}
	if err := store.SetAttestationPolicy(attpolicy.Attestation{Sample: &attpolicy.Sample{}, RequireInitData: true}); err != nil {
		return fail(err)
	}
	if err := store.SetResource(demoKey, key); err != nil {
		return fail(err)
	}
	h, err := server.New(server.Config{Store: store, Dev: true, Log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			switch a.Key {
			case slog.TimeKey, "remote", "session", "insecure", "until":
				return slog.Attr{}
			}
			return a
		},
	}))})
	if err != nil {
		return fail(err)
	}
	url, stopServer, err := env.ServeOnBridge(h)
	if err != nil {
		return fail(err)
	}
	stop := func() {
		stopServer()
		os.RemoveAll(dir)
	}
	return store, url, stop, nil
}

// runEncrypted runs the encrypted image in a new veil-dev pod whose
// init-data names the broker and the key, and returns what the container
// printed.
func runEncrypted(ctx context.Context, env *harness.Env, podName, ref, brokerURL string) (string, error) {
	doc := fmt.Sprintf("version = \"0.1.0\"\nalgorithm = \"sha256\"\n\n[broker]\nurl = %q\n\n[agent]\npolicy = '''\n%s'''\n\n[image]\npolicy = '''%s'''\nkeys = [%q]\n%s",
		brokerURL, harness.VeilDevPolicy, harness.AcceptRegistryImagePolicy(env.Registry.Host), "kbs:///"+demoKey, env.Registry.GuestImageTable())
	if _, err := initdata.Parse([]byte(doc)); err != nil {
		return "", fmt.Errorf("init-data: %w", err)
	}
	ann, err := initdata.EncodeAnnotation([]byte(doc))
	if err != nil {
		return "", err
	}
	pod, err := env.RunPodWith(ctx, harness.VeilDev, podName, func(c map[string]any) {
		// The CRI plugin pulls with veil-dev's snapshotter (the guest
		// pulls) when the client does not name the handler.
		c["annotations"] = map[string]string{initdata.Annotation: ann, "io.containerd.cri.runtime-handler": harness.VeilDev}
	})
	if err != nil {
		return "", err
	}
	defer env.RemovePod(context.WithoutCancel(ctx), pod) //nolint:errcheck // env.Close removes it otherwise
	id, err := env.StartContainer(ctx, pod, harness.ContainerConfig("secret", ref, []string{"cat", "/secret"}, false))
	if err != nil {
		return "", err
	}
	if _, err := env.WaitContainer(ctx, id, "CONTAINER_EXITED", 5*time.Minute); err != nil {
		return "", err
	}
	return env.Run(ctx, env.Crictl(ctx, "logs", id))
}

// brokerLog keeps the broker's decision lines about attestation and
// resources.
type brokerLog struct {
	mu    sync.Mutex
	lines []string
}

func (b *brokerLog) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, l := range strings.Split(strings.TrimSpace(string(p)), "\n") {
		if strings.Contains(l, "attestation") || strings.Contains(l, "resource") {
			b.lines = append(b.lines, "  "+l+"\n")
		}
	}
	return len(p), nil
}

// take returns the lines logged since the last call.
func (b *brokerLog) take() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := strings.Join(b.lines, "")
	b.lines = nil
	return s
}

// reason is the runtime's message in crictl's error output: the gRPC
// status description, without crictl's command line and log prefixes.
func reason(err error) string {
	s := strings.Join(strings.Fields(err.Error()), " ")
	if _, desc, ok := strings.Cut(s, "desc = "); ok {
		s, _, _ = strings.Cut(desc, `"`)
	}
	return s
}
