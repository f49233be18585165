package shim

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"

	"github.com/veil-runtime/veil/hypervisor"
	"github.com/veil-runtime/veil/shim/config"
)

// TestPodTransitions: every pair of states, allowed or not.
func TestPodTransitions(t *testing.T) {
	allowed := map[[2]podState]bool{
		{podBooting, podReady}:  true,
		{podBooting, podDead}:   true, // the boot failed
		{podReady, podStopping}: true,
		{podReady, podDead}:     true, // the VM died
		{podStopping, podDead}:  true,
	}
	states := []podState{podBooting, podReady, podStopping, podDead}
	for _, from := range states {
		for _, to := range states {
			if got, want := canMove(from, to), allowed[[2]podState{from, to}]; got != want {
				t.Errorf("canMove(%s, %s) = %v, want %v", from, to, got, want)
			}
		}
	}
}

func TestTransitionRefusesAMoveOffTheTable(t *testing.T) {
	ctx := context.Background()
	p := &pod{id: "sb", st: podBooting}
	if from, err := p.transition(ctx, podReady); err != nil || from != podBooting {
		t.Fatalf("booting -> ready: from %s, %v", from, err)
	}
	from, err := p.transition(ctx, podBooting)
	if err == nil || !strings.Contains(err.Error(), "pod sb: moving from ready to booting") || from != podReady || p.state() != podReady {
		t.Errorf("ready -> booting: from %s, %v, now %s; want an error naming both states and the pod still ready", from, err, p.state())
	}
	// stop: ready -> stopping; a dead pod stays dead.
	p.stop(ctx)
	if p.state() != podStopping {
		t.Errorf("stop on a ready pod: %s, want stopping", p.state())
	}
	dead := &pod{id: "x", st: podDead}
	dead.stop(ctx)
	if dead.state() != podDead {
		t.Errorf("stop on a dead pod: %s, want dead", dead.state())
	}
}

func TestCleanupStack(t *testing.T) {
	var ran []string
	var c cleanupStack
	for _, name := range []string{"state dir", "network", "vm"} {
		c.push("undoing "+name, func() error {
			ran = append(ran, name)
			if name == "network" {
				return errors.New("still busy")
			}
			return nil
		})
	}
	c.unwind(context.Background())
	if want := []string{"vm", "network", "state dir"}; !slices.Equal(ran, want) {
		t.Errorf("unwind ran %v, want %v (newest first, past a failing step)", ran, want)
	}
	c.unwind(context.Background())
	if len(ran) != 3 {
		t.Errorf("a second unwind ran the steps again: %v", ran)
	}
	c.push("undoing a pod's resource", func() error { ran = append(ran, "owned"); return nil })
	c.release()
	c.unwind(context.Background())
	if len(ran) != 3 {
		t.Errorf("unwind after release ran %v: the pod owns what the stack held", ran)
	}
}

// TestPodLifecycle: a pod is ready once Create returns, dead once its VM
// died, and its shared directory is mounted as the driver said (the fake
// driver's own mount options, not ones the shim knows), with the debug
// console where `veil debug console` looks.
func TestPodLifecycle(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	must(h.s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "sb", Bundle: bundle(t, sandboxAnn)}))
	p := must(h.s.currentPod())
	if p.state() != podReady {
		t.Errorf("after Create: pod %s, want ready", p.state())
	}
	sb := h.agent.sandboxes
	if len(sb) != 1 || len(sb[0].Storages) == 0 || !slices.Equal(sb[0].Storages[0].Options, []string{"trans=virtio"}) || sb[0].Storages[0].Fstype != "9p" {
		t.Errorf("CreateSandbox storages %+v, want the driver's share (options [trans=virtio])", sb)
	}
	link := filepath.Join(h.root, "test", "sb", DebugConsoleLink)
	if target, err := os.Readlink(link); err != nil || target != h.hv.DebugConsolePath() {
		t.Errorf("debug console link %s -> %q (%v), want the driver's %q", link, target, err, h.hv.DebugConsolePath())
	}
	h.hv.die()
	h.agent.disconnect()
	<-p.dead
	if p.state() != podDead {
		t.Errorf("after the VM died: pod %s, want dead", p.state())
	}
}

// TestFailedBootUndoesEverything: a guest that refuses CreateSandbox
// fails the first Create, and every resource acquired until then is
// released: agent connection, VM (killed and cleaned up), state directory.
func TestFailedBootUndoesEverything(t *testing.T) {
	h := newHarness(t)
	h.agent.sandboxErr = errors.New("guest says no")
	_, err := h.s.Create(context.Background(), &taskAPI.CreateTaskRequest{ID: "sb", Bundle: bundle(t, sandboxAnn)})
	if err == nil || !strings.Contains(err.Error(), "guest says no") {
		t.Fatalf("Create with a refusing guest: %v", err)
	}
	select {
	case <-h.hv.done:
	default:
		t.Error("VM still running after a failed boot")
	}
	if h.hv.cleanups != 1 {
		t.Errorf("VM cleaned up %d times, want once", h.hv.cleanups)
	}
	select {
	case <-h.agent.conn:
	default:
		t.Error("agent connection left open")
	}
	if _, err := os.Stat(filepath.Join(h.root, "test", "sb")); !os.IsNotExist(err) {
		t.Errorf("state dir left behind: %v", err)
	}
	if _, err := h.s.currentPod(); err == nil {
		t.Error("the shim kept the pod of a failed boot")
	}
}

// TestUnknownDriver: a handler naming a driver this binary lacks fails
// the first Create with the key and the drivers it has, before anything
// is created.
func TestUnknownDriver(t *testing.T) {
	h := newHarness(t)
	h.s.loadConfig = func(string) (config.Config, error) {
		cfg := config.Default()
		cfg.Hypervisor.Driver = "firecracker"
		return cfg, nil
	}
	_, err := h.s.Create(context.Background(), &taskAPI.CreateTaskRequest{ID: "sb", Bundle: bundle(t, sandboxAnn)})
	if !errdefs.IsInvalidArgument(errgrpc.ToNative(err)) || !strings.Contains(err.Error(), `hypervisor.driver: hypervisor driver "firecracker" is unknown: want one of qemu`) {
		t.Errorf("Create with driver firecracker: %v, want invalid argument naming the key and the known drivers", err)
	}
	if _, err := os.Stat(filepath.Join(h.root, "test", "sb")); !os.IsNotExist(err) {
		t.Errorf("state dir created for an unknown driver: %v", err)
	}
}

// TestNoDriverRegistered: a shim built without any driver refuses to
// start, rather than failing each pod.
func TestNoDriverRegistered(t *testing.T) {
	h := newHarness(t)
	_, err := newService(h.s.ctx, h.pub, h.sd, Options{StateRoot: h.root, Drivers: &hypervisor.Registry{}})
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "no hypervisor driver") {
		t.Errorf("newService without drivers: %v", err)
	}
}

// TestDebugConsoleLinkReplacesAStaleOne: a state directory left by a shim
// that crashed still has its link; the new pod's replaces it instead of
// failing the boot.
func TestDebugConsoleLinkReplacesAStaleOne(t *testing.T) {
	dir := t.TempDir()
	if err := os.Symlink("/old/console.sock", filepath.Join(dir, DebugConsoleLink)); err != nil {
		t.Fatal(err)
	}
	if err := linkDebugConsole(dir, "/new/console.sock"); err != nil {
		t.Fatal(err)
	}
	if got, err := os.Readlink(filepath.Join(dir, DebugConsoleLink)); err != nil || got != "/new/console.sock" {
		t.Errorf("link -> %q (%v), want /new/console.sock", got, err)
	}
	if err := linkDebugConsole(dir, ""); err != nil {
		t.Errorf("no debug console: %v", err)
	}
}
