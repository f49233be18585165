package reaper

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os/exec"
	"testing"

	"golang.org/x/sys/unix"
)

func TestExitStatus(t *testing.T) {
	for _, tc := range []struct {
		name string
		ws   unix.WaitStatus
		want int
	}{
		{"exit 0", unix.WaitStatus(0), 0},
		{"exit 3", unix.WaitStatus(3 << 8), 3},
		{"killed by SIGKILL", unix.WaitStatus(9), 137},
		{"killed by SIGTERM", unix.WaitStatus(15), 143},
	} {
		if got := ExitStatus(tc.ws); got != tc.want {
			t.Errorf("%s: ExitStatus = %d, want %d", tc.name, got, tc.want)
		}
	}
}

func TestTableDeliversToRegisteredWaiter(t *testing.T) {
	tb := newTable(4)
	ch := tb.register(10, false)
	tb.deliver(Exit{Pid: 11, Status: 1})
	tb.deliver(Exit{Pid: 10, Status: 2})
	if e := <-ch; e.Status != 2 {
		t.Fatalf("waiter for 10 got status %d, want 2", e.Status)
	}
	if _, ok := tb.unclaimed[11]; !ok {
		t.Fatal("exit of unregistered pid 11 was not kept")
	}
	if _, ok := tb.waiters[10]; ok {
		t.Fatal("waiter for 10 still registered after delivery")
	}
}

func TestTableClaimsExitThatCameFirst(t *testing.T) {
	tb := newTable(4)
	tb.deliver(Exit{Pid: 7, Status: 137})
	ch := tb.register(7, true)
	select {
	case e := <-ch:
		if e.Status != 137 {
			t.Fatalf("status %d, want 137", e.Status)
		}
	default:
		t.Fatal("exit reaped before Watch was not delivered")
	}
	if len(tb.unclaimed) != 0 || len(tb.order) != 0 {
		t.Fatal("claimed exit still kept")
	}
}

func TestTableFreshProcessDropsStaleExit(t *testing.T) {
	tb := newTable(4)
	tb.deliver(Exit{Pid: 7, Status: 1})
	ch := tb.register(7, false) // a new command got pid 7 again
	select {
	case <-ch:
		t.Fatal("new process with a reused pid got the old process's exit")
	default:
	}
	tb.deliver(Exit{Pid: 7, Status: 0})
	if e := <-ch; e.Status != 0 {
		t.Fatalf("status %d, want 0", e.Status)
	}
}

func TestTableBoundsKeptExits(t *testing.T) {
	tb := newTable(3)
	for pid := 1; pid <= 5; pid++ {
		tb.deliver(Exit{Pid: pid})
	}
	if len(tb.unclaimed) != 3 {
		t.Fatalf("kept %d exits, want 3", len(tb.unclaimed))
	}
	for _, pid := range []int{1, 2} {
		if _, ok := tb.unclaimed[pid]; ok {
			t.Fatalf("oldest exit %d not dropped", pid)
		}
	}
}

// TestReaperDoesNotStealCommandStatus runs real children: one through the
// monitor (as go-runc does) and one watched by pid, while the wait4(-1)
// loop reaps everything.
func TestReaperDoesNotStealCommandStatus(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := New(slog.New(slog.NewTextHandler(io.Discard, nil)))
	go r.Run(ctx)

	var out bytes.Buffer
	cmd := exec.Command("/bin/sh", "-c", "echo hello; exit 3")
	cmd.Stdout = &out
	status, err := r.RunCmd(cmd)
	if err != nil {
		t.Fatal(err)
	}
	if status != 3 {
		t.Fatalf("status %d, want 3", status)
	}
	if out.String() != "hello\n" {
		t.Fatalf("output %q: Wait did not flush the command's output", out.String())
	}

	sleeper := exec.Command("/bin/sh", "-c", "kill -TERM $$")
	ec, err := r.Start(sleeper)
	if err != nil {
		t.Fatal(err)
	}
	status, _ = r.Wait(sleeper, ec)
	if status != 128+15 {
		t.Fatalf("status of a process killed by SIGTERM = %d, want 143", status)
	}
}

func TestReaperWatchAfterExit(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := New(slog.New(slog.NewTextHandler(io.Discard, nil)))
	go r.Run(ctx)

	// A grandchild-like process: started outside Start, as runc's
	// detached processes are, and only watched once its pid is known.
	r.mu.Lock()
	cmd := exec.Command("/bin/sh", "-c", "exit 5")
	if err := cmd.Start(); err != nil {
		r.mu.Unlock()
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	r.mu.Unlock()
	e := <-r.Watch(pid)
	if e.Status != 5 || e.Pid != pid {
		t.Fatalf("got %+v, want pid %d status 5", e, pid)
	}
}
