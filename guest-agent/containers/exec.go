package containers

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"
)

// ExecRequest is an ExecProcess call.
type ExecRequest struct {
	ID, ExecID string
	Process    []byte
	Terminal   bool
	Stdin      bool
	// DrainOutput is CreateRequest.DrainOutput for the exec.
	DrainOutput bool
}

// Exec starts an additional process in a running container with runc exec
// --detach and returns its pid.
func (m *Manager) Exec(ctx context.Context, req ExecRequest) (pid int, err error) {
	c, err := m.get(req.ID)
	if err != nil {
		return 0, err
	}
	if err := CheckID("exec id", req.ExecID); err != nil {
		return 0, err
	}
	spec, err := ParseProcess(req.Process, req.Terminal)
	if err != nil {
		return 0, fmt.Errorf("exec %q in container %q: %w", req.ExecID, req.ID, err)
	}
	m.mu.Lock()
	switch {
	case c.init.hasExited():
		m.mu.Unlock()
		return 0, fmt.Errorf("container %q has stopped; exec needs a running container: %w", req.ID, errdefs.ErrFailedPrecondition)
	case !c.started:
		m.mu.Unlock()
		return 0, fmt.Errorf("container %q has not been started; start it before exec: %w", req.ID, errdefs.ErrFailedPrecondition)
	case c.paused:
		m.mu.Unlock()
		return 0, fmt.Errorf("container %q is paused; resume it before exec: %w", req.ID, errdefs.ErrFailedPrecondition)
	}
	if _, ok := c.execs[req.ExecID]; ok {
		m.mu.Unlock()
		return 0, fmt.Errorf("exec %q in container %q: %w", req.ExecID, req.ID, errdefs.ErrAlreadyExists)
	}
	c.execs[req.ExecID] = nil // reserved while starting
	m.mu.Unlock()
	defer func() {
		if err != nil {
			m.mu.Lock()
			delete(c.execs, req.ExecID)
			m.mu.Unlock()
		}
	}()

	io, err := newStdio(req.Terminal, req.Stdin, int(spec.User.UID), int(spec.User.GID))
	if err != nil {
		return 0, err
	}
	pidFile := filepath.Join(c.bundle, "exec-"+req.ExecID+".pid")
	opts := &runc.ExecOpts{PidFile: pidFile, Detach: true}
	if io.socket != nil {
		opts.ConsoleSocket = io.socket
	} else {
		opts.IO = io.pipes
	}
	if err := c.runc.Exec(ctx, req.ID, *spec, opts); err != nil {
		io.close()
		return 0, runcError(c.runc, c.bundle, fmt.Sprintf("exec %q in container %q", req.ExecID, req.ID), err)
	}
	pid, err = readPidFile(pidFile)
	if err != nil {
		io.close()
		return 0, err
	}
	_ = os.Remove(pidFile)
	p, err := io.attach(req.ExecID, pid, req.Stdin, m.cfg.BufferBytes, req.DrainOutput)
	if err != nil {
		io.close()
		return 0, err
	}
	p.watch(m.cfg.Exits.Watch(pid))
	m.mu.Lock()
	c.execs[req.ExecID] = p
	m.mu.Unlock()
	m.cfg.Log.Debug("exec started", "id", req.ID, "exec", req.ExecID, "pid", pid)
	return pid, nil
}
