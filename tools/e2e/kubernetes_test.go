//go:build e2e && kubernetes

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/veil-runtime/veil/tools/e2e/harness"
)

// webManifest is the scenario's workload: a configMap, a secret and a
// Deployment of one `veil` pod with configMap, secret, projected and
// emptyDir volumes, a readiness probe that passes while /scratch/ready
// exists, and a web server for port-forward. %s is the registry host.
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
        readinessProbe:
          exec: {command: [test, -f, /scratch/ready]}
          periodSeconds: 1
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
// Kubernetes API with kubectl. It is built only with the kubernetes tag
// (make test-e2e E2E_KUBERNETES=1), so the default tier never skips it.
func TestKubernetes(t *testing.T) {
	ctx := testContext(t, 20*time.Minute)
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
	start := time.Now()
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

	if !step("installer-daemonset", func(t *testing.T) {
		installWithDaemonSet(t, ctx, cl)
		labels := kubectl(t, "get", "node", harness.NodeName, "-o", "jsonpath={.metadata.labels}")
		if !strings.Contains(labels, `"veil.io/runtime":"true"`) {
			t.Fatalf("node labels after the installer ran: %s; want veil.io/runtime=true", labels)
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
		kubectl(t, "wait", "--for=create", "pod", "-l", "app=web", "--timeout=2m")
		kubectl(t, "wait", "--for=jsonpath={.status.phase}=Running", "pod", "-l", "app=web", "--timeout=8m")
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
		kubectl(t, "wait", "--for=condition=Ready", "pod/"+pod, "--timeout=2m")
		podExec(t, "rm", "/scratch/ready")
		kubectl(t, "wait", "--for=condition=Ready=false", "pod/"+pod, "--timeout=2m")
		podExec(t, "touch", "/scratch/ready")
		kubectl(t, "wait", "--for=condition=Ready", "pod/"+pod, "--timeout=2m")
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
		pctx, cancel := context.WithCancel(ctx)
		defer cancel()
		pf := cl.Kubectl(pctx, "port-forward", "pod/"+pod, "18080:8080")
		if _, err := firstLine(pctx, pf, "Forwarding from 127.0.0.1:18080"); err != nil {
			t.Fatal(err)
		}
		page, err := env.Run(ctx, env.NetNS.Command(ctx, "curl", "-sS", "--max-time", "30", "http://127.0.0.1:18080/"))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(page, "veil-web") {
			t.Fatalf("page through kubectl port-forward = %q, want veil-web", page)
		}
	})

	step("delete-pod", func(t *testing.T) {
		sandbox := strings.TrimSpace(crictl(t, ctx, "pods", "-q", "--label", "io.kubernetes.pod.uid="+uid))
		if sandbox == "" || strings.Contains(sandbox, "\n") {
			t.Fatalf("crictl pods for pod uid %s = %q, want one sandbox", uid, sandbox)
		}
		qemu := sandboxPid(t, ctx, sandbox)
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", qemu))
		if err != nil || !strings.Contains(filepath.Base(exe), "qemu") {
			t.Fatalf("sandbox %s pid %d runs %q (%v), want QEMU", sandbox, qemu, exe, err)
		}
		kubectl(t, "delete", "pod", pod, "--wait=true", "--timeout=3m")
		waitUntil(t, ctx, "QEMU of the deleted pod to exit", 2*time.Minute, func() (bool, string) {
			exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", qemu))
			return err != nil || exe == "", exe
		})
		waitUntil(t, ctx, "containerd to drop the deleted pod's sandbox", 2*time.Minute, func() (bool, string) {
			out := strings.TrimSpace(crictl(t, ctx, "pods", "-q", "--label", "io.kubernetes.pod.uid="+uid))
			return out == "", out
		})
	})
}

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
	case <-time.After(2 * time.Minute):
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return "", fmt.Errorf("%s printed no %q in 2 minutes: %s", strings.Join(cmd.Args, " "), prefix, stderr.String())
	}
}

// installerRef is the installer image's name in the test: imported into
// containerd, never pulled.
const installerRef = "ghcr.io/veil-runtime/veil-installer:e2e"

// installWithDaemonSet installs veil into the environment's containerd the
// way a cluster admin does: runtimeclass/base (namespace, RBAC and
// admission policy, DaemonSet) applied with the installer image
// (tools/installer-image, built from build/) loaded into containerd. Only
// host paths differ from the shipped DaemonSet: the prefix, containerd's
// config and drop-in live in the environment's directory, and containerd
// is restarted through the harness (a restart command that asks the test
// process, which runs containerd, as systemd would on a node). It returns
// once the DaemonSet's pod is Ready (its probe: install.json exists).
func installWithDaemonSet(t *testing.T, ctx context.Context, cl *harness.Cluster) {
	t.Helper()
	tar := filepath.Join(env.Dir, "veil-installer.tar")
	build := exec.CommandContext(ctx, "go", "run", "./tools/installer-image", "-bin", "build/bin", "-guest", "build/guest",
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
	args := []string{"install", "--root=/host", "--node=$(NODE_NAME)", "--label=auto", "--wait",
		"--prefix=" + prefix, "--containerd-config=" + env.ConfigPath(),
		"--drop-in=" + filepath.Join(env.Dir, "conf.d/veil.toml"),
		"--containerd-version=" + strings.TrimPrefix(f[2], "v"),
		"--restart=command", "--restart-command=" + env.RestartCommand("/host")}
	argsJSON, err := json.Marshal(args)
	if err != nil {
		t.Fatal(err)
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
	for _, r := range []struct{ old, new string }{
		{"image: ghcr.io/veil-runtime/veil-installer:latest",
			"image: " + installerRef + "\n          imagePullPolicy: Never"},
		{`args: ["install", "--root=/host", "--node=$(NODE_NAME)", "--label=auto", "--wait"]`, "args: " + string(argsJSON)},
		{`command: ["test", "-e", "/host/opt/veil/install.json"]`,
			`command: ["test", "-e", "/host` + prefix + `/install.json"]`},
	} {
		if strings.Count(ds, r.old) != 1 {
			t.Fatalf("runtimeclass/base/daemonset.yaml no longer holds %q once: update installWithDaemonSet", r.old)
		}
		ds = strings.Replace(ds, r.old, r.new, 1)
	}
	manifests[2] = ds
	s := time.Now()
	if err := cl.Apply(ctx, strings.Join(manifests, "\n---\n")); err != nil {
		t.Fatal(err)
	}
	// rollout status alone can return before the controller counted the
	// node; the pod's own Ready (install.json exists) is what counts.
	sel := "app.kubernetes.io/name=veil-installer"
	if _, err := env.Run(ctx, cl.Kubectl(ctx, "-n", "veil-system", "wait", "--for=create", "pod", "-l", sel, "--timeout=2m")); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Run(ctx, cl.Kubectl(ctx, "-n", "veil-system", "wait", "--for=condition=Ready", "pod", "-l", sel, "--timeout=5m")); err != nil {
		logs, _ := env.Run(ctx, cl.Kubectl(ctx, "-n", "veil-system", "logs", "ds/veil-installer"))
		t.Fatalf("%v\ninstaller logs:\n%s", err, logs)
	}
	t.Logf("installer DaemonSet ready after %s", time.Since(s).Round(100*time.Millisecond))
}
