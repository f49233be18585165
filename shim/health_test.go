package shim

import (
	"bytes"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/log"
	"github.com/sirupsen/logrus"

	"github.com/veil-runtime/veil/shim/config"
)

// syncBuffer is a log sink the shim's goroutines write while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// captureLog sends the shim's log (its long-lived context's logger) to a
// buffer.
func captureLog(h *harness) *syncBuffer {
	buf := &syncBuffer{}
	l := logrus.New()
	l.SetOutput(buf)
	l.SetLevel(logrus.DebugLevel)
	l.SetFormatter(&logrus.TextFormatter{DisableTimestamp: true})
	h.s.ctx = log.WithLogger(h.s.ctx, logrus.NewEntry(l))
	return buf
}

func withHealth(h *harness, interval, timeout time.Duration, failures uint32) {
	h.s.loadConfig = func(string) (config.Config, error) {
		cfg := config.Default()
		cfg.Agent.CallTimeout = config.Duration(5 * time.Second)
		cfg.Agent.HealthInterval = config.Duration(interval)
		cfg.Agent.HealthTimeout = config.Duration(timeout)
		cfg.Agent.HealthFailures = failures
		return cfg, nil
	}
}

// TestHungAgentFailsThePod pins issue 15's "a hung agent is never noticed":
// an agent that stops answering (its connection still open, so nothing
// else notices) fails the pod after health_failures checks: the VM is
// killed, every task exits with 255, and the log says why.
func TestHungAgentFailsThePod(t *testing.T) {
	h := newHarness(t)
	withHealth(h, 20*time.Millisecond, 30*time.Millisecond, 3)
	logs := captureLog(h)
	logPath := startPodAndContainer(t, h)

	h.agent.mu.Lock()
	h.agent.hung = true
	h.agent.mu.Unlock()
	h.pub.waitFor(t, "the container's and the sandbox's exits", func(evs []any) bool {
		return has("TaskExit(c1/c1=255)")(evs) && has("TaskExit(sb/sb=255)")(evs)
	})
	select {
	case <-h.hv.done:
	default:
		t.Error("the hung pod's VM was not killed")
	}
	out := logs.String()
	for _, want := range []string{
		"guest agent health check failed",
		"pod VM died: guest agent is not responding: 3 health checks in a row failed (agent.health_interval 20ms, agent.health_timeout 30ms; last: context deadline exceeded); killing the pod VM",
		`reason="guest agent is not responding`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("shim log lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "guest agent health check failed"); n != 3 {
		t.Errorf("%d failed checks logged before the pod failed, want 3", n)
	}
	// The container's log, what kubectl logs shows, says why it ended.
	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	if want := "veil: the pod VM failed, so this process is reported exited with status 255: guest agent is not responding: 3 health checks in a row failed"; !strings.Contains(string(b), want) {
		t.Errorf("container log %q lacks %q", b, want)
	}
}

// A healthy agent is asked again and again and the pod keeps running.
func TestHealthyAgentKeepsThePod(t *testing.T) {
	h := newHarness(t)
	withHealth(h, 10*time.Millisecond, time.Second, 2)
	startPodAndContainer(t, h)
	for i := range 6 {
		select {
		case <-h.agent.checked:
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d Check calls in 10 s with a 10 ms interval", i)
		}
	}
	if p, err := h.s.currentPod(); err != nil || p.isDead() {
		t.Fatalf("healthy pod: %v, dead %v", err, p != nil && p.isDead())
	}
	for _, e := range h.pub.snapshot() {
		if strings.HasPrefix(eventName(e), "TaskExit") {
			t.Fatalf("healthy pod published %s", eventName(e))
		}
	}
}
