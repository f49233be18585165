package shim

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/veil-runtime/veil/shim/network"
)

// hookRecord is one line a recording hook writes: its stage, the network
// namespace of the pid in its state, its own, and the state it got.
type hookRecord struct {
	stage, pidNS, ownNS string
	state               specs.State
}

// recordingHook is a hook that appends a line to log: stage, the netns of
// the state's pid, its own netns, then its stdin.
func recordingHook(t *testing.T, log, stage string) specs.Hook {
	t.Helper()
	script := `in=$(cat); pid=$(echo "$in" | sed 's/.*"pid":\([0-9]*\).*/\1/'); ` +
		`echo "$1 $(readlink /proc/$pid/ns/net) $(readlink /proc/self/ns/net) $in" >> "$2"`
	return specs.Hook{Path: "/bin/sh", Args: []string{"sh", "-c", script, "hook", stage, log}}
}

func readHookLog(t *testing.T, path string) []hookRecord {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []hookRecord
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.SplitN(l, " ", 4)
		if len(f) != 4 {
			t.Fatalf("hook log line %q", l)
		}
		r := hookRecord{stage: f[0], pidNS: f[1], ownNS: f[2]}
		if err := json.Unmarshal([]byte(f[3]), &r.state); err != nil {
			t.Fatalf("hook stdin %q: %v", f[3], err)
		}
		out = append(out, r)
	}
	return out
}

// nsID is how readlink shows the namespace pinned at path.
func nsID(t *testing.T, path string) string {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("net:[%d]", st.Ino)
}

// shimNetNS is the network namespace the shim's threads are in, read from
// the calling thread: /proc/self is the main thread's, and a goroutine that
// ended locked in a pod's namespace (shim/network, portfwd) leaves the main
// thread there, parked for good, where the runtime cannot end it.
func shimNetNS(t *testing.T) string {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	return nsID(t, "/proc/thread-self/ns/net")
}

// Each hook runs in the shim's network namespace, the runtime's, as runc
// runs them, and its state's pid is in the pod's: nerdctl's CNI hook makes
// its bridge where it runs and eth0 in /proc/<pid>/ns/net (issue 15: run
// inside the pod's namespace, the bridge was made there too and became a
// network card of the VM).
func TestHooksRunInRuntimeNetNSWithPodPid(t *testing.T) {
	dir := t.TempDir()
	nsPath := filepath.Join(dir, "netns")
	if err := newNetNS(nsPath); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := removeNetNS(nsPath); err != nil {
			t.Error(err)
		}
	})
	log := filepath.Join(dir, "hooks.log")
	spec := &specs.Spec{Version: "1.2.0", Annotations: map[string]string{"a": "b"}, Hooks: &specs.Hooks{
		Prestart:      []specs.Hook{recordingHook(t, log, "prestart")}, //nolint:staticcheck // deprecated, still used (NVIDIA)
		CreateRuntime: []specs.Hook{recordingHook(t, log, "createRuntime1"), recordingHook(t, log, "createRuntime2")},
		Poststart:     []specs.Hook{recordingHook(t, log, "poststart")},
		Poststop:      []specs.Hook{recordingHook(t, log, "poststop")},
	}}
	hs, err := hostHooks("c1", "/run/bundle/c1", spec)
	if err != nil {
		t.Fatal(err)
	}
	hs.netns = nsPath
	if err := hs.runCreate(context.Background()); err != nil {
		t.Fatal(err)
	}
	hs.runPoststart(context.Background())
	hs.runPoststop(context.Background())

	want := nsID(t, nsPath)
	host := shimNetNS(t)
	if host == want {
		t.Fatalf("the new namespace %s is the test's own %s", want, host)
	}
	recs := readHookLog(t, log)
	var stages []string
	for _, r := range recs {
		stages = append(stages, r.stage)
		wantStatus := map[string]specs.ContainerState{"poststart": specs.StateRunning, "poststop": specs.StateStopped}[r.stage]
		if wantStatus == "" {
			wantStatus = specs.StateCreating
		}
		st := r.state
		if st.Version != "1.2.0" || st.ID != "c1" || st.Bundle != "/run/bundle/c1" || st.Status != wantStatus || st.Annotations["a"] != "b" || st.Pid <= 0 {
			t.Errorf("%s: state %+v, want version 1.2.0, id c1, bundle /run/bundle/c1, status %s, annotations, a pid", r.stage, st, wantStatus)
		}
		if r.ownNS != host || r.pidNS != want {
			t.Errorf("%s: ran in %s, its state's pid in %s; want it in the shim's %s, its pid in the pod's %s", r.stage, r.ownNS, r.pidNS, host, want)
		}
	}
	if got := strings.Join(stages, ","); got != "prestart,createRuntime1,createRuntime2,poststart,poststop" {
		t.Errorf("hooks ran in the order %s", got)
	}
}

func TestHookTimeoutAndFailure(t *testing.T) {
	one := 1
	start := time.Now()
	err := runHooks(context.Background(), "createRuntime", []specs.Hook{{Path: "/bin/sleep", Args: []string{"sleep", "30"}, Timeout: &one}}, "", specs.State{ID: "c1"})
	if err == nil || !strings.Contains(err.Error(), "timed out after 1s") || time.Since(start) > 10*time.Second {
		t.Errorf("a hook past its 1 s timeout: %v after %s", err, time.Since(start))
	}
	err = runHooks(context.Background(), "prestart", []specs.Hook{{Path: "/bin/sh", Args: []string{"sh", "-c", "echo no network >&2; exit 3"}}}, "", specs.State{ID: "c1"})
	if err == nil || !strings.Contains(err.Error(), "prestart hook 0 (/bin/sh) of container c1: exit status 3: no network") {
		t.Errorf("a failing hook: %v", err)
	}
	// The first failing create hook stops the rest; a poststop failure
	// does not.
	log := filepath.Join(t.TempDir(), "hooks.log")
	fail := specs.Hook{Path: "/bin/false"}
	hs, err := hostHooks("c1", "/b", &specs.Spec{Hooks: &specs.Hooks{
		CreateRuntime: []specs.Hook{fail, recordingHook(t, log, "after-failed-create")},
		Poststop:      []specs.Hook{fail, recordingHook(t, log, "after-failed-poststop")},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := hs.runCreate(context.Background()); err == nil {
		t.Error("a failing createRuntime hook did not fail create")
	}
	hs.runPoststop(context.Background())
	recs := readHookLog(t, log)
	if len(recs) != 1 || recs[0].stage != "after-failed-poststop" {
		t.Errorf("hooks that ran after a failure: %v", recs)
	}
}

// A shim that died leaves the pod's namespace pinned; containerd's cleanup
// (shim delete) removes it with the rest of the pod's state.
func TestCleanupTaskRemovesPodNetNS(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "ns"), 0o700); err != nil {
		t.Fatal(err)
	}
	pin := filepath.Join(root, "ns", "sb.netns")
	if err := newNetNS(pin); err != nil {
		t.Fatal(err)
	}
	if err := cleanupTask(context.Background(), root, "ns", "sb", "sb", &fakeMounter{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(pin); !os.IsNotExist(err) {
		_ = removeNetNS(pin)
		t.Errorf("pod network namespace pin left after cleanup: %v", err)
	}
}

func TestContainerNamespaceHooksRefused(t *testing.T) {
	for _, h := range []*specs.Hooks{
		{CreateContainer: []specs.Hook{{Path: "/usr/bin/nvidia-ctk"}}},
		{StartContainer: []specs.Hook{{Path: "/usr/bin/nvidia-ctk"}}},
	} {
		_, err := hostHooks("c1", "/b", &specs.Spec{Hooks: h})
		if !errdefs.IsNotImplemented(err) || !strings.Contains(err.Error(), "/usr/bin/nvidia-ctk") || !strings.Contains(err.Error(), "container c1") {
			t.Errorf("hooks %+v: %v", h, err)
		}
	}
}

// The first container's create hooks run before the pod's network is
// attached to the VM, in a namespace the shim made when the spec asked
// for a new one without a path (nerdctl's default network), which is
// gone after the pod; the hooks are not in the guest's spec.
func TestCreateRunsHooksBeforeVMNetwork(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	dir := t.TempDir()
	log := filepath.Join(dir, "hooks.log")
	var attachedNS, hooksAtAttach string
	h.s.attachNet = func(path string) (*network.Attachment, error) {
		attachedNS = nsID(t, path)
		b, _ := os.ReadFile(log)
		hooksAtAttach = string(b)
		return &network.Attachment{}, nil
	}
	b := bundle(t, nil)
	spec, err := readSpec(b)
	if err != nil {
		t.Fatal(err)
	}
	spec.Linux.Namespaces = []specs.LinuxNamespace{{Type: specs.NetworkNamespace}}
	spec.Hooks = &specs.Hooks{
		CreateRuntime: []specs.Hook{recordingHook(t, log, "createRuntime")},
		Poststart:     []specs.Hook{recordingHook(t, log, "poststart")},
		Poststop:      []specs.Hook{recordingHook(t, log, "poststop")},
	}
	js, _ := json.Marshal(spec)
	if err := os.WriteFile(filepath.Join(b, "config.json"), js, 0o644); err != nil {
		t.Fatal(err)
	}
	must(h.s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "c1", Bundle: b}))
	if !strings.HasPrefix(hooksAtAttach, "createRuntime ") {
		t.Errorf("hook log when the VM's network was attached: %q", hooksAtAttach)
	}
	nsPin := filepath.Join(h.root, "test", "c1.netns")
	if attachedNS == "" || attachedNS == shimNetNS(t) {
		t.Errorf("VM network attached from %q, not a new namespace", attachedNS)
	}
	var gspec specs.Spec
	h.agent.mu.Lock()
	created := h.agent.creates[0]
	h.agent.mu.Unlock()
	if err := json.Unmarshal(created.Spec, &gspec); err != nil {
		t.Fatal(err)
	}
	if gspec.Hooks != nil {
		t.Errorf("hooks sent to the guest: %+v", gspec.Hooks)
	}
	must(h.s.Start(ctx, &taskAPI.StartRequest{ID: "c1"}))
	h.agent.proc("c1", "").exit <- 0
	h.pub.waitFor(t, "exit", has("TaskExit(c1/c1=0)"))
	must(h.s.Delete(ctx, &taskAPI.DeleteRequest{ID: "c1"}))
	recs := readHookLog(t, log)
	if len(recs) != 3 || recs[0].stage != "createRuntime" || recs[1].stage != "poststart" || recs[2].stage != "poststop" {
		t.Fatalf("hooks ran: %+v", recs)
	}
	shimNS := shimNetNS(t)
	for _, r := range recs {
		if r.ownNS != shimNS || r.pidNS != attachedNS {
			t.Errorf("%s ran in %s (state pid in %s); want the shim's %s (the pod's %s)", r.stage, r.ownNS, r.pidNS, shimNS, attachedNS)
		}
	}
	if _, err := os.Stat(nsPin); !os.IsNotExist(err) {
		t.Errorf("the pod's namespace pin %s is left after the pod: %v", nsPin, err)
	}
}
