//go:build e2e

package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/veil-runtime/veil/attestation/initdata"
	"github.com/veil-runtime/veil/tools/e2e/harness"
	"github.com/veil-runtime/veil/tools/e2e/testimages"
)

// TestConfidentialOutput is issue 12's "output nobody may read never
// blocks the workload", through crictl under veil-dev: a pod whose
// init-data policy denies reading output (allow_read_output = false, the
// confidential default) runs a container that writes 10 MiB to stdout, ten
// times the agent's buffer. The agent drains it in the guest, so the
// container runs to completion and crictl reports its exit code 0; the
// host never sees the output, and crictl logs shows the one line the shim
// writes in its place. Before the fix the container blocked on its next
// write once 1 MiB was buffered, forever (kata#10680 has the same bug).
// It runs when VEIL_E2E_HANDLERS names veil-dev.
func TestConfidentialOutput(t *testing.T) {
	ctx := veilDevTest(t, "veil-dev-output", 15*time.Minute)

	// allow_unbound_containers: the policy binds no container spec, so it
	// lets the host's spec run (within the guest's hardening).
	doc := env.VeilDevInitData("allow_read_output = false\nallow_unbound_containers = true\n")
	ann, err := initdata.EncodeAnnotation([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	pod, err := env.RunPodWith(ctx, harness.VeilDev, "conf-output", func(c map[string]any) {
		c["annotations"] = map[string]string{initdata.Annotation: ann}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		_ = env.RemovePod(ctx, pod)
	})

	const secret = "output the host must not see"
	script := "head -c 10485760 /dev/zero && echo '" + secret + "'"
	cfg := harness.ContainerConfig("writer", env.Image(testimages.BusyboxImage), []string{"sh", "-c", script}, false)
	id, err := env.StartContainer(ctx, pod, cfg)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	st, err := env.WaitContainer(ctx, id, "CONTAINER_EXITED", 5*time.Minute)
	if err != nil {
		t.Fatalf("a container writing 10 MiB nobody may read: %v (blocked on its output?)", err)
	}
	if st.ExitCode != 0 {
		t.Fatalf("container exit code %d (%s), want 0", st.ExitCode, st.Reason)
	}
	t.Logf("10 MiB written and drained in the guest; exit 0 reported after %s", time.Since(start).Round(100*time.Millisecond))

	// crictl logs prints the stdout stream on its stdout and the stderr
	// stream on its stderr: the denial line is on stderr, the output nowhere.
	var stderr strings.Builder
	cmd := env.Crictl(ctx, "logs", id)
	cmd.Stderr = &stderr
	stdout, err := env.Run(ctx, cmd)
	if err != nil {
		t.Fatalf("crictl logs: %v (%s)", err, stderr.String())
	}
	const want = "veil: output not readable by the host: denied by the confidential agent policy (rule allow_read_output)\n"
	if stderr.String() != want || stdout != "" {
		t.Errorf("crictl logs: stdout %d bytes %.80q, stderr %q; want no stdout and the one line %q", len(stdout), stdout, stderr.String(), want)
	}
	if strings.Contains(stdout+stderr.String(), secret) {
		t.Errorf("the container's output reached the host's log")
	}
}
