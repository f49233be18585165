package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/veil-runtime/veil/attestation/initdata"
	"github.com/veil-runtime/veil/guest-agent/policy"
)

// policyManifest is the pod of the round trip: command and args with a
// $(VAR), a configMap and an emptyDir volume, logs readable.
const policyManifest = `apiVersion: v1
kind: Pod
metadata:
  name: web
  annotations:
    io.veil.policy/allow-read-output: "true"
spec:
  containers:
  - name: app
    image: REGISTRY/app:1
    command: ["sh", "-c"]
    args: ["echo $(GREETING); sleep 3600"]
    env:
    - {name: GREETING, value: hello}
    volumeMounts:
    - {name: config, mountPath: /etc/app}
    - {name: scratch, mountPath: /scratch}
  volumes:
  - {name: config, configMap: {name: cfg}}
  - {name: scratch, emptyDir: {}}
`

// imageEnv is the test image's environment.
var imageEnv = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8"}

// pushTestImage serves an in-memory registry on loopback holding app:1
// and other:1 and returns its host.
func pushTestImage(t *testing.T) (host string, digests map[string]string) {
	t.Helper()
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	host = strings.TrimPrefix(srv.URL, "http://")
	digests = map[string]string{}
	for _, repo := range []string{"app", "other"} {
		img, err := random.Image(128, 1)
		if err != nil {
			t.Fatal(err)
		}
		cf, _ := img.ConfigFile()
		cf = cf.DeepCopy()
		cf.OS, cf.Architecture = "linux", "amd64"
		cf.Config = v1.Config{Cmd: []string{"sh"}, Env: imageEnv}
		if img, err = mutate.ConfigFile(img, cf); err != nil {
			t.Fatal(err)
		}
		ref, _ := name.ParseReference(host + "/" + repo + ":1")
		if err := remote.Write(ref, img); err != nil {
			t.Fatal(err)
		}
		d, _ := img.Digest()
		digests[repo] = d.String()
	}
	return host, digests
}

func TestPolicyGenerateAndCheck(t *testing.T) {
	host, digests := pushTestImage(t)
	dir := t.TempDir()
	manifest := filepath.Join(dir, "pod.yaml")
	if err := os.WriteFile(manifest, []byte(strings.ReplaceAll(policyManifest, "REGISTRY", host)), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "initdata.toml")
	var stdout, stderr bytes.Buffer
	if err := policyGenerate(context.Background(), []string{"-f", manifest, "--insecure-registry", host, "--broker-url", "https://kbs.example", "-o", out}, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	pinned := host + "/app@" + digests["app"]
	if !strings.Contains(stderr.String(), "image "+host+"/app:1 is bound as "+pinned) {
		t.Errorf("generate did not say which reference the pod must use:\n%s", stderr.String())
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	line := strings.TrimSpace(stdout.String()[strings.LastIndex(stdout.String(), "\n"+initdata.Annotation+": ")+1:])
	ann, ok := strings.CutPrefix(line, initdata.Annotation+": ")
	if !ok {
		t.Fatalf("no annotation line in:\n%s", stdout.String())
	}
	if doc, err := initdata.DecodeAnnotation(ann); err != nil || !bytes.Equal(doc, raw) {
		t.Fatalf("the annotation does not hold the written document (%v)", err)
	}
	d, err := initdata.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	p, err := policy.Parse(d.Agent.Policy)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Containers) != 1 || p.Containers[0].Image != pinned || !p.AllowReadOutput || d.Broker.URL != "https://kbs.example" {
		t.Fatalf("generated policy %+v, broker %q", p, d.Broker.URL)
	}
	if want := `{"default": [{"type": "reject"}], "transports": {"docker": {"` + host + `/app": [{"type": "insecureAcceptAnything"}]}}}`; d.Image.Policy != want {
		t.Errorf("image policy %s, want %s", d.Image.Policy, want)
	}

	// The spec containerd writes for the pod (kubelet's CRI request with
	// the pinned image) is allowed; each change the host could make is
	// denied naming the field.
	check := func(spec *specs.Spec) error {
		t.Helper()
		b, err := json.Marshal(spec)
		if err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(t.TempDir(), "config.json")
		if err := os.WriteFile(f, b, 0o644); err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		err = policyCheck([]string{"--initdata", filepath.Join(dir, "initdata.toml"), "--spec", f}, &out)
		if err == nil && !strings.HasPrefix(out.String(), "allowed: container app") {
			t.Errorf("check output %q", out.String())
		}
		return err
	}
	if err := check(criSpec(t, pinned, nil)); err != nil {
		t.Fatalf("the spec containerd builds from the manifest: %v", err)
	}
	for _, tc := range []struct {
		name, want string
		edit       func(*specs.Spec)
	}{
		{"changed arg", "rule containers[app].args", func(s *specs.Spec) { s.Process.Args[2] = "echo hello; nc -l -p 4444 -e sh" }},
		{"extra env", "rule containers[app].env", func(s *specs.Spec) { s.Process.Env = append(s.Process.Env, "LD_PRELOAD=/scratch/evil.so") }},
		{"extra mount", "rule containers[app].mounts", func(s *specs.Spec) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/usr/lib", Type: "bind", Source: "/var/lib/kubelet/pods/uid/volumes/kubernetes.io~empty-dir/evil", Options: []string{"rbind"}})
		}},
		// Refused already when the shim asks the guest to pull it.
		{"other image", "PullImage " + host + "/other@" + digests["other"] + ": rule image", func(s *specs.Spec) {
			s.Annotations[imageNameAnnotation] = host + "/other@" + digests["other"]
		}},
	} {
		err := check(criSpec(t, pinned, tc.edit))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want a denial naming %q", tc.name, err, tc.want)
		}
	}
}

func TestPolicyGenerateSeveralWorkloads(t *testing.T) {
	host, _ := pushTestImage(t)
	dir := t.TempDir()
	m := filepath.Join(dir, "m.yaml")
	two := strings.ReplaceAll(policyManifest, "REGISTRY", host) + "---\napiVersion: batch/v1\nkind: Job\nmetadata: {name: once}\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{name: c, image: " + host + "/other:1, command: [\"true\"]}]\n"
	if err := os.WriteFile(m, []byte(two), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if err := policyGenerate(context.Background(), []string{"-f", m}, &stdout, &stderr); err == nil || !strings.Contains(err.Error(), "2 workloads") {
		t.Errorf("two workloads without -o: %v", err)
	}
	if err := policyGenerate(context.Background(), []string{"-f", m, "-o", filepath.Join(dir, "initdata.toml")}, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"initdata-pod-web.toml", "initdata-job-once.toml"} {
		raw, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := initdata.Parse(raw); err != nil {
			t.Errorf("%s: %v", f, err)
		}
		if !strings.Contains(stdout.String(), "-> "+filepath.Join(dir, f)) {
			t.Errorf("output does not name %s:\n%s", f, stdout.String())
		}
	}
	// --pin signature without an image policy demanding one is refused.
	err := policyGenerate(context.Background(), []string{"-f", m, "-o", filepath.Join(dir, "x.toml"), "--pin", "signature"}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "--image-policy") {
		t.Errorf("--pin signature without an image policy: %v", err)
	}
	// An unreachable registry is refused naming the image.
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c, image: 127.0.0.1:1/gone:1}]\n"), 0o644)
	if err := policyGenerate(context.Background(), []string{"-f", bad}, &stdout, &stderr); err == nil || !strings.Contains(err.Error(), "127.0.0.1:1/gone:1") {
		t.Errorf("unreachable registry: %v", err)
	}
}

func TestPolicyCheckReadsCrictlInspect(t *testing.T) {
	spec := criSpec(t, "registry.test/app@sha256:"+strings.Repeat("a", 64), nil)
	inspect, _ := json.Marshal(map[string]any{"status": map[string]any{"id": "x"}, "info": map[string]any{"runtimeSpec": spec}})
	got, err := runtimeSpec(inspect)
	if err != nil || got.Process == nil || got.Annotations[containerNameAnnotation] != "app" {
		t.Fatalf("crictl inspect output: %+v, %v", got, err)
	}
	if _, err := runtimeSpec([]byte(`{"info": {}}`)); err == nil {
		t.Error("a document without a process was taken for a spec")
	}
}

const imageNameAnnotation = "io.kubernetes.cri.image-name"

// criSpec is the OCI spec containerd's CRI writes for policyManifest's
// container as kubelet asks for it: containerd's default spec, the args,
// env (PATH, HOSTNAME, the image's, kubelet's with the API server's
// service variables), kubelet's masked and read-only paths, the CRI's
// binds and the pod's volumes from kubelet's directories, and the CRI
// annotations; edit (if any) then changes it.
func criSpec(t *testing.T, image string, edit func(*specs.Spec)) *specs.Spec {
	t.Helper()
	const pod = "/var/lib/kubelet/pods/0d1e"
	env := append(append([]string{}, imageEnv...), "GREETING=hello",
		"KUBERNETES_SERVICE_HOST=10.96.0.1", "KUBERNETES_SERVICE_PORT=443", "KUBERNETES_SERVICE_PORT_HTTPS=443",
		"KUBERNETES_PORT=tcp://10.96.0.1:443", "KUBERNETES_PORT_443_TCP=tcp://10.96.0.1:443",
		"KUBERNETES_PORT_443_TCP_PROTO=tcp", "KUBERNETES_PORT_443_TCP_PORT=443", "KUBERNETES_PORT_443_TCP_ADDR=10.96.0.1")
	binds := []specs.Mount{
		{Destination: "/etc/app", Source: pod + "/volumes/kubernetes.io~configmap/config", Options: []string{"rbind", "rprivate", "ro"}},
		{Destination: "/scratch", Source: pod + "/volumes/kubernetes.io~empty-dir/scratch", Options: []string{"rbind", "rprivate", "rw"}},
		{Destination: "/var/run/secrets/kubernetes.io/serviceaccount", Source: pod + "/volumes/kubernetes.io~projected/kube-api-access-7q2x", Options: []string{"rbind", "rprivate", "ro"}},
		{Destination: "/etc/hosts", Source: pod + "/etc-hosts", Options: []string{"rbind", "rprivate", "rw"}},
		{Destination: "/dev/termination-log", Source: pod + "/containers/app/5a6b7c8d", Options: []string{"rbind", "rprivate", "rw"}},
		{Destination: "/etc/hostname", Source: "/var/lib/containerd/io.containerd.grpc.v1.cri/sandboxes/sb/hostname", Options: []string{"rbind", "rprivate", "rw"}},
		{Destination: "/etc/resolv.conf", Source: "/var/lib/containerd/io.containerd.grpc.v1.cri/sandboxes/sb/resolv.conf", Options: []string{"rbind", "rprivate", "rw"}},
		{Destination: "/dev/shm", Source: "/run/containerd/io.containerd.grpc.v1.cri/sandboxes/sb/shm", Options: []string{"rbind", "rprivate", "rw"}},
	}
	for i := range binds {
		binds[i].Type = "bind"
	}
	spec, err := oci.GenerateSpecWithPlatform(namespaces.WithNamespace(context.Background(), "k8s.io"), nil, "linux/amd64", &containers.Container{ID: "c1"},
		oci.WithoutRunMount,
		oci.WithProcessArgs("sh", "-c", "echo hello; sleep 3600"),
		oci.WithDefaultPathEnv,
		oci.WithEnv([]string{"HOSTNAME=web"}),
		oci.WithEnv(env),
		oci.WithoutMounts("/dev/shm"),
		oci.WithMounts(binds),
		oci.WithMaskedPaths([]string{"/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap"}),
		oci.WithReadonlyPaths([]string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}),
		func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
			s.Process.User.AdditionalGids = []uint32{0}
			return nil
		},
		oci.WithAnnotations(map[string]string{
			"io.kubernetes.cri.container-type": "container",
			containerNameAnnotation:            "app",
			imageNameAnnotation:                image,
			"io.kubernetes.cri.sandbox-id":     "sb",
			"io.kubernetes.cri.sandbox-name":   "web",
		}),
	)
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(spec)
	}
	return spec
}
