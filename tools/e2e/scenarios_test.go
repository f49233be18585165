//go:build e2e

package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/veil-runtime/veil/tools/e2e/harness"
	"github.com/veil-runtime/veil/tools/e2e/testimages"
)

var kernelRelease = regexp.MustCompile(`^\d+\.\d+\.\d+\S*$`)

// hostKernel is this machine's kernel release.
func hostKernel(t *testing.T) string {
	out, err := exec.Command("uname", "-r").Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

// checkKernel asserts that a container's `uname -r` is a kernel release:
// the host's under runc, another one (the guest's) under veil.
func checkKernel(t *testing.T, handler, got string) {
	t.Helper()
	got = strings.TrimSpace(got)
	if !kernelRelease.MatchString(got) {
		t.Fatalf("uname -r printed %q, not a kernel release", got)
	}
	host := hostKernel(t)
	switch handler {
	case harness.Runc:
		if got != host {
			t.Errorf("runc container runs kernel %s, host runs %s", got, host)
		}
	default:
		if got == host {
			t.Errorf("%s container runs the host's kernel %s, not its VM's", handler, got)
		}
	}
}

func TestCtrRunUname(t *testing.T) {
	forEachHandler(t, func(t *testing.T, handler string) {
		ctx := testContext(t, 5*time.Minute)
		image := env.Image(testimages.BusyboxImage)
		if _, err := env.Run(ctx, env.Ctr(ctx, "images", "pull", "--plain-http", image)); err != nil {
			t.Fatal(err)
		}
		args := append([]string{"run", "--rm"}, env.CtrRuntimeArgs(env.Handlers[handler])...)
		args = append(args, image, "uname-"+handler, "uname", "-r")
		out, err := env.Run(ctx, env.Ctr(ctx, args...))
		if err != nil {
			t.Fatal(err)
		}
		checkKernel(t, handler, out)
		if left, _ := env.Run(ctx, env.Ctr(ctx, "containers", "list", "-q")); strings.TrimSpace(left) != "" {
			t.Errorf("ctr run --rm left containers: %s", left)
		}
	})
}

// TestCrictlLifecycle walks one container through runp, create, start,
// logs, exec (plain and with a terminal), stats, stop, rm and rmp.
func TestCrictlLifecycle(t *testing.T) {
	forEachHandler(t, func(t *testing.T, handler string) {
		ctx := testContext(t, 10*time.Minute)
		pod := runPod(t, ctx, handler, "lifecycle-"+handler)
		id, err := env.StartContainer(ctx, pod, harness.ContainerConfig("main", env.Image(testimages.BusyboxImage),
			[]string{"sh", "-c", `trap "echo got-term; exit 0" TERM; echo "kernel $(uname -r)"; sleep 3600 & wait`}, false))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := env.WaitContainer(ctx, id, "CONTAINER_RUNNING", time.Minute); err != nil {
			t.Fatal(err)
		}

		// logs: the first line is written before the container sleeps.
		var logs string
		deadline := time.Now().Add(30 * time.Second)
		for !strings.Contains(logs, "kernel ") && time.Now().Before(deadline) {
			logs = crictl(t, ctx, "logs", id)
			time.Sleep(100 * time.Millisecond) // poll interval while the log is written
		}
		kernel, ok := strings.CutPrefix(strings.TrimSpace(logs), "kernel ")
		if !ok {
			t.Fatalf("crictl logs: %q, want a line starting with \"kernel \"", logs)
		}
		checkKernel(t, handler, kernel)

		// exec, synchronous (CRI ExecSync) and streamed (CRI Exec): output
		// and exit code come back.
		for _, mode := range [][]string{{"--sync"}, nil} {
			args := append(append([]string{"exec"}, mode...), id, "sh", "-c", "echo out-$((6*7))")
			if out := crictl(t, ctx, args...); strings.TrimSpace(out) != "out-42" {
				t.Errorf("crictl %v printed %q, want out-42", args, out)
			}
			args = append(append([]string{"exec"}, mode...), id, "sh", "-c", "exit 7")
			_, err = env.Run(ctx, env.Crictl(ctx, args...))
			if !exitedWith(err, 7) {
				t.Errorf("crictl %v: %v, want exit code 7", args, err)
			}
		}

		// exec -it: the process gets a terminal.
		out, err := harness.RunWithTTY(env.Crictl(ctx, "exec", "-it", id, "sh", "-c", "tty; echo tty-$((6*7))"))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "/dev/pts/") || !strings.Contains(out, "tty-42") {
			t.Errorf("crictl exec -it printed %q, want a /dev/pts/N terminal and tty-42", out)
		}

		// stats: the runtime reports the container's memory.
		var stats struct {
			Stats []struct {
				Attributes struct{ ID string }
				Memory     *struct {
					WorkingSetBytes *struct{ Value string }
				}
			}
		}
		if err := json.Unmarshal([]byte(crictl(t, ctx, "stats", "-o", "json", "--id", id)), &stats); err != nil {
			t.Fatal(err)
		}
		if len(stats.Stats) != 1 || stats.Stats[0].Attributes.ID != id || stats.Stats[0].Memory == nil ||
			stats.Stats[0].Memory.WorkingSetBytes == nil || stats.Stats[0].Memory.WorkingSetBytes.Value == "" ||
			stats.Stats[0].Memory.WorkingSetBytes.Value == "0" {
			t.Errorf("crictl stats: %+v, want one entry for %s with a working set", stats, id)
		}

		// stop: SIGTERM reaches the container's process, which exits 0.
		start := time.Now()
		crictl(t, ctx, "stop", "--timeout", "30", id)
		st, err := env.InspectContainer(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if st.State != "CONTAINER_EXITED" || st.ExitCode != 0 || time.Since(start) > 20*time.Second {
			t.Errorf("after crictl stop: %+v after %s, want exited 0 well before the 30s timeout", st, time.Since(start))
		}
		if logs := crictl(t, ctx, "logs", id); !strings.Contains(logs, "got-term") {
			t.Errorf("container log %q lacks got-term", logs)
		}

		crictl(t, ctx, "rm", id)
		if out := crictl(t, ctx, "ps", "-a", "-q", "--id", id); strings.TrimSpace(out) != "" {
			t.Errorf("container %s still listed after rm: %q", id, out)
		}
		crictl(t, ctx, "stopp", pod.ID)
		crictl(t, ctx, "rmp", pod.ID)
		if out := crictl(t, ctx, "pods", "-q", "--id", pod.ID); strings.TrimSpace(out) != "" {
			t.Errorf("pod %s still listed after rmp: %q", pod.ID, out)
		}
	})
}

// exitedWith reports whether a crictl exec error carries the exec'd
// command's exit code: as crictl's own status or in its message.
func exitedWith(err error, code int) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	return ee.ExitCode() == code ||
		regexp.MustCompile(fmt.Sprintf(`(exit code|exited with) %d\b`, code)).MatchString(err.Error())
}

// TestTwoContainersOnePod runs a web server and a client in one pod: the
// client reaches the server on the pod's loopback, so they share its
// network namespace.
func TestTwoContainersOnePod(t *testing.T) {
	forEachHandler(t, func(t *testing.T, handler string) {
		ctx := testContext(t, 10*time.Minute)
		pod := runPod(t, ctx, handler, "two-"+handler)
		server, err := env.StartContainer(ctx, pod, harness.ContainerConfig("server",
			env.Image("e2e-test-images/httpd:2.4.39-4"), nil, false))
		if err != nil {
			t.Fatal(err)
		}
		client, err := env.StartContainer(ctx, pod, harness.ContainerConfig("client",
			env.Image(testimages.BusyboxImage), []string{"sleep", "3600"}, false))
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range []string{server, client} {
			if _, err := env.WaitContainer(ctx, id, "CONTAINER_RUNNING", time.Minute); err != nil {
				t.Fatal(err)
			}
		}
		if got := strings.Fields(crictl(t, ctx, "ps", "-q", "--pod", pod.ID)); len(got) != 2 {
			t.Errorf("crictl ps --pod lists %v, want the two containers", got)
		}
		var page string
		deadline := time.Now().Add(time.Minute)
		for time.Now().Before(deadline) {
			page, err = env.Run(ctx, env.Crictl(ctx, "exec", client, "wget", "-qO-", "http://127.0.0.1:80/"))
			if err == nil {
				break
			}
			time.Sleep(200 * time.Millisecond) // poll interval while the server starts
		}
		if err != nil || !strings.Contains(page, "httpd") {
			t.Fatalf("client fetching the server over the pod's loopback: %q, %v", page, err)
		}
	})
}

// TestExitCodes checks a container's own exit code and 137 for one killed
// with SIGKILL.
func TestExitCodes(t *testing.T) {
	forEachHandler(t, func(t *testing.T, handler string) {
		ctx := testContext(t, 10*time.Minute)
		pod := runPod(t, ctx, handler, "exit-"+handler)
		image := env.Image(testimages.BusyboxImage)

		failing, err := env.StartContainer(ctx, pod, harness.ContainerConfig("failing", image, []string{"sh", "-c", "exit 3"}, false))
		if err != nil {
			t.Fatal(err)
		}
		st, err := env.WaitContainer(ctx, failing, "CONTAINER_EXITED", 2*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if st.ExitCode != 3 {
			t.Errorf("container running `exit 3` exited %d (%s)", st.ExitCode, st.Reason)
		}

		// sleep as PID 1 ignores SIGTERM; a zero timeout sends SIGKILL at once.
		killed, err := env.StartContainer(ctx, pod, harness.ContainerConfig("killed", image, []string{"sleep", "3600"}, false))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := env.WaitContainer(ctx, killed, "CONTAINER_RUNNING", time.Minute); err != nil {
			t.Fatal(err)
		}
		crictl(t, ctx, "stop", "--timeout", "0", killed)
		st, err = env.WaitContainer(ctx, killed, "CONTAINER_EXITED", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if st.ExitCode != 137 {
			t.Errorf("SIGKILLed container exited %d (%s), want 137", st.ExitCode, st.Reason)
		}
	})
}

// TestPodsLeaveNothingBehind creates and removes ten pods in a row, each
// with a running container, and then finds no pod, container, shim,
// process, mount, network namespace or cgroup of theirs.
func TestPodsLeaveNothingBehind(t *testing.T) {
	forEachHandler(t, func(t *testing.T, handler string) {
		env := ownEnv(t, "churn-"+handler)
		ctx := testContext(t, 20*time.Minute)
		for i := range 10 {
			pod, err := env.RunPod(ctx, handler, "churn-"+handler+"-"+string(rune('a'+i)))
			if err != nil {
				t.Fatal(err)
			}
			id, err := env.StartContainer(ctx, pod, harness.ContainerConfig("sleeper",
				env.Image(testimages.BusyboxImage), []string{"sleep", "3600"}, false))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := env.WaitContainer(ctx, id, "CONTAINER_RUNNING", time.Minute); err != nil {
				t.Fatal(err)
			}
			if err := env.RemovePod(ctx, pod); err != nil {
				t.Fatal(err)
			}
		}
		for _, what := range [][]string{{"pods", "-q"}, {"ps", "-a", "-q"}} {
			out, err := env.Run(ctx, env.Crictl(ctx, what...))
			if err != nil {
				t.Fatal(err)
			}
			if strings.TrimSpace(out) != "" {
				t.Errorf("crictl %s lists: %q", what[0], out)
			}
		}
		left, err := env.Leftovers()
		if err != nil {
			t.Fatal(err)
		}
		if len(left) > 0 {
			t.Errorf("left behind after removing the pods:\n  %s", strings.Join(left, "\n  "))
		}
	})
}
