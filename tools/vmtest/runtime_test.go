//go:build vm

package vmtest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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
	for i, rc := range ociRuntimeCases {
		checkRuntimeCommands(t, vms[i], rc.name)
	}
	ms := func(d time.Duration) string { return fmt.Sprintf("%6.0f ms", float64(d)/float64(time.Millisecond)) }
	t.Logf("OCI runtime in the guest, %d rounds, medians: create, start, start to exit, remove, total", rounds)
	for i, rc := range ociRuntimeCases {
		p := got[i]
		t.Logf("  %-10s %s %s %s %s %s", rc.name, ms(median(p.create)), ms(median(p.start)), ms(median(p.wait)), ms(median(p.remove)), ms(median(p.total)))
	}
}

// TestOCIRuntimeCommands runs, with the default runtime (the shared VM),
// every runtime command the agent uses beyond create/start/exec: ps,
// update, pause, resume, kill --all, delete (checkRuntimeCommands).
// TestOCIRuntimeStart runs the same with each runtime.
func TestOCIRuntimeCommands(t *testing.T) {
	checkRuntimeCommands(t, shared, "default")
}

// checkRuntimeCommands exercises a VM's runtime through the agent: its
// process list (ps) holds the init pid; an update of the pids limit
// reaches the container's cgroup; pause and resume change the state; a
// kill --all ends the container with SIGKILL; a second kill --all of the
// stopped container fails only in a way the shim takes for "already gone"
// (shim/kill.go processGone); remove deletes it.
func checkRuntimeCommands(t *testing.T, v *vm, name string) {
	t.Helper()
	ctx := testCtx(t)
	cid := "cmds-" + name
	makeRootfs(t, v, cid)
	var s specs.Spec
	if err := json.Unmarshal(containerSpec("sleep", "600"), &s); err != nil {
		t.Fatal(err)
	}
	s.Mounts = append(s.Mounts, specs.Mount{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"nosuid", "noexec", "nodev", "ro"}})
	spec, err := json.Marshal(&s)
	if err != nil {
		t.Fatal(err)
	}
	cr, err := v.client.Container.CreateContainer(ctx, &api.CreateContainerRequest{ContainerId: cid, Spec: spec, Rootfs: &api.Storage{Driver: "shared", Source: cid + "/rootfs"}})
	if err != nil {
		t.Fatalf("%s: CreateContainer: %v", name, err)
	}
	startContainer(t, ctx, v, cid)

	pids, err := v.client.Container.ListPids(ctx, &api.ListPidsRequest{ContainerId: cid})
	if err != nil || !slices.ContainsFunc(pids.GetProcesses(), func(p *api.ProcessInfo) bool { return p.Pid == cr.Pid }) {
		t.Fatalf("%s: ListPids = %v, %v; want the init pid %d", name, pids, err, cr.Pid)
	}
	if _, err := v.client.Container.UpdateContainer(ctx, &api.UpdateContainerRequest{ContainerId: cid, Resources: []byte(`{"pids":{"limit":42}}`)}); err != nil {
		t.Fatalf("%s: UpdateContainer: %v", name, err)
	}
	if _, err := v.client.Process.ExecProcess(ctx, &api.ExecProcessRequest{ContainerId: cid, ExecId: "pidsmax", Process: processJSON("cat", "/sys/fs/cgroup/pids.max")}); err != nil {
		t.Fatalf("%s: exec: %v", name, err)
	}
	if r := finish(t, ctx, v.client, cid, "pidsmax", false); string(r.stdout) != "42\n" {
		t.Fatalf("%s: pids.max after UpdateContainer = %q (stderr %q), want 42", name, r.stdout, r.stderr)
	}
	for _, step := range []struct {
		call func() error
		want api.Status
	}{
		{func() error {
			_, err := v.client.Container.PauseContainer(ctx, &api.PauseContainerRequest{ContainerId: cid})
			return err
		}, api.Status_STATUS_PAUSED},
		{func() error {
			_, err := v.client.Container.ResumeContainer(ctx, &api.ResumeContainerRequest{ContainerId: cid})
			return err
		}, api.Status_STATUS_RUNNING},
	} {
		if err := step.call(); err != nil {
			t.Fatalf("%s: to %v: %v", name, step.want, err)
		}
		st, err := v.client.Container.StateContainer(ctx, &api.StateContainerRequest{ContainerId: cid})
		if err != nil || st.Status != step.want {
			t.Fatalf("%s: state %v, %v; want %v", name, st.GetStatus(), err, step.want)
		}
	}
	if _, err := v.client.Process.SignalProcess(ctx, &api.SignalProcessRequest{ContainerId: cid, Signal: 9, All: true}); err != nil {
		t.Fatalf("%s: kill --all: %v", name, err)
	}
	if r := finish(t, ctx, v.client, cid, "", false); r.status != 128+9 {
		t.Fatalf("%s: status after SIGKILL = %d, want 137", name, r.status)
	}
	if _, err := v.client.Process.SignalProcess(ctx, &api.SignalProcessRequest{ContainerId: cid, Signal: 9, All: true}); err != nil {
		msg := strings.ToLower(err.Error())
		if !strings.Contains(msg, "container not running") && !strings.Contains(msg, "no such process") && !strings.Contains(msg, "process already finished") && status.Code(err) != codes.NotFound {
			t.Errorf("%s: kill --all of a stopped container: %v; the shim would not see it as gone", name, err)
		}
	}
	if _, err := v.client.Container.RemoveContainer(ctx, &api.RemoveContainerRequest{ContainerId: cid}); err != nil {
		t.Fatalf("%s: RemoveContainer: %v", name, err)
	}
}
