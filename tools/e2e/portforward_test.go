//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/veil-runtime/veil/attestation/initdata"
	"github.com/veil-runtime/veil/tools/e2e/harness"
)

// TestPortForward runs `crictl port-forward` (containerd's CRI
// PortForward, what kubectl port-forward uses) against a pod whose server
// listens on 127.0.0.1 only, under every handler: containerd dials
// localhost in the pod's network namespace on the node, which under veil
// holds none of the pod's processes; the shim relays the connection to the
// guest's loopback (shim/portfwd, the agent's PortForward service).
func TestPortForward(t *testing.T) {
	for i, h := range handlers {
		localPort := 19080 + i
		t.Run(h, func(t *testing.T) {
			if err := env.CheckHandler(h); err != nil {
				t.Fatal(err)
			}
			ctx := testContext(t, 10*time.Minute)
			pod := runPod(t, ctx, h, "pf-"+h)
			banner := "portfwd-" + h
			loopbackServer(t, ctx, pod, banner)
			local := crictlPortForward(t, ctx, pod, localPort)

			start := time.Now()
			page, err := httpGetOnce(local)
			if err != nil || !strings.Contains(page, banner) {
				t.Fatalf("GET http://%s/ through crictl port-forward to the pod's 127.0.0.1:8080: %q, %v", local, page, err)
			}
			t.Logf("first HTTP exchange through port-forward (new connection in the pod netns and the guest): %s", time.Since(start).Round(time.Microsecond))
			start = time.Now()
			if page, err := httpGetOnce(local); err != nil || !strings.Contains(page, banner) {
				t.Fatalf("second GET through port-forward: %q, %v", page, err)
			}
			t.Logf("one HTTP round trip through port-forward: %s", time.Since(start).Round(time.Microsecond))

			// The server is on the pod's loopback only: the pod IP does not answer.
			info := inspectPod(t, pod)
			if page, err := httpGetOnce(net.JoinHostPort(info.ip, "8080")); err == nil {
				t.Fatalf("the pod IP answered on 8080 (%q): the server is not on loopback only, so this test proves nothing", page)
			}
		})
	}
}

// TestConfidentialPortForward: under veil-dev the agent's policy decides.
// The handler's default init-data has no allow_port_forward: the
// connection is reset and the shim logs the agent's denial naming the
// rule. A pod whose own init-data sets it is reached.
func TestConfidentialPortForward(t *testing.T) {
	ctx := veilDevTest(t, "veil-dev-portforward", 10*time.Minute)

	t.Run("denied by default", func(t *testing.T) {
		pod := runPod(t, ctx, harness.VeilDev, "pf-denied")
		loopbackServer(t, ctx, pod, "portfwd-denied")
		local := crictlPortForward(t, ctx, pod, 19090)
		if page, err := httpGetOnce(local); err == nil {
			t.Fatalf("port-forward under a policy without allow_port_forward answered %q", page)
		}
		line := waitFileLine(t, filepath.Join(env.LogDir, "containerd.log"), "port forwarding: connecting in the guest", time.Minute)
		if !strings.Contains(line, "port=8080") || !strings.Contains(line, "allow_port_forward") {
			t.Errorf("the shim's log of the refused connection does not name port 8080 and the rule allow_port_forward: %s", line)
		}
	})

	t.Run("allowed by the pod's init-data", func(t *testing.T) {
		doc := env.VeilDevInitData(harness.VeilDevPolicy + "allow_port_forward = true\n")
		ann, err := initdata.EncodeAnnotation([]byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		pod, err := env.RunPodWith(ctx, harness.VeilDev, "pf-allowed", func(c map[string]any) {
			c["annotations"] = map[string]string{initdata.Annotation: ann}
		})
		if err != nil {
			t.Fatal(err)
		}
		removeLater(t, pod)
		loopbackServer(t, ctx, pod, "portfwd-allowed")
		local := crictlPortForward(t, ctx, pod, 19091)
		if page, err := httpGetOnce(local); err != nil || !strings.Contains(page, "portfwd-allowed") {
			t.Fatalf("GET http://%s/ through port-forward with allow_port_forward: %q, %v", local, page, err)
		}
	})
}

// loopbackServer starts a web server on 127.0.0.1:8080 only in pod, whose
// page holds banner, and waits until it listens (crictl port-forward ends
// at the first connection that fails, as kubectl's does).
func loopbackServer(t *testing.T, ctx context.Context, pod *harness.Pod, banner string) {
	t.Helper()
	id, err := env.StartContainer(ctx, pod, harness.ContainerConfig("web", env.Image("e2e-test-images/httpd:2.4.39-4"),
		[]string{"/usr/sbin/httpd", "-addr", "127.0.0.1", "-port", "8080", "-banner", banner}, false))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.WaitContainer(ctx, id, "CONTAINER_RUNNING", 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	waitLogs(t, ctx, id, banner+": listening on 127.0.0.1:8080", 2*time.Minute)
}

// crictlPortForward runs `crictl port-forward POD LOCAL:8080` until the
// test ends and returns the local address once crictl listens.
func crictlPortForward(t *testing.T, ctx context.Context, pod *harness.Pod, localPort int) string {
	t.Helper()
	fwd := env.Crictl(ctx, "port-forward", pod.ID, fmt.Sprintf("%d:8080", localPort))
	out, err := fwd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	fwd.Stderr = &stderr
	if err := fwd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = fwd.Process.Kill()
		_ = fwd.Wait()
		if s := strings.TrimSpace(stderr.String()); s != "" {
			t.Logf("crictl port-forward stderr: %s", s)
		}
	})
	// crictl prints "Forwarding from 127.0.0.1:PORT -> 8080" once it listens.
	line, err := bufio.NewReader(out).ReadString('\n')
	if !strings.HasPrefix(line, "Forwarding from") {
		t.Fatalf("crictl port-forward printed %q (%v), stderr %q", line, err, stderr.String())
	}
	go func() { _, _ = io.Copy(io.Discard, out) }()
	return net.JoinHostPort("127.0.0.1", fmt.Sprint(localPort))
}

// waitFileLine returns the first line of path containing want, reading the
// file again until it appears or timeout passes (the shim logs through
// containerd, which writes when it gets the line).
func waitFileLine(t *testing.T, path, want string, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, want) {
				return l
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s has no line with %q after %s", path, want, timeout)
		}
		time.Sleep(200 * time.Millisecond) // poll interval for the log file
	}
}
