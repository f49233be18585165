//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/veil-runtime/veil/tools/e2e/harness"
)

// env is the one private containerd all scenarios share; TestMain starts it
// and removes it.
var env *harness.Env

// handlers are the CRI handlers every scenario runs under, from
// VEIL_E2E_HANDLERS (comma-separated; default "runc"), except veil-dev:
// its confidential policy (no exec, no host mounts) refuses much of what
// the other scenarios do, by design, so it runs confidential_test.go's
// scenarios instead (confidential, below).
var handlers []string

// confidential is true when VEIL_E2E_HANDLERS names veil-dev.
var confidential bool

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	handlers = strings.Split(os.Getenv("VEIL_E2E_HANDLERS"), ",")
	if handlers[0] == "" {
		handlers = []string{harness.Runc}
	}
	if i := slices.Index(handlers, harness.VeilDev); i >= 0 {
		confidential = true
		handlers = slices.Delete(handlers, i, i+1)
	}
	races, err := harness.CollectRaces(os.Getenv("VEIL_E2E_LOGS"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	env, err = harness.Start(ctx, envOptions("shared"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	code := m.Run()
	if err := env.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: cleaning up:", err)
		code = 1
	}
	if err := races.Check(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		code = 1
	}
	return code
}

// envOptions are the options of an environment whose logs go to the
// subdirectory name of VEIL_E2E_LOGS (when set).
func envOptions(name string) harness.Options {
	opts := harness.Options{Log: slog.New(slog.NewTextHandler(os.Stderr, nil))}
	if dir := os.Getenv("VEIL_E2E_LOGS"); dir != "" {
		opts.LogDir = filepath.Join(dir, name)
	}
	return opts
}

// ownEnv starts an environment for one test alone (so what it checks is not
// disturbed by other tests' leftovers) and removes it when the test ends.
func ownEnv(t *testing.T, name string) *harness.Env {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	e, err := harness.Start(ctx, envOptions(name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Error(err)
		}
	})
	return e
}

// useOwnEnv points the package's env at an environment of t's own for the
// rest of t (tests here do not run in parallel). The veil-dev tests use it:
// containerd pulls their images through veil's proxy snapshotter, which
// leaves the layers to the guest, so an image such as the pause image would
// then have no layer content on the host for a later runc or veil pod to
// unpack (containerd does not fetch it again; shim/README.md, "Guest pull").
func useOwnEnv(t *testing.T, name string) {
	t.Helper()
	shared := env
	env = ownEnv(t, name)
	t.Cleanup(func() { env = shared })
}

// veilDevTest starts a veil-dev test: it runs only when VEIL_E2E_HANDLERS
// names veil-dev (make test's default does), in an environment of its own
// (useOwnEnv) whose veil-dev handler must be able to run, and returns the
// test's context, ending after timeout.
func veilDevTest(t *testing.T, name string, timeout time.Duration) context.Context {
	t.Helper()
	if !confidential {
		t.Skip("veil-dev is not in VEIL_E2E_HANDLERS")
	}
	useOwnEnv(t, name)
	if err := env.CheckHandler(harness.VeilDev); err != nil {
		t.Fatal(err)
	}
	return testContext(t, timeout)
}

// forEachHandler runs fn as a subtest per handler. A handler that cannot run
// here (shim or guest image missing) fails the test: the tier never skips.
func forEachHandler(t *testing.T, fn func(t *testing.T, handler string)) {
	for _, h := range handlers {
		t.Run(h, func(t *testing.T) {
			if err := env.CheckHandler(h); err != nil {
				t.Fatal(err)
			}
			fn(t, h)
		})
	}
}

// crictl runs crictl with args and returns its standard output.
func crictl(t *testing.T, ctx context.Context, args ...string) string {
	t.Helper()
	out, err := env.Run(ctx, env.Crictl(ctx, args...))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// testContext returns a context that ends with the test or after d.
func testContext(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// runPod starts a pod and removes it when the test ends.
func runPod(t *testing.T, ctx context.Context, handler, name string) *harness.Pod {
	t.Helper()
	pod, err := env.RunPod(ctx, handler, name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		// Already gone when the test removed it itself.
		_, _ = env.Run(ctx, env.Crictl(ctx, "rmp", "--force", pod.ID))
	})
	return pod
}
