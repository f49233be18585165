//go:build e2e

package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

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
			portForward(t, h, localPort)
		})
	}
}

func portForward(t *testing.T, handler string, localPort int) {
	ctx := testContext(t, 10*time.Minute)
	pod := runPod(t, ctx, handler, "pf-"+handler)
	banner := "portfwd-" + handler
	web, err := env.StartContainer(ctx, pod, harness.ContainerConfig("web", env.Image("e2e-test-images/httpd:2.4.39-4"),
		[]string{"/usr/sbin/httpd", "-addr", "127.0.0.1", "-port", "8080", "-banner", banner}, false))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.WaitContainer(ctx, web, "CONTAINER_RUNNING", 2*time.Minute); err != nil {
		t.Fatal(err)
	}

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

	// Retried until the server in the pod has started.
	local := net.JoinHostPort("127.0.0.1", fmt.Sprint(localPort))
	start := time.Now()
	page, err := httpGetFromNode(local, 2*time.Minute)
	if err != nil || !strings.Contains(page, banner) {
		t.Fatalf("GET http://%s/ through crictl port-forward to the pod's 127.0.0.1:8080: %q, %v", local, page, err)
	}
	t.Logf("port-forward answered %s after the container ran", time.Since(start).Round(time.Millisecond))
	start = time.Now()
	if page, err := httpGetFromNode(local, 10*time.Second); err != nil || !strings.Contains(page, banner) {
		t.Fatalf("second GET through port-forward: %q, %v", page, err)
	}
	t.Logf("one HTTP round trip through port-forward: %s", time.Since(start).Round(time.Microsecond))

	// The server is on the pod's loopback only: the pod IP does not answer.
	info := inspectPod(t, pod)
	if page, err := httpGetOnce(net.JoinHostPort(info.ip, "8080")); err == nil {
		t.Fatalf("the pod IP answered on 8080 (%q): the server is not on loopback only, so this test proves nothing", page)
	}
}
