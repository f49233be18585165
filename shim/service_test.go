package shim

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types"
	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/veil-runtime/veil/hypervisor"
)

func describe(evs []any) string {
	var b []string
	for _, e := range evs {
		b = append(b, eventName(e))
	}
	return strings.Join(b, " ")
}

// eventName is "TaskExit(c1/e1)" and the like.
func eventName(e any) string {
	switch e := e.(type) {
	case *eventstypes.TaskCreate:
		return "TaskCreate(" + e.ContainerID + ")"
	case *eventstypes.TaskStart:
		return "TaskStart(" + e.ContainerID + ")"
	case *eventstypes.TaskExecAdded:
		return "ExecAdded(" + e.ContainerID + "/" + e.ExecID + ")"
	case *eventstypes.TaskExecStarted:
		return "ExecStarted(" + e.ContainerID + "/" + e.ExecID + ")"
	case *eventstypes.TaskOOM:
		return "TaskOOM(" + e.ContainerID + ")"
	case *eventstypes.TaskPaused:
		return "TaskPaused(" + e.ContainerID + ")"
	case *eventstypes.TaskResumed:
		return "TaskResumed(" + e.ContainerID + ")"
	case *eventstypes.TaskExit:
		return fmt.Sprintf("TaskExit(%s/%s=%d)", e.ContainerID, e.ID, e.ExitStatus)
	case *eventstypes.TaskDelete:
		return "TaskDelete(" + e.ContainerID + ")"
	}
	return fmt.Sprintf("%T", e)
}

func names(evs []any) []string {
	var out []string
	for _, e := range evs {
		out = append(out, eventName(e))
	}
	return out
}

func has(name string) func([]any) bool {
	return func(evs []any) bool { return slices.Contains(names(evs), name) }
}

var (
	sandboxAnn   = map[string]string{annotationContainerType: "sandbox", annotationSandboxID: "sb"}
	containerAnn = map[string]string{annotationContainerType: "container", annotationSandboxID: "sb"}
)

// must returns v, panicking (failing the test with a stack) on err.
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// startPodAndContainer creates and starts the sandbox sb and container c1
// (stdout to a file:// log), and returns the log path.
func startPodAndContainer(t *testing.T, h *harness) string {
	t.Helper()
	ctx := context.Background()
	must(h.s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "sb", Bundle: bundle(t, sandboxAnn)}))
	must(h.s.Start(ctx, &taskAPI.StartRequest{ID: "sb"}))
	logPath := filepath.Join(t.TempDir(), "c1.log")
	must(h.s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "c1", Bundle: bundle(t, containerAnn), Stdout: "file://" + logPath,
		Rootfs: []*types.Mount{{Type: "overlay", Source: "overlay", Options: []string{"lowerdir=/l"}}}}))
	must(h.s.Start(ctx, &taskAPI.StartRequest{ID: "c1"}))
	return logPath
}

func TestEventOrder(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	logPath := startPodAndContainer(t, h)

	procSpec, _ := anypb.New(&anypb.Any{}) // content is opaque to the shim
	must(h.s.Exec(ctx, &taskAPI.ExecProcessRequest{ID: "c1", ExecID: "e1", Spec: procSpec}))
	must(h.s.Start(ctx, &taskAPI.StartRequest{ID: "c1", ExecID: "e1"}))
	h.agent.oom <- "c1"
	h.pub.waitFor(t, "TaskOOM", has("TaskOOM(c1)"))
	must(h.s.Pause(ctx, &taskAPI.PauseRequest{ID: "c1"}))
	if st := must(h.s.State(ctx, &taskAPI.StateRequest{ID: "c1"})); st.Status != task.Status_PAUSED {
		t.Errorf("state after pause = %s", st.Status)
	}
	must(h.s.Resume(ctx, &taskAPI.ResumeRequest{ID: "c1"}))

	// The init exits with output still in the agent, and an exec running:
	// the exec is killed and reported first, and the init's exit waits for
	// its output to reach the log.
	logAtExit := make(chan string, 1)
	h.pub.mu.Lock()
	h.pub.onEvt = func(e any) {
		if ex, ok := e.(*eventstypes.TaskExit); ok && ex.ID == "c1" {
			b, _ := os.ReadFile(logPath)
			logAtExit <- string(b)
		}
	}
	h.pub.mu.Unlock()
	init := h.agent.proc("c1", "")
	init.out <- []byte("hello ")
	init.out <- []byte("world\n")
	init.exit <- 3
	h.pub.waitFor(t, "init exit", has("TaskExit(c1/c1=3)"))
	w := must(h.s.Wait(ctx, &taskAPI.WaitRequest{ID: "c1"}))
	if w.ExitStatus != 3 {
		t.Errorf("Wait = %d, want 3", w.ExitStatus)
	}
	if got := <-logAtExit; got != "hello world\n" {
		t.Errorf("log when TaskExit was published = %q: output not drained first", got)
	}
	must(h.s.Delete(ctx, &taskAPI.DeleteRequest{ID: "c1", ExecID: "e1"}))
	must(h.s.Delete(ctx, &taskAPI.DeleteRequest{ID: "c1"}))
	must(h.s.Kill(ctx, &taskAPI.KillRequest{ID: "sb", Signal: 9}))
	h.pub.waitFor(t, "sandbox exit", has("TaskExit(sb/sb=137)"))
	must(h.s.Delete(ctx, &taskAPI.DeleteRequest{ID: "sb"}))
	// Deleting the last task ended the VM before Delete returned: the guest
	// was asked to power off and the VM stopped and cleaned up.
	h.hv.mu.Lock()
	stopped, cleanups := h.hv.stopped, h.hv.cleanups
	h.hv.mu.Unlock()
	if !stopped || cleanups == 0 || !slices.Contains(h.agent.called(), "Shutdown") {
		t.Errorf("after the last Delete: VM stopped %v, cleaned up %d times, agent calls %v", stopped, cleanups, h.agent.called())
	}

	want := []string{
		"TaskCreate(sb)", "TaskStart(sb)", "TaskCreate(c1)", "TaskStart(c1)",
		"ExecAdded(c1/e1)", "ExecStarted(c1/e1)", "TaskOOM(c1)", "TaskPaused(c1)", "TaskResumed(c1)",
		"TaskExit(c1/e1=137)", "TaskExit(c1/c1=3)", "TaskDelete(c1)", "TaskExit(sb/sb=137)", "TaskDelete(sb)",
	}
	if got := names(h.pub.waitFor(t, "sandbox delete", has("TaskDelete(sb)"))); !reflect.DeepEqual(got, want) {
		t.Errorf("events:\n got %v\nwant %v", got, want)
	}
}

func TestExitBeforeStartReturnsIsReportedAfterStart(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	must(h.s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "c1", Bundle: bundle(t, nil)}))
	// The process dies the moment it starts, and the guest reports the exit
	// before StartContainer returns: the exit must still follow TaskStart.
	// (Sending the exit before calling Start raced the waiter against Start
	// for startMu; under -race the waiter won about 1 run in 20 and Start
	// rightly refused a STOPPED container.)
	zero := uint32(0)
	h.agent.exitOnStart = &zero
	must(h.s.Start(ctx, &taskAPI.StartRequest{ID: "c1"}))
	evs := h.pub.waitFor(t, "exit", has("TaskExit(c1/c1=0)"))
	if got := names(evs); !reflect.DeepEqual(got, []string{"TaskCreate(c1)", "TaskStart(c1)", "TaskExit(c1/c1=0)"}) {
		t.Errorf("events = %v", got)
	}
}

// TestVMCrashSaysWhyOnOneLine: when the guest dies (here its agent crashed
// and the kernel panicked), the line that ends each container's output
// names how the VM ended and what its console says of it, on one line; the
// driver's log tails go to the shim's log, not into the container's.
func TestVMCrashSaysWhyOnOneLine(t *testing.T) {
	h := newHarness(t)
	logs := captureLog(h)
	logPath := startPodAndContainer(t, h)

	console := strings.Join([]string{
		`time=2026-12-07T20:26:38.418Z level=INFO msg=ready c=veil-agent`,
		`fatal error: unexpected signal during runtime execution`,
		`[signal SIGBUS: bus error code=0x2 addr=0x4a1000 pc=0x4a1000]`,
		`goroutine 1 gp=0xc000002380 m=0 mp=0x8e1c80 [running]:`,
		`[    9.466476] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000200`,
		`[    9.468972] Kernel Offset: disabled`,
	}, "\n") + "\n"
	if err := os.WriteFile(h.hv.ConsolePath(), []byte(console), 0o600); err != nil {
		t.Fatal(err)
	}
	h.hv.exitErr = fmt.Errorf("%w: qemu (pid 4242) exited with status 0\n--- console.log (tail) ---\n[    9.468972] Kernel Offset: disabled", hypervisor.ErrVMExited)
	// Only the VM ends: the fake agent's connection stays, so the exits
	// come from watchPod (the pod's context ending), as after a real VM's
	// death noticed first.
	h.hv.die()
	h.pub.waitFor(t, "the container's exit", has("TaskExit(c1/c1=255)"))
	must(h.s.Wait(context.Background(), &taskAPI.WaitRequest{ID: "c1"}))

	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	want := "veil: the pod VM failed, so this process is reported exited with status 255: VM exited: qemu (pid 4242) exited with status 0; " +
		"the guest's console says: fatal error: unexpected signal during runtime execution | [signal SIGBUS: bus error code=0x2 addr=0x4a1000 pc=0x4a1000] | " +
		"[    9.466476] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000200\n"
	if !strings.HasSuffix(string(b), want) {
		t.Errorf("container log:\n%s\nwant it to end with:\n%s", b, want)
	}
	if strings.Contains(string(b), "console.log (tail)") {
		t.Errorf("the driver's log tails reached the container's log:\n%s", b)
	}
	if out := logs.String(); !strings.Contains(out, "--- console.log (tail) ---") || !strings.Contains(out, "Attempted to kill init") {
		t.Errorf("the shim's log lacks the VM's account and its console's tail:\n%s", out)
	}
}

func TestVMDeathExitsEveryTask(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	startPodAndContainer(t, h)
	procSpec, _ := anypb.New(&anypb.Any{})
	must(h.s.Exec(ctx, &taskAPI.ExecProcessRequest{ID: "c1", ExecID: "e1", Spec: procSpec}))
	must(h.s.Start(ctx, &taskAPI.StartRequest{ID: "c1", ExecID: "e1"}))

	// QEMU dies; the agent connection goes with it.
	h.hv.die()
	h.agent.disconnect()
	evs := h.pub.waitFor(t, "all exits", func(evs []any) bool {
		n := names(evs)
		return slices.Contains(n, "TaskExit(c1/c1=255)") && slices.Contains(n, "TaskExit(sb/sb=255)")
	})
	n := names(evs)
	if i, j := slices.Index(n, "TaskExit(c1/e1=255)"), slices.Index(n, "TaskExit(c1/c1=255)"); i < 0 || i > j {
		t.Errorf("exec exit must precede init exit: %v", n)
	}
	for _, id := range []string{"sb", "c1"} {
		if w := must(h.s.Wait(ctx, &taskAPI.WaitRequest{ID: id})); w.ExitStatus != 255 {
			t.Errorf("Wait(%s) = %d, want 255", id, w.ExitStatus)
		}
	}
	// A dead VM refuses new work, then everything deletes without the agent.
	_, err := h.s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "c2", Bundle: bundle(t, containerAnn)})
	if !errdefs.IsUnavailable(errgrpc.ToNative(err)) {
		t.Errorf("Create on dead VM: %v, want unavailable", err)
	}
	must(h.s.Delete(ctx, &taskAPI.DeleteRequest{ID: "c1", ExecID: "e1"}))
	must(h.s.Delete(ctx, &taskAPI.DeleteRequest{ID: "c1"}))
	must(h.s.Delete(ctx, &taskAPI.DeleteRequest{ID: "sb"}))
	must(h.s.Shutdown(ctx, &taskAPI.ShutdownRequest{}))
	<-h.sd.Done()
	if h.hv.cleanups == 0 {
		t.Error("VM not cleaned up")
	}
	stateDir := filepath.Join(h.root, "test", "sb")
	if _, err := os.Stat(filepath.Dir(stateDir)); !os.IsNotExist(err) {
		t.Errorf("state dir %s (or its namespace's) left behind: %v", stateDir, err)
	}
	if !slices.Contains(h.mnt.log, "unmount "+filepath.Join(stateDir, "shared")) {
		t.Errorf("shared dir not unmounted: %v", h.mnt.log)
	}
}

func TestCreateSharesMountsAndRewritesSpec(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	must(h.s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "sb", Bundle: bundle(t, sandboxAnn)}))
	hostData := t.TempDir()
	b := bundle(t, containerAnn,
		specs.Mount{Destination: "/proc", Type: "proc", Source: "proc"},
		specs.Mount{Destination: "/data", Type: "bind", Source: hostData, Options: []string{"rbind", "ro"}})
	must(h.s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "c1", Bundle: b,
		Rootfs: []*types.Mount{{Type: "overlay", Source: "overlay", Options: []string{"lowerdir=/l"}}}}))

	shared := filepath.Join(h.root, "test", "sb", "shared")
	wantMounts := []string{
		"rootfs overlay " + filepath.Join(shared, "c1/rootfs"),
		"bind " + hostData + " " + filepath.Join(shared, "c1/mounts/1-data") + " ro",
	}
	if !reflect.DeepEqual(h.mnt.log, wantMounts) {
		t.Errorf("host mounts:\n got %v\nwant %v", h.mnt.log, wantMounts)
	}
	gs := h.agent.specs["c1"]
	if gs == nil {
		t.Fatal("agent got no spec")
	}
	if gs.Mounts[1].Source != "/run/veil/shared/c1/mounts/1-data" || gs.Mounts[0].Source != "proc" {
		t.Errorf("guest mounts = %+v", gs.Mounts)
	}
	for _, ns := range gs.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			t.Errorf("host network namespace passed to the guest: %+v", ns)
		}
	}
	if sb := h.agent.sandboxes; len(sb) != 1 || sb[0].Hostname != "pod-host" || sb[0].Storages[0].MountPoint != guestSharedDir || sb[0].Storages[0].Source != "veilshare" {
		t.Errorf("CreateSandbox = %+v", sb)
	}
	if h.hv.cfg.SharedDir != shared {
		t.Errorf("VM shares %q, want %q", h.hv.cfg.SharedDir, shared)
	}
	// Delete undoes the mounts, newest first.
	h.agent.proc("c1", "").exit <- 0
	must(h.s.Delete(ctx, &taskAPI.DeleteRequest{ID: "c1"}))
	tail := h.mnt.log[len(h.mnt.log)-2:]
	if tail[0] != "unmount "+filepath.Join(shared, "c1/mounts/1-data") || tail[1] != "unmount "+filepath.Join(shared, "c1/rootfs") {
		t.Errorf("unmounts = %v", tail)
	}
	if _, err := os.Stat(filepath.Join(shared, "c1")); !os.IsNotExist(err) {
		t.Errorf("container share left behind: %v", err)
	}
}

func TestDeleteRunningIsRefused(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	startPodAndContainer(t, h)
	_, err := h.s.Delete(ctx, &taskAPI.DeleteRequest{ID: "c1"})
	if !errdefs.IsFailedPrecondition(errgrpc.ToNative(err)) {
		t.Errorf("Delete of running container: %v", err)
	}
	if _, err := h.s.Checkpoint(ctx, &taskAPI.CheckpointTaskRequest{ID: "c1"}); !errdefs.IsNotImplemented(errgrpc.ToNative(err)) {
		t.Errorf("Checkpoint: %v", err)
	}
	// Shutdown with containers left is a no-op.
	must(h.s.Shutdown(ctx, &taskAPI.ShutdownRequest{}))
	select {
	case <-h.sd.Done():
		t.Fatal("shim shut down with containers left")
	default:
	}
}

func TestKillAllStatsPidsUpdate(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	startPodAndContainer(t, h)
	must(h.s.Kill(ctx, &taskAPI.KillRequest{ID: "c1", Signal: 15, All: true}))
	if s := h.agent.signals; len(s) != 1 || !s[0].All || s[0].Signal != 15 || s[0].ContainerId != "c1" {
		t.Errorf("signals = %+v", s)
	}
	st := must(h.s.Stats(ctx, &taskAPI.StatsRequest{ID: "c1"}))
	if !strings.HasSuffix(st.Stats.GetTypeUrl(), "google.protobuf.Timestamp") {
		t.Errorf("stats not passed through: %v", st.Stats.GetTypeUrl())
	}
	sbst := must(h.s.Stats(ctx, &taskAPI.StatsRequest{ID: "sb"}))
	if !strings.Contains(sbst.Stats.GetTypeUrl(), "io.containerd.cgroups.v2.Metrics") {
		t.Errorf("sandbox stats type = %s", sbst.Stats.GetTypeUrl())
	}
	pids := must(h.s.Pids(ctx, &taskAPI.PidsRequest{ID: "c1"}))
	if len(pids.Processes) != 2 || pids.Processes[1].Info == nil {
		t.Errorf("pids = %+v", pids.Processes)
	}
	if sp := must(h.s.Pids(ctx, &taskAPI.PidsRequest{ID: "sb"})); len(sp.Processes) != 1 || sp.Processes[0].Pid != 4242 {
		t.Errorf("sandbox pids = %+v", sp.Processes)
	}
	res, _ := typeurl.MarshalAnyToProto(&timestampLike{})
	res.Value = []byte(`{"cpu":{"shares":512}}`)
	must(h.s.Update(ctx, &taskAPI.UpdateTaskRequest{ID: "c1", Resources: res}))
	if !slices.ContainsFunc(h.agent.called(), func(c string) bool {
		return strings.HasPrefix(c, "UpdateContainer c1 ") && strings.Contains(c, `"shares":512`)
	}) {
		t.Errorf("update not passed on: %v", h.agent.called())
	}
}

// timestampLike is any type typeurl can name, to build an Any whose value
// the test sets.
type timestampLike struct{}

func init() { typeurl.Register(&timestampLike{}, "test", "timestampLike") }

func TestPauseExit(t *testing.T) {
	for _, tc := range []struct {
		sig    uint32
		status uint32
		exits  bool
	}{{9, 137, true}, {15, 0, true}, {2, 0, true}, {0, 0, false}, {17, 0, false}, {28, 0, false}, {1, 129, true}} {
		if s, e := pauseExit(tc.sig); s != tc.status || e != tc.exits {
			t.Errorf("pauseExit(%d) = %d, %v; want %d, %v", tc.sig, s, e, tc.status, tc.exits)
		}
	}
}

func TestConfigPath(t *testing.T) {
	a, err := typeurl.MarshalAnyToProto(&runtimeoptions.Options{ConfigPath: "/etc/veil/dev.toml"})
	if err != nil {
		t.Fatal(err)
	}
	if p, err := configPath(a, "/env.toml"); err != nil || p != "/etc/veil/dev.toml" {
		t.Errorf("configPath = %q, %v; want the option over $VEIL_CONFIG", p, err)
	}
	if p, err := configPath(nil, ""); err != nil || p != "" {
		t.Errorf("configPath(nil) = %q, %v", p, err)
	}
	// nerdctl --runtime io.containerd.veil.v2 passes no options: $VEIL_CONFIG.
	if p, err := configPath(nil, "/env.toml"); err != nil || p != "/env.toml" {
		t.Errorf("configPath(nil, $VEIL_CONFIG) = %q, %v; want /env.toml", p, err)
	}
	empty, err := typeurl.MarshalAnyToProto(&runtimeoptions.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if p, err := configPath(empty, "/env.toml"); err != nil || p != "/env.toml" {
		t.Errorf("configPath(no ConfigPath, $VEIL_CONFIG) = %q, %v; want /env.toml", p, err)
	}
}

// Two Deletes of one exited container at once (containerd's exit handler
// and a RemoveContainer): one deletes it, the other finds it gone; its
// mounts are undone once and TaskDelete is sent once.
func TestConcurrentDeletesDeleteOnce(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	startPodAndContainer(t, h)
	h.agent.proc("c1", "").exit <- 0
	h.pub.waitFor(t, "TaskExit", has("TaskExit(c1/c1=0)"))

	const n = 4
	errs := make(chan error, n)
	for range n {
		go func() {
			_, err := h.s.Delete(ctx, &taskAPI.DeleteRequest{ID: "c1"})
			errs <- errgrpc.ToNative(err)
		}()
	}
	ok := 0
	for range n {
		switch err := <-errs; {
		case err == nil:
			ok++
		case !errdefs.IsNotFound(err):
			t.Errorf("concurrent Delete: %v, want success or not found", err)
		}
	}
	if ok != 1 {
		t.Errorf("%d Deletes succeeded, want 1", ok)
	}
	rootfs := filepath.Join(h.root, "test", "sb", "shared", "c1", "rootfs")
	h.mnt.mu.Lock()
	unmounts := 0
	for _, l := range h.mnt.log {
		if l == "unmount "+rootfs {
			unmounts++
		}
	}
	h.mnt.mu.Unlock()
	if unmounts != 1 {
		t.Errorf("rootfs unmounted %d times, want 1", unmounts)
	}
	evs := h.pub.waitFor(t, "TaskDelete", has("TaskDelete(c1)"))
	deletes := 0
	for _, name := range names(evs) {
		if name == "TaskDelete(c1)" {
			deletes++
		}
	}
	if deletes != 1 {
		t.Errorf("TaskDelete(c1) sent %d times, want 1: %s", deletes, describe(evs))
	}
}
