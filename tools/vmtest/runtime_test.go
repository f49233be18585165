//go:build vm

package vmtest

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/veil-runtime/veil/guest-agent/api"
	agentboot "github.com/veil-runtime/veil/guest-agent/boot"
)

// ociRuntimeCase is one way the guest can run containers.
type ociRuntimeCase struct {
	name string
	args []string
	// logged is what the agent's "oci runtime" console line must say.
	logged []string
}

var ociRuntimeCases = []ociRuntimeCase{
	{"crun", []string{agentboot.OCIRuntimeParam + "=crun"}, []string{"runtime=crun", "sealed=true"}},
	{"runc", []string{agentboot.OCIRuntimeParam + "=runc"}, []string{"runtime=runc", "sealed=true"}},
	{"runc-clone", []string{agentboot.OCIRuntimeParam + "=runc", agentboot.OCIRuntimeCloneParam + "=1"}, []string{"runtime=runc", "sealed=false"}},
	{"crun-clone", []string{agentboot.OCIRuntimeParam + "=crun", agentboot.OCIRuntimeCloneParam + "=1"}, []string{"runtime=crun", "sealed=false"}},
}

// TestOCIRuntimeStart measures a container's start in the guest with each
// OCI runtime the image carries, in one VM per runtime, back to back: round
// after round, one container per VM, each created, started and waited for
// (its output checked), then removed. It logs the medians per runtime. It
// fails if a runtime cannot run the container or the agent did not use the
// runtime it was asked for.
//
//	VEIL_GUEST_DIR=build/guest go test -tags vm -v -run TestOCIRuntimeStart ./tools/vmtest
//
// VEIL_VMTEST_RUNTIME_ROUNDS sets the number of rounds (default 8).
func TestOCIRuntimeStart(t *testing.T) {
	rounds := 8
	if s := os.Getenv("VEIL_VMTEST_RUNTIME_ROUNDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("VEIL_VMTEST_RUNTIME_ROUNDS=%q: want a positive number", s)
		}
		rounds = n
	}
	vms := make([]*vm, len(ociRuntimeCases))
	for i, rc := range ociRuntimeCases {
		ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
		v, err := bootArgs(ctx, "rt-"+rc.name, true, rc.args)
		cancel()
		if err != nil {
			t.Fatalf("booting the %s VM: %v", rc.name, err)
		}
		vms[i] = v
		t.Cleanup(func() {
			if err := v.shutdown(); err != nil {
				t.Errorf("shutting down the %s VM: %v", rc.name, err)
			}
		})
		line := consoleLine(v.console(), "oci runtime")
		for _, want := range rc.logged {
			if !strings.Contains(line, want) {
				t.Fatalf("%s VM: the agent's runtime line %q lacks %q", rc.name, line, want)
			}
		}
	}

	type phases struct{ create, start, wait, remove, total []time.Duration }
	got := make([]phases, len(ociRuntimeCases))
	for r := range rounds {
		for i, rc := range ociRuntimeCases {
			v := vms[i]
			cid := fmt.Sprintf("r%d", r)
			makeRootfs(t, v, cid)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			t0 := time.Now()
			if _, err := v.client.Container.CreateContainer(ctx, &api.CreateContainerRequest{
				ContainerId: cid, Spec: containerSpec("echo", "ok"),
				Rootfs: &api.Storage{Driver: "shared", Source: cid + "/rootfs"},
			}); err != nil {
				cancel()
				t.Fatalf("%s: CreateContainer %s: %v\nconsole:\n%s", rc.name, cid, err, v.console())
			}
			t1 := time.Now()
			if _, err := v.client.Container.StartContainer(ctx, &api.StartContainerRequest{ContainerId: cid}); err != nil {
				cancel()
				t.Fatalf("%s: StartContainer %s: %v", rc.name, cid, err)
			}
			t2 := time.Now()
			res := finish(t, ctx, v.client, cid, "", false)
			t3 := time.Now()
			if res.status != 0 || string(res.stdout) != "ok\n" {
				cancel()
				t.Fatalf("%s: container %s: status %d, stdout %q, stderr %q", rc.name, cid, res.status, res.stdout, res.stderr)
			}
			if _, err := v.client.Container.RemoveContainer(ctx, &api.RemoveContainerRequest{ContainerId: cid}); err != nil {
				cancel()
				t.Fatalf("%s: RemoveContainer %s: %v", rc.name, cid, err)
			}
			t4 := time.Now()
			cancel()
			p := &got[i]
			p.create = append(p.create, t1.Sub(t0))
			p.start = append(p.start, t2.Sub(t1))
			p.wait = append(p.wait, t3.Sub(t2))
			p.remove = append(p.remove, t4.Sub(t3))
			p.total = append(p.total, t4.Sub(t0))
		}
	}
	ms := func(d time.Duration) string { return fmt.Sprintf("%6.0f ms", float64(d)/float64(time.Millisecond)) }
	t.Logf("OCI runtime in the guest, %d rounds, medians: create, start, start to exit, remove, total", rounds)
	for i, rc := range ociRuntimeCases {
		p := got[i]
		t.Logf("  %-10s %s %s %s %s %s", rc.name, ms(median(p.create)), ms(median(p.start)), ms(median(p.wait)), ms(median(p.remove)), ms(median(p.total)))
	}
}
