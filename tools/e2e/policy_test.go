//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/veil-runtime/veil/attestation/initdata"
	"github.com/veil-runtime/veil/attestation/podpolicy"
	"github.com/veil-runtime/veil/tools/e2e/harness"
	"github.com/veil-runtime/veil/tools/e2e/testimages"
)

// kubeletMaskedPaths and kubeletReadonlyPaths are what kubelet sends in
// every container's security context (its securitycontext defaults).
var (
	kubeletMaskedPaths = []string{"/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
		"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap"}
	kubeletReadonlyPaths = []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}
)

// TestPolicyGenerate runs a pod whose spec `veil policy generate` bound
// into its init-data (attestation/podpolicy, from
// testdata/policy-pod.yaml) under veil-dev, with the CRI requests kubelet
// would send for that manifest: the container runs, its named exec is
// allowed and any other refused; the same pod with one changed arg, one
// extra env var, one extra mount or another image digest is refused by
// the guest agent naming the field. It runs when VEIL_E2E_HANDLERS names
// veil-dev.
func TestPolicyGenerate(t *testing.T) {
	ctx := veilDevTest(t, "veil-dev-policy", 20*time.Minute)

	// Generate, in-process, against the e2e registry.
	raw, err := os.ReadFile(filepath.Join("testdata", "policy-pod.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	objs, err := podpolicy.Decode("policy-pod.yaml", []byte(strings.ReplaceAll(string(raw), "REGISTRY", env.Registry.Host)))
	if err != nil {
		t.Fatal(err)
	}
	base := initdata.Document{}
	base.Image.Mirrors = map[string][]string{env.Registry.Host: {env.Registry.GuestHost}}
	base.Image.TLSRoots = env.Registry.GuestRootPEM
	outs, err := podpolicy.GenerateDocuments(ctx, objs, podpolicy.Options{
		Resolver: &podpolicy.Resolver{Options: []remote.Option{remote.WithTransport(env.Registry.Transport)}, Insecure: []string{env.Registry.Host}},
		Base:     base,
		Source:   "testdata/policy-pod.yaml",
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(outs) != 1 {
		t.Fatalf("%d documents, want 1", len(outs))
	}
	out := outs[0]
	image := out.Rebound[env.Image(testimages.BusyboxImage)]
	if !strings.Contains(image, "@sha256:") {
		t.Fatalf("busybox bound as %q, want a digest reference", image)
	}
	t.Logf("init-data (%d bytes, annotation %d bytes):\n%s", len(out.Doc), len(out.Annotation), out.Doc)

	// Another image: busybox with one more layer.
	otherImage := push(t, "policy/other:1", appendLayers(t, registryImage(t, env.Image(testimages.BusyboxImage)), mutate.Addendum{Layer: tarLayer(t, "other", "x")}))
	otherDigest := registryDigest(t, otherImage)
	other := env.Image("policy/other@" + otherDigest)

	// kubelet's directories for the pod: the configMap (atomic writer),
	// the emptyDir, the service-account token, /etc/hosts and the
	// termination log.
	kubelet := filepath.Join(t.TempDir(), "pods", "policy-uid")
	volumes := filepath.Join(kubelet, "volumes")
	configMap := filepath.Join(volumes, "kubernetes.io~configmap", "config")
	atomicWrite(t, configMap, "..2026_12_07_00_00_00.1", map[string]string{"mode": "confidential"})
	token := filepath.Join(volumes, "kubernetes.io~projected", "kube-api-access-x7k2p")
	atomicWrite(t, token, "..2026_12_07_00_00_00.1", map[string]string{"token": "eyJ.fake.token", "namespace": "veil-e2e", "ca.crt": "-----BEGIN CERTIFICATE-----\n"})
	scratch := filepath.Join(volumes, "kubernetes.io~empty-dir", "scratch")
	evil := filepath.Join(volumes, "kubernetes.io~empty-dir", "evil")
	for _, d := range []string{scratch, evil, filepath.Join(kubelet, "containers", "app")} {
		if err := os.MkdirAll(d, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	hosts := filepath.Join(kubelet, "etc-hosts")
	if err := os.WriteFile(hosts, []byte("127.0.0.1 localhost\n10.88.0.9 policy-pod\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	// The sandbox as kubelet asks for it: the pod's name, namespace, uid,
	// hostname and annotations (the init-data among them).
	pod, err := env.RunPodWith(ctx, harness.VeilDev, "policy-pod", func(c map[string]any) {
		c["metadata"] = map[string]any{"name": "policy-pod", "namespace": "veil-e2e", "uid": "policy-uid", "attempt": 0}
		c["hostname"] = "policy-pod"
		c["annotations"] = map[string]string{
			initdata.Annotation:                    out.Annotation,
			runtimeHandlerAnnotation:               harness.VeilDev,
			podpolicy.AnnotationAllowReadOutput:    "true",
			podpolicy.AnnotationExecPrefix + "app": `[["cat", "/scratch/ready"]]`,
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	removeLater(t, pod)

	// The container as kubelet asks for it (attempt n): the manifest's
	// command, args with $(GREETING) expanded, env with the ConfigMap's
	// value and the API server's service variables, the volumes from
	// kubelet's directories, the default masked and read-only paths.
	const script = `echo ready > /scratch/ready; echo "greeting=hello mode=$MODE file=` + "`cat /etc/config/mode`" + ` host=$HOSTNAME"; sleep 3600`
	container := func(attempt int, edit func(c map[string]any)) map[string]any {
		c := harness.ContainerConfig("app", image, []string{"sh", "-c"}, false)
		c["metadata"] = map[string]any{"name": "app", "attempt": attempt}
		c["image"] = map[string]any{"image": image, "user_specified_image": image}
		c["args"] = []string{script}
		c["log_path"] = fmt.Sprintf("app-%d.log", attempt)
		c["envs"] = []map[string]string{
			{"key": "GREETING", "value": "hello"},
			{"key": "MODE", "value": "confidential"},
			{"key": "KUBERNETES_SERVICE_HOST", "value": "10.96.0.1"},
			{"key": "KUBERNETES_SERVICE_PORT", "value": "443"},
			{"key": "KUBERNETES_SERVICE_PORT_HTTPS", "value": "443"},
			{"key": "KUBERNETES_PORT", "value": "tcp://10.96.0.1:443"},
			{"key": "KUBERNETES_PORT_443_TCP", "value": "tcp://10.96.0.1:443"},
			{"key": "KUBERNETES_PORT_443_TCP_PROTO", "value": "tcp"},
			{"key": "KUBERNETES_PORT_443_TCP_PORT", "value": "443"},
			{"key": "KUBERNETES_PORT_443_TCP_ADDR", "value": "10.96.0.1"},
		}
		termLog := filepath.Join(kubelet, "containers", "app", fmt.Sprintf("term-%d", attempt))
		if err := os.WriteFile(termLog, nil, 0o666); err != nil {
			t.Fatal(err)
		}
		c["mounts"] = []map[string]any{
			{"container_path": "/etc/config", "host_path": configMap, "readonly": true},
			{"container_path": "/scratch", "host_path": scratch},
			{"container_path": podpolicy.ServiceAccountMountPath, "host_path": token, "readonly": true},
			{"container_path": "/etc/hosts", "host_path": hosts},
			{"container_path": "/dev/termination-log", "host_path": termLog},
		}
		c["linux"] = map[string]any{"security_context": map[string]any{
			"masked_paths":      kubeletMaskedPaths,
			"readonly_paths":    kubeletReadonlyPaths,
			"namespace_options": map[string]any{"pid": 1}, // CONTAINER
		}}
		if edit != nil {
			edit(c)
		}
		return c
	}

	t.Run("the generated pod runs", func(t *testing.T) {
		id, err := env.StartContainer(ctx, pod, container(0, nil))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := env.WaitContainer(ctx, id, "CONTAINER_RUNNING", 2*time.Minute); err != nil {
			t.Fatal(err)
		}
		waitLogs(t, ctx, id, "greeting=hello mode=confidential file=confidential host=policy-pod", time.Minute)
		if got := strings.TrimSpace(crictl(t, ctx, "exec", "--sync", id, "cat", "/scratch/ready")); got != "ready" {
			t.Errorf("the bound exec printed %q, want ready", got)
		}
		out, err := env.Run(ctx, env.Crictl(ctx, "exec", "--sync", id, "ls", "/"))
		if err == nil || !strings.Contains(err.Error(), "allow_exec") {
			t.Errorf("an exec the policy does not list: %v (output %q), want a denial naming allow_exec", err, out)
		}
	})

	for i, tc := range []struct {
		name string
		want []string
		edit func(c map[string]any)
	}{
		{"changed arg", []string{"rule containers[app].args"}, func(c map[string]any) {
			c["args"] = []string{strings.Replace(script, "sleep 3600", "sleep 3600; nc -l -p 4444 -e sh", 1)}
		}},
		{"extra env var", []string{"rule containers[app].env", "LD_PRELOAD"}, func(c map[string]any) {
			c["envs"] = append(c["envs"].([]map[string]string), map[string]string{"key": "LD_PRELOAD", "value": "/scratch/evil.so"})
		}},
		{"extra mount", []string{"rule containers[app].mounts", "/usr/lib"}, func(c map[string]any) {
			c["mounts"] = append(c["mounts"].([]map[string]any), map[string]any{"container_path": "/usr/lib", "host_path": evil})
		}},
		// Refused when the shim asks the guest to pull it.
		{"another image digest", []string{"PullImage", "rule image", otherDigest}, func(c map[string]any) {
			c["image"] = map[string]any{"image": other, "user_specified_image": other}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := env.StartContainer(ctx, pod, container(i+1, tc.edit))
			if err == nil {
				t.Fatalf("%s: the container started, want a refusal naming %q", tc.name, tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%s: %v, want a refusal naming %q", tc.name, err, w)
				}
			}
			t.Logf("%s: %v", tc.name, err)
		})
	}
}

// registryDigest is the manifest digest of ref in the e2e registry.
func registryDigest(t *testing.T, ref string) string {
	t.Helper()
	d, err := registryImage(t, ref).Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}
