// Package reaper collects every child process the agent inherits as PID 1
// (and as child subreaper) with one wait4(-1) loop, and hands each exit to
// whoever asked for it. It is go-runc's ProcessMonitor: runc invocations
// started through it get their own exit status instead of having it stolen
// by the loop, and container processes, whose pids the agent only learns
// from runc's pid file, are watched by pid.
package reaper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"time"

	runc "github.com/containerd/go-runc"
	"golang.org/x/sys/unix"
)

// keptExits bounds the exits kept for pids nobody has claimed yet (runc's
// intermediate processes, orphans reparented to PID 1).
const keptExits = 1024

// Reaper reaps every child of the process. All child processes must be
// started through Start: a child started with exec.Cmd.Run directly would
// race with the reaper for its exit status.
type Reaper struct {
	log *slog.Logger
	// mu is held while reaping and while starting a command, so that a
	// child cannot be reaped between its fork and its registration.
	mu sync.Mutex
	t  *table
}

var _ runc.ProcessMonitor = (*Reaper)(nil)

// New returns a Reaper; call Run to start reaping.
func New(log *slog.Logger) *Reaper {
	return &Reaper{log: log, t: newTable(keptExits)}
}

// Run reaps children on every SIGCHLD until ctx ends.
func (r *Reaper) Run(ctx context.Context) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, unix.SIGCHLD)
	defer signal.Stop(sig)
	for {
		r.reap()
		select {
		case <-sig:
		case <-ctx.Done():
			return
		}
	}
}

// reap collects every child that has exited.
func (r *Reaper) reap() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
		e := Exit{Pid: pid, Status: ExitStatus(ws), At: time.Now()}
		r.log.Debug("reaped", "pid", pid, "status", e.Status)
		r.t.deliver(e)
	}
}

// Watch returns a channel that receives pid's exit, also when it was reaped
// before Watch was called. pid must be a process that is (or was) a child
// of the agent, such as a container's init or exec process.
func (r *Reaper) Watch(pid int) <-chan Exit {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.t.register(pid, true)
}

// Start starts cmd and registers it for Wait.
func (r *Reaper) Start(cmd *exec.Cmd) (chan runc.Exit, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	exits := r.t.register(cmd.Process.Pid, false)
	out := make(chan runc.Exit, 1)
	go func() {
		e := <-exits
		out <- runc.Exit{Pid: e.Pid, Status: e.Status, Timestamp: e.At}
		close(out)
	}()
	return out, nil
}

// StartLocked is Start: the agent never sets go-runc's PdeathSignal, the
// only reason go-runc asks for a locked thread.
func (r *Reaper) StartLocked(cmd *exec.Cmd) (chan runc.Exit, error) {
	return r.Start(cmd)
}

// Wait waits for a command started with Start and returns its exit status.
// It then lets exec.Cmd finish copying the command's output (its own wait
// fails with ECHILD, since the reaper collected the child).
func (r *Reaper) Wait(cmd *exec.Cmd, ec chan runc.Exit) (int, error) {
	e, ok := <-ec
	if !ok {
		return -1, fmt.Errorf("waiting for %s: exit channel closed", cmd.Path)
	}
	_ = cmd.Wait()
	return e.Status, nil
}

// RunCmd runs cmd through the reaper and waits for it, like exec.Cmd.Run.
func (r *Reaper) RunCmd(cmd *exec.Cmd) (int, error) {
	ec, err := r.Start(cmd)
	if err != nil {
		return -1, err
	}
	return r.Wait(cmd, ec)
}
