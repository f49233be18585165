package shim

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/fifo"
	"github.com/containerd/ttrpc"

	"github.com/veil-runtime/veil/guest-agent/api"
	"github.com/veil-runtime/veil/guest-agent/policy"
)

// wantDeniedLine is what a container's log holds when the host may not
// read its output.
const wantDeniedLine = "veil: output not readable by the host: denied by the confidential agent policy (rule allow_read_output)\n"

// deniedRead is the error a confidential agent under the default policy
// answers ReadStdout with: the enforcer's own interceptor decides it.
func deniedRead(t *testing.T) error {
	t.Helper()
	e := policy.NewEnforcer(true)
	e.SetPolicy(policy.Default())
	_, err := e.Intercept(context.Background(), func(v any) error { return nil },
		&ttrpc.UnaryServerInfo{FullMethod: api.MethodReadStdout},
		func(_ context.Context, unmarshal func(any) error) (any, error) {
			if err := unmarshal(&api.ReadStreamRequest{}); err != nil {
				return nil, err
			}
			t.Fatal("the policy let a read of output through")
			return nil, nil
		})
	if err == nil || !readDenied(err) {
		t.Fatalf("the enforcer's answer to ReadStdout = %v, want PermissionDenied", err)
	}
	return err
}

// readFIFOs opens containerd's side of the output FIFOs named, as
// containerd does before it creates the task, and returns their readers.
func readFIFOs(t *testing.T, dir string, names ...string) map[string]io.ReadCloser {
	t.Helper()
	r := map[string]io.ReadCloser{}
	for _, n := range names {
		path := filepath.Join(dir, n)
		if err := syscall.Mkfifo(path, 0o600); err != nil {
			t.Fatal(err)
		}
		f, err := fifo.OpenFifo(context.Background(), path, syscall.O_RDONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		r[n] = f
	}
	return r
}

// waitPumps fails the test when the output pumps do not end (a retry loop
// or a FIFO left open would keep them going).
func waitPumps(t *testing.T, pio *processIO) {
	t.Helper()
	done := make(chan struct{})
	go func() { pio.wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("output pumps still running after the agent denied every read")
	}
}

// When the agent's policy denies reading output, each pump stops at its
// first denial (one read per stream, no retry), stderr gets the one line
// naming the rule, and both FIFOs are closed: containerd reads EOF.
func TestOutputDeniedByPolicy(t *testing.T) {
	for _, tc := range []struct {
		name     string
		st       func(dir string) stdio
		fifos    []string
		wantLine string // the FIFO that gets the line
		reads    int
	}{
		{"stdout and stderr", func(dir string) stdio {
			return stdio{stdout: filepath.Join(dir, "stdout"), stderr: filepath.Join(dir, "stderr")}
		}, []string{"stdout", "stderr"}, "stderr", 2},
		{"stdout only", func(dir string) stdio {
			return stdio{stdout: filepath.Join(dir, "stdout")}
		}, []string{"stdout"}, "stdout", 2},
		{"terminal", func(dir string) stdio {
			return stdio{stdout: filepath.Join(dir, "stdout"), terminal: true}
		}, []string{"stdout"}, "stdout", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newFakeAgent(t)
			a.newProc("c1/")
			a.readErr = deniedRead(t)
			dir := t.TempDir()
			readers := readFIFOs(t, dir, tc.fifos...)
			ctx := context.Background()
			pio, err := startIO(ctx, ctx, a, "ns", "c1", "", tc.st(dir), time.Second, nil)
			if err != nil {
				t.Fatal(err)
			}
			waitPumps(t, pio)
			for name, r := range readers {
				got, err := io.ReadAll(r) // returns only once the shim closed its end
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				want := ""
				if name == tc.wantLine {
					want = wantDeniedLine
				}
				if string(got) != want {
					t.Errorf("%s FIFO = %q, want %q", name, got, want)
				}
			}
			a.mu.Lock()
			reads := a.reads
			a.mu.Unlock()
			if reads != tc.reads {
				t.Errorf("%d reads of denied output, want %d (one per stream, no retry)", reads, tc.reads)
			}
		})
	}
}

func TestDeniedLine(t *testing.T) {
	if got := deniedLine(deniedRead(t)); got != wantDeniedLine {
		t.Errorf("deniedLine = %q, want %q", got, wantDeniedLine)
	}
	// A denial that names no rule still says why, on one line.
	other := deniedLineFor(t, "access refused\nby something else")
	if !strings.HasPrefix(other, "veil: output not readable by the host: access refused by something else") || strings.Count(other, "\n") != 1 {
		t.Errorf("deniedLine without a rule = %q", other)
	}
}

func deniedLineFor(t *testing.T, msg string) string {
	t.Helper()
	return deniedLine(&permissionDenied{msg})
}

type permissionDenied struct{ msg string }

func (e *permissionDenied) Error() string { return e.msg }

// The task's exit is published though its output may not be read, and the
// log (a file:// URI takes both streams) holds the one line.
func TestExitPublishedWhenOutputDenied(t *testing.T) {
	h := newHarness(t)
	h.agent.readErr = deniedRead(t)
	logPath := startPodAndContainer(t, h)
	h.agent.proc("c1", "").exit <- 0
	h.pub.waitFor(t, "init exit", has("TaskExit(c1/c1=0)"))
	if w := must(h.s.Wait(context.Background(), &taskAPI.WaitRequest{ID: "c1"})); w.ExitStatus != 0 {
		t.Errorf("Wait = %d, want 0", w.ExitStatus)
	}
	if b, _ := os.ReadFile(logPath); string(b) != wantDeniedLine {
		t.Errorf("log = %q, want the one denial line %q", b, wantDeniedLine)
	}
}

// Regression: with a file:// log the stdout pump closed the one file when
// stdout ended, so stderr written after that (its last output, or the
// denial line) was lost.
func TestFileLogOutlivesTheFirstStreamToEnd(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c1.log")
	stdout, stderr, err := outputs(context.Background(), stdio{stdout: "file://" + path}, "ns", "c1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(stdout, "out\n"); err != nil {
		t.Fatal(err)
	}
	stdout.Close()
	stdout.Close() // a second Close of one end must not close the other's
	if _, err := io.WriteString(stderr, "err after stdout ended\n"); err != nil {
		t.Fatalf("stderr after stdout's end: %v", err)
	}
	stderr.Close()
	if b, _ := os.ReadFile(path); string(b) != "out\nerr after stdout ended\n" {
		t.Errorf("log = %q", b)
	}
	if _, err := io.WriteString(stderr, "x"); err == nil {
		t.Error("the log file is still open after both streams closed")
	}
}
