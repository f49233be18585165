//go:build e2e && kubernetes

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	nodev1 "k8s.io/api/node/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/yaml"

	"github.com/veil-runtime/veil/attestation/initdata"
	"github.com/veil-runtime/veil/tools/e2e/harness"
	"github.com/veil-runtime/veil/tools/e2e/testimages"
)

// webManifest is the scenario's workload: a configMap, a secret and a
// Deployment of one `veil` pod with configMap, secret, projected and
// emptyDir volumes, a readiness probe that passes while /scratch/ready
// exists (with a timeout for a loaded TCG guest: a probe that times out
// would read as not ready), and a web server that kubectl port-forward
// reaches. Both containers have CPU and memory limits, so the kubelet's
// pod cgroup carries their sums plus the RuntimeClass overhead, and
// requests below them: the pod is Burstable (kubepods/burstable/pod<uid>,
// the QoS tier cgroupsPerQOS adds), and requests (the scheduler's, in the
// node's allocated resources) and limits (the cgroup's) differ, so neither
// check passes on the other's figures. %s is the registry host.
const webManifest = `apiVersion: v1
kind: ConfigMap
metadata: {name: web-config}
data: {greeting: hello}
---
apiVersion: v1
kind: Secret
metadata: {name: web-secret}
stringData: {password: s3cret}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web, tier: e2e}}
    spec:
      runtimeClassName: veil
      terminationGracePeriodSeconds: 5
      enableServiceLinks: false
      containers:
      - name: app
        image: %[1]s/busybox:latest
        command: [sh, -c, 'echo app started; i=0; while true; do i=$((i+1)); echo tick $i; sleep 1; done']
        resources:
          requests: {cpu: 100m, memory: 64Mi}
          limits: {cpu: 500m, memory: 128Mi}
        readinessProbe:
          exec: {command: [test, -f, /scratch/ready]}
          periodSeconds: 1
          timeoutSeconds: 60
          failureThreshold: 1
        volumeMounts:
        - {name: config, mountPath: /config}
        - {name: secret, mountPath: /secret}
        - {name: projected, mountPath: /projected}
        - {name: scratch, mountPath: /scratch}
      - name: web
        image: registry.k8s.io/e2e-test-images/nginx:1.14-2
        command: [/usr/sbin/nginx, -port, "8080", -banner, veil-web]
        ports: [{containerPort: 8080}]
        resources:
          requests: {cpu: 50m, memory: 32Mi}
          limits: {cpu: 250m, memory: 64Mi}
      volumes:
      - {name: config, configMap: {name: web-config}}
      - {name: secret, secret: {secretName: web-secret}}
      - name: projected
        projected:
          sources:
          - configMap: {name: web-config, items: [{key: greeting, path: greeting}]}
          - secret: {name: web-secret, items: [{key: password, path: password}]}
          - downwardAPI: {items: [{path: labels, fieldRef: {fieldPath: metadata.labels}}]}
      - {name: scratch, emptyDir: {}}
`

// TestKubernetes runs a single-node Kubernetes (harness.StartKubernetes:
// etcd, API server, controller manager, scheduler, kubelet) on the
// environment's containerd and drives a `veil` Deployment through the
// Kubernetes API with kubectl. It is built only with the kubernetes tag,
// which `make test` sets (make test-e2e E2E_KUBERNETES=1 alone), so a tier
// without the cluster's binaries never skips it.
func TestKubernetes(t *testing.T) {
	ctx := testContext(t, 50*time.Minute)
	// `make test` builds the cluster's binaries in the background while
	// the tiers before run; wait for that build (or build them here).
	start := time.Now()
	var buildLog strings.Builder
	if err := env.BuildKubernetes(ctx, &buildLog); err != nil {
		t.Fatalf("%v\n%s", err, buildLog.String())
	}
	t.Logf("Kubernetes binaries ready after %s: %s", time.Since(start).Round(time.Second), strings.TrimSpace(buildLog.String()))
	// A node before veil install: containerd knows runc only.
	opts := envOptions("kubernetes")
	opts.RuncOnly = true
	shared := env
	e, err := harness.Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	env = e
	t.Cleanup(func() {
		env = shared
		if err := e.Close(); err != nil {
			t.Error(err)
		}
	})
	if err := env.CheckHandler(harness.Veil); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	cl, err := env.StartKubernetes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cluster started in %s", time.Since(start).Round(time.Second))
	kubectl := func(t *testing.T, args ...string) string {
		t.Helper()
		out, err := env.Run(ctx, cl.Kubectl(ctx, args...))
		if err != nil {
			t.Fatal(err)
		}
		return out
	}

	var pod, uid string
	// step runs one scenario as a subtest, timed; the later ones need
	// the first two, which end the test when they fail.
	step := func(name string, fn func(t *testing.T)) bool {
		return t.Run(name, func(t *testing.T) {
			s := time.Now()
			fn(t)
			t.Logf("%s took %s", name, time.Since(s).Round(100*time.Millisecond))
		})
	}
	podExec := func(t *testing.T, args ...string) string {
		t.Helper()
		return kubectl(t, append([]string{"exec", pod, "-c", "app", "--"}, args...)...)
	}

	var configBefore []byte
	if !step("installer-daemonset", func(t *testing.T) {
		var err error
		if configBefore, err = os.ReadFile(env.ConfigPath()); err != nil {
			t.Fatal(err)
		}
		installWithDaemonSet(t, ctx, cl)
		// Ready means labelled (the probe's file is written last); this
		// machine has no SEV-SNP or TDX.
		labels := kubectl(t, "get", "node", harness.NodeName, "-o", "jsonpath={.metadata.labels}")
		if !strings.Contains(labels, `"veil.io/runtime":"true"`) || !strings.Contains(labels, `"veil.io/tee":"none"`) {
			t.Fatalf("node labels after the installer ran: %s; want veil.io/runtime=true and veil.io/tee=none", labels)
		}
		if b, err := os.ReadFile(filepath.Join(env.Dir, "opt/veil/etc/veil.d/50-e2e.toml")); err != nil || string(b) != adminOverride {
			t.Errorf("the admin's override after install: %q, %v; want it as written", b, err)
		}
		if drop, err := os.ReadFile(filepath.Join(env.Dir, "conf.d/veil.toml")); err != nil || !strings.Contains(string(drop), `snapshotter = "veil"`) || strings.Contains(string(drop), "veil-snp") {
			t.Errorf("drop-in (%v): want guest pull (snapshotter = \"veil\") and no veil-snp handler on a node without SEV-SNP:\n%s", err, drop)
		}
		info := crictl(t, ctx, "info")
		for _, h := range []string{harness.Veil, harness.VeilDev} {
			if !strings.Contains(info, `"`+h+`"`) {
				t.Errorf("crictl info after the installer ran lacks runtime handler %s", h)
			}
		}
		rcs, err := os.ReadFile(filepath.Join(env.RepoRoot, "runtimeclass/runtimeclasses.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		if err := cl.Apply(ctx, string(rcs)); err != nil {
			t.Fatal(err)
		}
	}) {
		t.FailNow()
	}

	if !step("deployment", func(t *testing.T) {
		if err := cl.Apply(ctx, fmt.Sprintf(webManifest, env.Registry.Host)); err != nil {
			t.Fatal(err)
		}
		kubectl(t, "wait", "--for=create", "pod", "-l", "app=web", "--timeout=5m")
		kubectl(t, "wait", "--for=jsonpath={.status.phase}=Running", "pod", "-l", "app=web", "--timeout=15m")
		var p struct {
			Items []struct {
				Metadata struct{ Name, UID string }
				Spec     struct{ RuntimeClassName, NodeName string }
				Status   struct {
					Conditions []struct{ Type, Status string }
				}
			}
		}
		if err := json.Unmarshal([]byte(kubectl(t, "get", "pod", "-l", "app=web", "-o", "json")), &p); err != nil {
			t.Fatal(err)
		}
		if len(p.Items) != 1 {
			t.Fatalf("%d pods of deployment web, want 1", len(p.Items))
		}
		it := p.Items[0]
		pod, uid = it.Metadata.Name, it.Metadata.UID
		if it.Spec.RuntimeClassName != "veil" || it.Spec.NodeName != harness.NodeName {
			t.Fatalf("pod %s: runtimeClassName %q on node %q, want veil on %s", pod, it.Spec.RuntimeClassName, it.Spec.NodeName, harness.NodeName)
		}
		for _, c := range it.Status.Conditions {
			if c.Type == "Ready" && c.Status != "False" {
				t.Fatalf("pod %s Ready=%s before /scratch/ready exists, want False", pod, c.Status)
			}
		}
		// The sandbox is a veil VM: the guest's kernel, not the host's.
		host, err := os.ReadFile("/proc/sys/kernel/osrelease")
		if err != nil {
			t.Fatal(err)
		}
		if guest := strings.TrimSpace(podExec(t, "uname", "-r")); guest == strings.TrimSpace(string(host)) {
			t.Fatalf("uname -r in pod %s = %q, the host's kernel: not in a VM", pod, guest)
		}
	}) {
		t.FailNow()
	}

	step("readiness-probe", func(t *testing.T) {
		podExec(t, "touch", "/scratch/ready")
		kubectl(t, "wait", "--for=condition=Ready", "pod/"+pod, "--timeout=5m")
		podExec(t, "rm", "/scratch/ready")
		kubectl(t, "wait", "--for=condition=Ready=false", "pod/"+pod, "--timeout=5m")
		podExec(t, "touch", "/scratch/ready")
		kubectl(t, "wait", "--for=condition=Ready", "pod/"+pod, "--timeout=5m")
	})

	step("volumes-and-exec", func(t *testing.T) {
		for file, want := range map[string]string{
			"/config/greeting":    "hello",
			"/secret/password":    "s3cret",
			"/projected/greeting": "hello",
			"/projected/password": "s3cret",
		} {
			if got := podExec(t, "cat", file); got != want {
				t.Errorf("%s in pod %s = %q, want %q", file, pod, got, want)
			}
		}
		if labels := podExec(t, "cat", "/projected/labels"); !strings.Contains(labels, `tier="e2e"`) {
			t.Errorf("/projected/labels (downward API) = %q, want it to hold tier=\"e2e\"", labels)
		}
		// emptyDir: written by one exec, read by another.
		podExec(t, "sh", "-c", "echo scratch > /scratch/note")
		if got := podExec(t, "cat", "/scratch/note"); got != "scratch\n" {
			t.Errorf("/scratch/note (emptyDir) = %q, want %q", got, "scratch\n")
		}
		// The service account token the kubelet projects.
		if tok := podExec(t, "cat", "/var/run/secrets/kubernetes.io/serviceaccount/token"); strings.Count(tok, ".") != 2 {
			t.Errorf("service account token in pod %s is not a JWT: %q", pod, tok)
		}
		// An exec's exit code comes back through the API.
		cmd := cl.Kubectl(ctx, "exec", pod, "-c", "app", "--", "sh", "-c", "exit 7")
		if err := cmd.Run(); err == nil || cmd.ProcessState.ExitCode() != 7 {
			t.Errorf("kubectl exec ... exit 7: %v, exit code %d, want 7", err, cmd.ProcessState.ExitCode())
		}
	})

	step("logs", func(t *testing.T) {
		if out := kubectl(t, "logs", pod, "-c", "app"); !strings.Contains(out, "app started\n") || !strings.Contains(out, "tick 1\n") {
			t.Errorf("kubectl logs %s -c app = %q, want app started and tick 1", pod, out)
		}
		if out := kubectl(t, "logs", pod, "-c", "web"); !strings.Contains(out, "veil-web: listening on :8080") {
			t.Errorf("kubectl logs %s -c web = %q, want the web server's banner", pod, out)
		}
	})

	step("configmap-update", func(t *testing.T) {
		kubectl(t, "patch", "configmap", "web-config", "--type=merge", "-p", `{"data":{"greeting":"updated"}}`)
		s := time.Now()
		for _, file := range []string{"/config/greeting", "/projected/greeting"} {
			waitUntil(t, ctx, "the configMap update in "+file, 3*time.Minute, func() (bool, string) {
				got := podExec(t, "cat", file)
				return got == "updated", got
			})
		}
		t.Logf("configMap update reached the container after %s", time.Since(s).Round(100*time.Millisecond))
	})

	step("attach", func(t *testing.T) {
		actx, cancel := context.WithCancel(ctx)
		defer cancel()
		line, err := firstLine(actx, cl.Kubectl(actx, "attach", pod, "-c", "app"), "tick ")
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("kubectl attach read %q", line)
	})

	step("port-forward", func(t *testing.T) {
		// kubectl -> API server -> kubelet -> containerd's CRI, which dials
		// localhost:8080 in the pod's netns on the node; the shim relays
		// that to the guest, where the web container listens.
		pctx, cancel := context.WithCancel(ctx)
		defer cancel()
		line, err := firstLine(pctx, cl.Kubectl(pctx, "port-forward", "pod/"+pod, ":8080"), "Forwarding from 127.0.0.1:")
		if err != nil {
			t.Fatal(err)
		}
		// "Forwarding from 127.0.0.1:PORT -> 8080"
		local := strings.Fields(strings.TrimPrefix(line, "Forwarding from "))[0]
		for i := range 2 {
			s := time.Now()
			page, err := httpGetOnce(local)
			if err != nil || !strings.Contains(page, "veil-web") {
				t.Fatalf("GET %d http://%s/ through kubectl port-forward to pod %s port 8080: %q, %v; want the web container's page", i+1, local, pod, page, err)
			}
			t.Logf("HTTP exchange %d through kubectl port-forward: %s", i+1, time.Since(s).Round(time.Millisecond))
		}
	})

	step("runtimeclass-overhead", func(t *testing.T) {
		// The RuntimeClass admission put the overhead into the pod, and
		// the node's allocated resources count it.
		got := kubectl(t, "get", "pod", pod, "-o", "jsonpath={.spec.overhead.cpu} {.spec.overhead.memory}")
		rc := manifestRuntimeClass(t, "veil")
		if want := rc.Overhead.PodFixed.Cpu().String() + " " + rc.Overhead.PodFixed.Memory().String(); got != want {
			t.Errorf("pod %s spec.overhead = %q, want the veil RuntimeClass's %q (runtimeclass/runtimeclasses.yaml)", pod, got, want)
		}
		var pods struct {
			Items []struct {
				Spec struct {
					Containers []struct {
						Resources struct{ Requests map[string]resource.Quantity }
					}
					Overhead map[string]resource.Quantity
				}
				Status struct{ Phase string }
			}
		}
		if err := json.Unmarshal([]byte(kubectl(t, "get", "pods", "-A", "--field-selector=spec.nodeName="+harness.NodeName, "-o", "json")), &pods); err != nil {
			t.Fatal(err)
		}
		want := map[string]*resource.Quantity{"cpu": resource.NewQuantity(0, resource.DecimalSI), "memory": resource.NewQuantity(0, resource.BinarySI)}
		for _, p := range pods.Items {
			if p.Status.Phase == "Succeeded" || p.Status.Phase == "Failed" {
				continue
			}
			for name, q := range want {
				for _, c := range p.Spec.Containers {
					if r, ok := c.Resources.Requests[name]; ok {
						q.Add(r)
					}
				}
				if o, ok := p.Spec.Overhead[name]; ok {
					q.Add(o)
				}
			}
		}
		desc := kubectl(t, "describe", "node", harness.NodeName)
		i := strings.Index(desc, "Allocated resources:")
		if i < 0 {
			t.Fatalf("kubectl describe node has no Allocated resources:\n%s", desc)
		}
		for name, q := range want {
			var seen string
			for _, line := range strings.Split(desc[i:], "\n") {
				if f := strings.Fields(line); len(f) >= 2 && f[0] == name {
					seen = f[1]
					break
				}
			}
			got, err := resource.ParseQuantity(seen)
			if err != nil || got.Cmp(*q) != 0 {
				t.Errorf("node's allocated %s requests = %q (%v), want %s (the pods' requests plus their RuntimeClass overhead)", name, seen, err, q)
			} else {
				t.Logf("node's allocated %s requests: %s, RuntimeClass overhead included", name, seen)
			}
		}
		checkPodCgroup(t, ctx, cl, pod, uid, rc)
	})

	step("delete-pod", func(t *testing.T) {
		_, qemu := podVM(t, ctx, uid)
		kubectl(t, "delete", "pod", pod, "--wait=true", "--timeout=3m")
		waitUntil(t, ctx, "QEMU of the deleted pod to exit", 5*time.Minute, func() (bool, string) {
			exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", qemu))
			return err != nil || exe == "", exe
		})
		waitUntil(t, ctx, "containerd to drop the deleted pod's sandbox", 5*time.Minute, func() (bool, string) {
			out := strings.TrimSpace(crictl(t, ctx, "pods", "-q", "--label", "io.kubernetes.pod.uid="+uid))
			return out == "", out
		})
	})

	step("confidential-pod", func(t *testing.T) {
		// veil-dev with its init-data from Confidential Containers'
		// annotation: an agent policy without allow_exec, and the image
		// pulled in the guest (veil-snapshotter left its layers alone).
		doc := env.VeilDevInitData(harness.VeilDevPolicy)
		ann, err := initdata.EncodeAnnotation([]byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		if err := cl.Apply(ctx, fmt.Sprintf(confidentialManifest, initdata.CoCoAnnotation, ann, env.Registry.Host)); err != nil {
			t.Fatal(err)
		}
		kubectl(t, "wait", "--for=condition=Ready", "pod/conf", "--timeout=15m")
		// Its output is readable (the policy allows it); Ready can come
		// before the first line reached the log.
		waitUntil(t, ctx, "the veil-dev pod's output in kubectl logs", 5*time.Minute, func() (bool, string) {
			out := kubectl(t, "logs", "conf")
			return strings.Contains(out, "confidential started"), out
		})
		out, err := env.Run(ctx, cl.Kubectl(ctx, "exec", "conf", "--", "true"))
		if err == nil || !strings.Contains(err.Error(), "allow_exec") {
			t.Errorf("kubectl exec into the veil-dev pod: %v (output %q), want a refusal naming allow_exec", err, out)
		}
		logs := kubectl(t, "-n", "veil-system", "logs", "ds/veil-installer", "-c", "snapshotter")
		ref := env.Registry.Host + "/busybox:latest"
		if !strings.Contains(logs, `msg="layer left to the guest" image=`+ref) {
			t.Errorf("veil-snapshotter's log has no layer of %s left to the guest:\n%s", ref, logs)
		}
		// It read the sandbox image from containerd's config (mounted
		// from the node), so a guest-pull pod would not leave it without
		// content for runc pods (TestSandboxImageAfterGuestPull).
		if want := fmt.Sprintf("image=%s source=\"sandbox image of %s\"", env.Image(testimages.PauseImage), env.ConfigPath()); !strings.Contains(logs, want) {
			t.Errorf("veil-snapshotter's log does not name the node's sandbox image (%s):\n%s", want, logs)
		}
		kubectl(t, "delete", "pod", "conf", "--wait=true", "--timeout=3m")
	})

	step("uninstall", func(t *testing.T) {
		// No veil pod may be left: uninstall refuses while shims run.
		kubectl(t, "delete", "deployment", "web", "--wait=true", "--timeout=3m")
		kubectl(t, "wait", "--for=delete", "pod", "-l", "app=web", "--timeout=3m")
		waitUntil(t, ctx, "containerd to drop every veil sandbox", 3*time.Minute, func() (bool, string) {
			var sb struct {
				Items []struct{ ID, RuntimeHandler string }
			}
			out := crictl(t, ctx, "pods", "-o", "json")
			if err := json.Unmarshal([]byte(out), &sb); err != nil {
				t.Fatalf("crictl pods -o json: %v: %s", err, out)
			}
			var veil []string
			for _, it := range sb.Items {
				if strings.HasPrefix(it.RuntimeHandler, "veil") {
					veil = append(veil, it.ID+" ("+it.RuntimeHandler+")")
				}
			}
			return len(veil) == 0, strings.Join(veil, ", ")
		})
		uninstallWithDaemonSet(t, ctx, cl)
		labels := kubectl(t, "get", "node", harness.NodeName, "-o", "jsonpath={.metadata.labels}")
		if strings.Contains(labels, "veil.io/") {
			t.Errorf("node labels after uninstall: %s; want no veil.io/ label", labels)
		}
		kubectl(t, "-n", "veil-system", "delete", "daemonset", "veil-installer", "--wait=true", "--timeout=3m")
		kubectl(t, "-n", "veil-system", "wait", "--for=delete", "pod", "-l", "app.kubernetes.io/name=veil-installer", "--timeout=3m")
		after, err := os.ReadFile(env.ConfigPath())
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(after, configBefore) {
			t.Errorf("containerd config after uninstall differs from before install:\nbefore:\n%s\nafter:\n%s", configBefore, after)
		}
		if _, err := os.Stat(filepath.Join(env.Dir, "conf.d/veil.toml")); err == nil {
			t.Error("the drop-in is still there after uninstall")
		}
		if _, err := os.Stat(filepath.Join(env.Dir, "opt/veil/install.json")); err == nil {
			t.Error("install.json is still there after uninstall")
		}
		if info := crictl(t, ctx, "info"); strings.Contains(info, `"`+harness.Veil+`"`) {
			t.Errorf("crictl info after uninstall still has runtime handler %s", harness.Veil)
		}
	})
}

// podVM returns the CRI sandbox of the pod with uid and its process, which
// must be QEMU.
func podVM(t *testing.T, ctx context.Context, uid string) (sandbox string, qemu int) {
	t.Helper()
	sandbox = strings.TrimSpace(crictl(t, ctx, "pods", "-q", "--label", "io.kubernetes.pod.uid="+uid))
	if sandbox == "" || strings.Contains(sandbox, "\n") {
		t.Fatalf("crictl pods for pod uid %s = %q, want one sandbox", uid, sandbox)
	}
	qemu = sandboxPid(t, ctx, sandbox)
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", qemu))
	if err != nil || !strings.Contains(filepath.Base(exe), "qemu") {
		t.Fatalf("sandbox %s pid %d runs %q (%v), want QEMU", sandbox, qemu, exe, err)
	}
	return sandbox, qemu
}

// checkPodCgroup checks the kubelet's cgroup of the Burstable pod with uid
// (cgroupfs driver: CgroupRoot/kubepods/burstable/pod<uid>) and the VM in
// it: QEMU runs in the sandbox's own cgroup right below it (where runc
// would put pause) in the memory and cpu hierarchies; its memory limit is
// the pod's containers' memory limits plus the RuntimeClass overhead rc
// (runtimeclass/runtimeclasses.yaml), its CFS quota their CPU limits plus
// the overhead, and (v1) its CPU shares their CPU requests plus the
// overhead. Cgroup v1 (memory.limit_in_bytes, cpu.cfs_quota_us) and v2
// (memory.max, cpu.max) alike.
func checkPodCgroup(t *testing.T, ctx context.Context, cl *harness.Cluster, pod, uid string, rc nodev1.RuntimeClass) {
	t.Helper()
	out, err := env.Run(ctx, cl.Kubectl(ctx, "get", "pod", pod, "-o", "json"))
	if err != nil {
		t.Fatal(err)
	}
	var p struct {
		Spec struct {
			Containers []struct {
				Resources struct{ Limits, Requests map[string]resource.Quantity }
			}
		}
		Status struct {
			QOSClass string `json:"qosClass"`
		}
	}
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		t.Fatal(err)
	}
	if p.Status.QOSClass != "Burstable" {
		t.Fatalf("pod %s has QoS class %q, want Burstable (requests below limits)", pod, p.Status.QOSClass)
	}
	podCg := cl.CgroupRoot + "/kubepods/burstable/pod" + uid
	sandbox, qemu := podVM(t, ctx, uid)
	for _, ctrl := range []string{"memory", "cpu"} {
		cg, err := harness.ProcessCgroup(qemu, ctrl)
		if err != nil {
			t.Fatal(err)
		}
		if cg != podCg+"/"+sandbox {
			t.Errorf("QEMU (pid %d) of pod %s is in %s cgroup %s, want the sandbox's %s/%s below the kubelet's pod cgroup",
				qemu, pod, ctrl, cg, podCg, sandbox)
		}
	}
	mem := rc.Overhead.PodFixed.Memory().DeepCopy()
	cpuLimit := rc.Overhead.PodFixed.Cpu().DeepCopy()
	cpuRequest := rc.Overhead.PodFixed.Cpu().DeepCopy()
	for _, c := range p.Spec.Containers {
		mem.Add(c.Resources.Limits["memory"])
		cpuLimit.Add(c.Resources.Limits["cpu"])
		cpuRequest.Add(c.Resources.Requests["cpu"])
	}
	read := func(ctrl, file string) string {
		t.Helper()
		dir, _, err := harness.CgroupDir(ctrl, podCg)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil {
			t.Fatalf("reading pod %s's cgroup: %v", pod, err)
		}
		return strings.TrimSpace(string(b))
	}
	_, v2, err := harness.CgroupDir("memory", podCg)
	if err != nil {
		t.Fatal(err)
	}
	var memSeen, quotaSeen, periodSeen string
	if v2 {
		memSeen = read("memory", "memory.max")
		cpuMax := strings.Fields(read("cpu", "cpu.max"))
		if len(cpuMax) != 2 {
			t.Fatalf("pod %s's cgroup cpu.max = %q, want QUOTA PERIOD", pod, cpuMax)
		}
		quotaSeen, periodSeen = cpuMax[0], cpuMax[1]
	} else {
		memSeen = read("memory", "memory.limit_in_bytes")
		quotaSeen, periodSeen = read("cpu", "cpu.cfs_quota_us"), read("cpu", "cpu.cfs_period_us")
	}
	if memSeen != strconv.FormatInt(mem.Value(), 10) {
		t.Errorf("pod %s's cgroup memory limit = %s, want %d (containers' limits + RuntimeClass overhead %s = %s)",
			pod, memSeen, mem.Value(), rc.Overhead.PodFixed.Memory(), &mem)
	} else {
		t.Logf("pod cgroup %s: memory limit %s bytes = containers' limits + overhead %s = %s", podCg, memSeen, rc.Overhead.PodFixed.Memory(), &mem)
	}
	period, err := strconv.ParseInt(periodSeen, 10, 64)
	if err != nil {
		t.Fatalf("pod %s's cgroup CFS period %q: %v", pod, periodSeen, err)
	}
	// The kubelet's MilliCPUToQuota.
	if want := max(cpuLimit.MilliValue()*period/1000, 1000); quotaSeen != strconv.FormatInt(want, 10) {
		t.Errorf("pod %s's cgroup CFS quota = %s (period %d), want %d (containers' CPU limits + RuntimeClass overhead %s = %s)",
			pod, quotaSeen, period, want, rc.Overhead.PodFixed.Cpu(), &cpuLimit)
	} else {
		t.Logf("pod cgroup %s: CFS quota %s of period %d = containers' CPU limits + overhead %s = %s", podCg, quotaSeen, period, rc.Overhead.PodFixed.Cpu(), &cpuLimit)
	}
	if !v2 {
		// The kubelet's MilliCPUToShares (v2's cpu.weight is converted by
		// a formula that differs between runc versions).
		want := max(cpuRequest.MilliValue()*1024/1000, 2)
		if seen := read("cpu", "cpu.shares"); seen != strconv.FormatInt(want, 10) {
			t.Errorf("pod %s's cgroup cpu.shares = %s, want %d (containers' CPU requests + RuntimeClass overhead = %s)", pod, seen, want, &cpuRequest)
		} else {
			t.Logf("pod cgroup %s: cpu.shares %s = containers' CPU requests + overhead = %s", podCg, seen, &cpuRequest)
		}
	}
}

// manifestRuntimeClass is handler's RuntimeClass in the repository's
// runtimeclass/runtimeclasses.yaml (its overhead comes from make bench).
func manifestRuntimeClass(t *testing.T, handler string) nodev1.RuntimeClass {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(env.RepoRoot, "runtimeclass/runtimeclasses.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range strings.Split(string(b), "\n---\n") {
		var rc nodev1.RuntimeClass
		if err := yaml.Unmarshal([]byte(doc), &rc); err != nil {
			t.Fatalf("runtimeclass/runtimeclasses.yaml: %v", err)
		}
		if rc.Handler == handler && rc.Overhead != nil {
			return rc
		}
	}
	t.Fatalf("runtimeclass/runtimeclasses.yaml has no RuntimeClass with an overhead for handler %s", handler)
	return nodev1.RuntimeClass{}
}

// confidentialManifest is a veil-dev pod whose init-data is the annotation
// %[1]s = %[2]s; %[3]s is the registry host.
const confidentialManifest = `apiVersion: v1
kind: Pod
metadata:
  name: conf
  annotations: {%[1]q: %[2]q}
spec:
  runtimeClassName: veil-dev
  terminationGracePeriodSeconds: 5
  enableServiceLinks: false
  containers:
  - name: app
    image: %[3]s/busybox:latest
    command: [sh, -c, 'echo confidential started; while true; do sleep 1; done']
`

// waitUntil polls cond every half second until it holds or timeout passes;
// cond returns whether it holds and what it saw.
func waitUntil(t *testing.T, ctx context.Context, what string, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, seen := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting %s for %s: last seen %q", timeout, what, seen)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v (last seen %q)", what, ctx.Err(), seen)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// firstLine starts cmd and returns the first line of its standard output
// that starts with prefix; cmd keeps running (its context ends it). It
// fails when cmd ends first, with its standard error.
func firstLine(ctx context.Context, cmd *exec.Cmd, prefix string) (string, error) {
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("starting %s: %w", strings.Join(cmd.Args, " "), err)
	}
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), prefix) {
				found <- sc.Text()
				break
			}
		}
		_, _ = io.Copy(io.Discard, out)
		close(found)
	}()
	select {
	case line, ok := <-found:
		if !ok {
			err := cmd.Wait()
			return "", fmt.Errorf("%s ended (%w) before printing %q: %s", strings.Join(cmd.Args, " "), err, prefix, stderr.String())
		}
		go func() { _ = cmd.Wait() }()
		return line, nil
	case <-time.After(5 * time.Minute):
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return "", fmt.Errorf("%s printed no %q in 5 minutes: %s", strings.Join(cmd.Args, " "), prefix, stderr.String())
	}
}

// uninstallWithDaemonSet runs `veil uninstall` as runtimeclass/uninstall
// does (the installer container's args patched; the rest of the DaemonSet
// as it was) and returns once the new pod is Ready (uninstall finished).
func uninstallWithDaemonSet(t *testing.T, ctx context.Context, cl *harness.Cluster) {
	t.Helper()
	args := []string{"uninstall", "--root=/host", "--node=$(NODE_NAME)", "--label=auto", "--wait",
		"--prefix=" + filepath.Join(env.Dir, "opt/veil"),
		"--restart=command", "--restart-command=" + env.RestartCommand("/host")}
	patch, err := json.Marshal([]map[string]any{{"op": "replace", "path": "/spec/template/spec/containers/0/args", "value": args}})
	if err != nil {
		t.Fatal(err)
	}
	s := time.Now()
	if _, err := env.Run(ctx, cl.Kubectl(ctx, "-n", "veil-system", "patch", "daemonset", "veil-installer", "--type=json", "-p", string(patch))); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Run(ctx, cl.Kubectl(ctx, "-n", "veil-system", "rollout", "status", "daemonset/veil-installer", "--timeout=15m")); err != nil {
		logs, _ := env.Run(ctx, cl.Kubectl(ctx, "-n", "veil-system", "logs", "ds/veil-installer", "-c", "installer"))
		t.Fatalf("%v\nuninstaller logs:\n%s", err, logs)
	}
	t.Logf("uninstall DaemonSet ready after %s", time.Since(s).Round(100*time.Millisecond))
}

// adminOverride is the admin's drop-in for the veil and veil-dev handler
// configs (shim/config DropInDir).
const adminOverride = "[agent]\nboot_timeout = \"300s\"\ncall_timeout = \"180s\"\nhealth_timeout = \"120s\"\n"

// installerRef is the installer image's name in the test: imported into
// containerd, never pulled.
const installerRef = "ghcr.io/veil-runtime/veil-installer:e2e"

// installWithDaemonSet installs veil into the environment's containerd the
// way a cluster admin does: runtimeclass/base (namespace, RBAC and
// admission policy, DaemonSet) applied with the installer image
// (tools/installer-image: static binaries built for it, build/guest)
// loaded into containerd. Only
// host paths differ from the shipped DaemonSet: the prefix, containerd's
// config and drop-in live in the environment's directory, and containerd
// is restarted through the harness (a restart command that asks the test
// process, which runs containerd, as systemd would on a node), and
// veil-snapshotter's socket and root are in it too. It returns once the
// DaemonSet's pod is Ready (its probe: install finished, labels included).
func installWithDaemonSet(t *testing.T, ctx context.Context, cl *harness.Cluster) {
	t.Helper()
	tar := filepath.Join(env.Dir, "veil-installer.tar")
	// The image has no C library: its binaries are built static here,
	// whatever build/bin holds (make test's are race-built, with cgo).
	bin := filepath.Join(env.Dir, "installer-bin")
	goBuild := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", bin+"/",
		"./cmd/veil", "./cmd/containerd-shim-veil-v2", "./cmd/veil-snapshotter")
	goBuild.Dir, goBuild.Env = env.RepoRoot, append(os.Environ(), "CGO_ENABLED=0")
	if out, err := goBuild.CombinedOutput(); err != nil {
		t.Fatalf("building the installer image's binaries: %v: %s", err, out)
	}
	build := exec.CommandContext(ctx, "go", "run", "./tools/installer-image", "-bin", bin, "-guest", "build/guest",
		"-out", tar, "-ref", installerRef)
	build.Dir = env.RepoRoot
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the installer image: %v: %s", err, out)
	}
	if _, err := env.Run(ctx, env.NetNS.Command(ctx, env.Bin("ctr"), "--address", env.Address, "--namespace", "k8s.io",
		"images", "import", tar)); err != nil {
		t.Fatal(err)
	}
	verOut, err := exec.CommandContext(ctx, env.Bin("containerd"), "--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(verOut))
	if len(f) < 3 {
		t.Fatalf("containerd --version = %q", verOut)
	}
	env.WatchRestartRequests()

	prefix := filepath.Join(env.Dir, "opt/veil")
	snapRun, snapRoot := filepath.Join(env.Dir, "run/veil"), filepath.Join(env.Dir, "var/lib/veil/snapshotter")
	args := []string{"install", "--root=/host", "--node=$(NODE_NAME)", "--label=auto", "--wait",
		"--prefix=" + prefix, "--containerd-config=" + env.ConfigPath(),
		"--drop-in=" + filepath.Join(env.Dir, "conf.d/veil.toml"),
		"--containerd-version=" + strings.TrimPrefix(f[2], "v"),
		"--snapshotter-address=" + filepath.Join(snapRun, "snapshotter.sock"),
		"--restart=command", "--restart-command=" + env.RestartCommand("/host")}
	argsJSON, err := json.Marshal(args)
	if err != nil {
		t.Fatal(err)
	}
	snapArgs, err := json.Marshal([]string{"--address=" + filepath.Join(snapRun, "snapshotter.sock"), "--root=" + snapRoot,
		"--containerd-config=" + env.ConfigPath()})
	if err != nil {
		t.Fatal(err)
	}
	// The admin's overrides, in the handler configs' drop-in directories
	// (which install reads and never writes): this loaded machine's TCG
	// guests boot, start execs and answer health checks slower than the
	// default boot_timeout, call_timeout and health_timeout allow (at load
	// 20 the 10 s health check failed three times and killed the VM).
	for _, h := range []string{harness.Veil, harness.VeilDev} {
		dir := filepath.Join(prefix, "etc", h+".d")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "50-e2e.toml"), []byte(adminOverride), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var manifests []string
	for _, name := range []string{"namespace.yaml", "rbac.yaml", "daemonset.yaml"} {
		b, err := os.ReadFile(filepath.Join(env.RepoRoot, "runtimeclass/base", name))
		if err != nil {
			t.Fatal(err)
		}
		manifests = append(manifests, string(b))
	}
	ds := manifests[2]
	for _, r := range []struct {
		old, new string
		n        int
	}{
		{"image: ghcr.io/veil-runtime/veil-installer:latest",
			"image: " + installerRef + "\n          imagePullPolicy: Never", 2},
		{`args: ["install", "--root=/host", "--node=$(NODE_NAME)", "--label=auto", "--wait"]`, "args: " + string(argsJSON), 1},
		{`args: ["--address=/run/veil/snapshotter.sock", "--root=/var/lib/veil/snapshotter", "--containerd-config=/etc/containerd/config.toml"]`, "args: " + string(snapArgs), 1},
		// containerd's config and the drop-in it imports, in the
		// environment's directory (the snapshotter's other mounts are
		// below it; containerd mounts parents first).
		{"mountPath: /etc/containerd\n", "mountPath: " + env.Dir + "\n", 1},
		{"path: /etc/containerd\n", "path: " + env.Dir + "\n", 1},
		{"mountPath: /run/veil\n", "mountPath: " + snapRun + "\n", 1},
		{"path: /run/veil\n", "path: " + snapRun + "\n", 1},
		{"mountPath: /var/lib/veil/snapshotter\n", "mountPath: " + snapRoot + "\n", 1},
		{"path: /var/lib/veil/snapshotter\n", "path: " + snapRoot + "\n", 1},
	} {
		if strings.Count(ds, r.old) != r.n {
			t.Fatalf("runtimeclass/base/daemonset.yaml no longer holds %q %d times: update installWithDaemonSet", r.old, r.n)
		}
		ds = strings.ReplaceAll(ds, r.old, r.new)
	}
	manifests[2] = ds
	s := time.Now()
	if err := cl.Apply(ctx, strings.Join(manifests, "\n---\n")); err != nil {
		t.Fatal(err)
	}
	// rollout status alone can return before the controller counted the
	// node; the pod's own Ready (install.json exists) is what counts.
	sel := "app.kubernetes.io/name=veil-installer"
	if _, err := env.Run(ctx, cl.Kubectl(ctx, "-n", "veil-system", "wait", "--for=create", "pod", "-l", sel, "--timeout=5m")); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Run(ctx, cl.Kubectl(ctx, "-n", "veil-system", "wait", "--for=condition=Ready", "pod", "-l", sel, "--timeout=15m")); err != nil {
		logs, _ := env.Run(ctx, cl.Kubectl(ctx, "-n", "veil-system", "logs", "ds/veil-installer"))
		t.Fatalf("%v\ninstaller logs:\n%s", err, logs)
	}
	t.Logf("installer DaemonSet ready after %s", time.Since(s).Round(100*time.Millisecond))
}
