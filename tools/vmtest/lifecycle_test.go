//go:build vm

package vmtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/veil-runtime/veil/guest-agent/api"
	"github.com/veil-runtime/veil/hypervisor"
)

// TestQEMUKilledIsReported kills QEMU from outside while an agent call is
// pending: Done closes, the call fails and Err says QEMU was killed, each
// within a second.
func TestQEMUKilledIsReported(t *testing.T) {
	ctx := testCtx(t)
	v, err := boot(ctx, "killed", false)
	if err != nil {
		t.Fatalf("boot: %v", err)
	}
	defer v.destroy()
	pending := make(chan error, 1)
	sent := make(chan struct{})
	go func() {
		close(sent)
		// Blocks until an OOM kill: never, in this VM.
		_, err := v.client.Container.GetOOMEvent(ctx, &api.GetOOMEventRequest{})
		pending <- err
	}()
	<-sent
	// A Check answered after GetOOMEvent was sent shows the connection and
	// the agent were healthy with the call in flight.
	if _, err := v.client.Sandbox.Check(ctx, &api.CheckRequest{}); err != nil {
		t.Fatalf("Check: %v", err)
	}
	connDone := v.client.Done()
	killed := time.Now()
	if err := syscall.Kill(v.q.PID(), syscall.SIGKILL); err != nil {
		t.Fatalf("killing qemu: %v", err)
	}
	deadline := time.After(time.Second)
	select {
	case <-v.q.Done():
		t.Logf("Done closed %v after SIGKILL", time.Since(killed))
	case <-deadline:
		t.Fatal("Done not closed within a second of killing qemu")
	}
	select {
	case err := <-pending:
		if err == nil {
			t.Fatal("pending GetOOMEvent returned no error after qemu died")
		}
		t.Logf("pending call failed %v after SIGKILL: %v", time.Since(killed), err)
	case <-deadline:
		t.Fatal("pending agent call still blocked a second after qemu died")
	}
	select {
	case <-connDone:
	case <-deadline:
		t.Fatal("agent connection not closed within a second of killing qemu")
	}
	err = v.q.Err()
	if !errors.Is(err, hypervisor.ErrVMExited) || !strings.Contains(err.Error(), "signal: killed") {
		t.Errorf("Err() = %v, want ErrVMExited saying qemu was killed", err)
	}
	if _, err := v.q.DialAgent(ctx); !errors.Is(err, hypervisor.ErrVMExited) {
		t.Errorf("DialAgent after death: %v, want ErrVMExited", err)
	}
}

// hostState is what a VM could leak on the host.
type hostState struct {
	fds      []string // targets of this process's open fds
	children []string // live child processes (pid comm)
	mounts   string   // mountinfo lines under veil-vmtest- dirs
}

func snapshot(t *testing.T) hostState {
	t.Helper()
	var s hostState
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err != nil {
			continue // the fd ReadDir itself used
		}
		s.fds = append(s.fds, target)
	}
	slices.Sort(s.fds)
	procs, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	me := os.Getpid()
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", p.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
		i := strings.LastIndexByte(string(b), ')')
		f := strings.Fields(string(b[i+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(me) {
			s.children = append(s.children, fmt.Sprintf("%d %s", pid, b[strings.IndexByte(string(b), '(')+1:i]))
		}
	}
	m, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	// Only mounts under this tier's dirs: other test tiers on the machine
	// mount and unmount elsewhere meanwhile.
	for _, line := range strings.Split(string(m), "\n") {
		if strings.Contains(line, "veil-vmtest-") {
			s.mounts += line + "\n"
		}
	}
	return s
}

// TestTenVMsLeaveNothing boots ten VMs in a row and ends them along each of
// the three paths (agent Shutdown then Stop; Stop that has to quit over
// QMP; Kill), then checks nothing is left: no child process, no fd, no
// mount, no file.
func TestTenVMsLeaveNothing(t *testing.T) {
	before := snapshot(t)
	var pids []int
	var roots []string
	for i := range 10 {
		ctx := testCtx(t)
		v, err := boot(ctx, fmt.Sprintf("seq%d", i), false)
		if err != nil {
			t.Fatalf("boot %d: %v", i, err)
		}
		pids = append(pids, v.q.PID())
		roots = append(roots, v.root)
		var how string
		switch i % 3 {
		case 0:
			how = "agent shutdown"
			err = v.shutdown()
		case 1:
			how = "stop (qmp quit)"
			expired, cancel := context.WithCancel(ctx)
			cancel()
			err = v.q.Stop(expired)
			if derr := v.destroy(); err == nil {
				err = derr
			}
		case 2:
			how = "kill"
			err = v.q.Kill()
			<-v.q.Done()
			if derr := v.destroy(); err == nil {
				err = derr
			}
		}
		if err != nil {
			t.Fatalf("vm %d, ending by %s: %v", i, how, err)
		}
		exit := v.q.Err()
		if !errors.Is(exit, hypervisor.ErrVMExited) {
			t.Errorf("vm %d (%s): Err() = %v", i, how, exit)
		}
		if i%3 == 0 && !strings.Contains(exit.Error(), "exited with status 0") {
			t.Errorf("vm %d powered off by the agent, but %v", i, exit)
		}
		t.Logf("vm %d: agent ready after %v, ended by %s", i, v.ready.Round(time.Millisecond), how)
	}
	after := snapshot(t)
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("qemu pid %d still exists (kill 0: %v)", pid, err)
		}
	}
	if len(after.children) > len(before.children) {
		t.Errorf("child processes: before %q, after %q", before.children, after.children)
	}
	if !slices.Equal(before.fds, after.fds) {
		t.Errorf("open fds changed:\nbefore %q\nafter  %q", before.fds, after.fds)
	}
	if before.mounts != after.mounts {
		t.Errorf("mounts changed:\nbefore\n%s\nafter\n%s", before.mounts, after.mounts)
	}
	for _, r := range roots {
		if _, err := os.Stat(r); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("vm dir %s left behind (%v)", r, err)
		}
	}
}
