package containers

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/containerd/console"
	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"
	"golang.org/x/sys/unix"

	"github.com/veil-runtime/veil/guest-agent/stream"
)

// Status is a container's state.
type Status int

const (
	StatusCreated Status = iota + 1
	StatusRunning
	StatusStopped
	StatusPaused
)

// State is a container's state and its init process.
type State struct {
	Status     Status
	Pid        int
	ExitStatus int
	ExitedAt   time.Time
	Terminal   bool
}

// State reports a container's state.
func (m *Manager) State(id string) (State, error) {
	c, err := m.get(id)
	if err != nil {
		return State{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	s := State{Pid: c.init.pid, Terminal: c.init.terminal}
	switch {
	case c.init.hasExited():
		s.Status, s.ExitStatus, s.ExitedAt = StatusStopped, c.init.status, c.init.at
	case c.paused:
		s.Status = StatusPaused
	case c.started:
		s.Status = StatusRunning
	default:
		s.Status = StatusCreated
	}
	return s, nil
}

// Wait blocks until the process has exited and its output has reached the
// buffers, and returns its exit status.
func (m *Manager) Wait(ctx context.Context, id, execID string) (int, time.Time, error) {
	_, p, err := m.process(id, execID)
	if err != nil {
		return 0, time.Time{}, err
	}
	select {
	case <-p.done:
		return p.status, p.at, nil
	case <-ctx.Done():
		return 0, time.Time{}, ctx.Err()
	}
}

// Signal sends sig to a process; all (init only) sends it to every process
// of the container.
func (m *Manager) Signal(ctx context.Context, id, execID string, sig int, all bool) error {
	c, p, err := m.process(id, execID)
	if err != nil {
		return err
	}
	if all && execID != "" {
		return fmt.Errorf("signal to all processes is for the init process, not exec %q: %w", execID, errdefs.ErrInvalidArgument)
	}
	if p.hasExited() && !all {
		return fmt.Errorf("process %q of container %q has already exited: %w", execID, id, errdefs.ErrNotFound)
	}
	if execID != "" {
		return signalPid(p.pid, unix.Signal(sig))
	}
	if err := c.runc.Kill(ctx, id, sig, &runc.KillOpts{All: all}); err != nil {
		return runcError(c.runc, c.bundle, fmt.Sprintf("signalling container %q", id), err)
	}
	return nil
}

// Resize sets a process's terminal size.
func (m *Manager) Resize(id, execID string, width, height uint32) error {
	_, p, err := m.process(id, execID)
	if err != nil {
		return err
	}
	if p.console == nil {
		return fmt.Errorf("process %q of container %q has no terminal: %w", execID, id, errdefs.ErrFailedPrecondition)
	}
	return p.console.Resize(console.WinSize{Width: uint16(width), Height: uint16(height)})
}

// WriteStdin writes to a process's stdin.
func (m *Manager) WriteStdin(ctx context.Context, id, execID string, data []byte) (int, error) {
	_, p, err := m.process(id, execID)
	if err != nil {
		return 0, err
	}
	return p.writeStdin(ctx, data)
}

// CloseStdin gives a process end of file on stdin.
func (m *Manager) CloseStdin(id, execID string) error {
	_, p, err := m.process(id, execID)
	if err != nil {
		return err
	}
	return p.closeStdin()
}

// ReadStdout returns up to n bytes of a process's output, blocking until
// there is some; io.EOF at the end.
func (m *Manager) ReadStdout(ctx context.Context, id, execID string, n int) ([]byte, error) {
	_, p, err := m.process(id, execID)
	if err != nil {
		return nil, err
	}
	return readStream(ctx, p.stdout, id, execID, "stdout", n)
}

// ReadStderr is ReadStdout for stderr (EOF at once with a terminal).
func (m *Manager) ReadStderr(ctx context.Context, id, execID string, n int) ([]byte, error) {
	_, p, err := m.process(id, execID)
	if err != nil {
		return nil, err
	}
	return readStream(ctx, p.stderr, id, execID, "stderr", n)
}

// readStream reads b; a drained stream is refused with PermissionDenied.
func readStream(ctx context.Context, b *stream.Buffer, id, execID, name string, n int) ([]byte, error) {
	data, err := b.Read(ctx, n)
	if errors.Is(err, stream.ErrNotReadable) {
		return nil, fmt.Errorf("%s of container %q exec %q: %w: %w", name, id, execID, err, errdefs.ErrPermissionDenied)
	}
	return data, err
}

// Tail is what the guest kept of a drained output stream.
type Tail struct {
	// Data is the last bytes written (at most DrainTailBytes).
	Data []byte
	// Total counts every byte the process wrote to the stream.
	Total int64
}

// OutputTail returns what was kept of a process's drained stdout and
// stderr (CreateRequest.DrainOutput), for the pod owner's diagnostics;
// both are empty when the output is the host's to read. It is never
// served to the host.
func (m *Manager) OutputTail(id, execID string) (stdout, stderr Tail, err error) {
	_, p, err := m.process(id, execID)
	if err != nil {
		return Tail{}, Tail{}, err
	}
	stdout.Data, stdout.Total = p.stdout.Tail()
	stderr.Data, stderr.Total = p.stderr.Tail()
	return stdout, stderr, nil
}

// DeleteProcess releases an exited exec process.
func (m *Manager) DeleteProcess(id, execID string) error {
	if execID == "" {
		return fmt.Errorf("container %q: the init process goes with RemoveContainer, not DeleteProcess: %w", id, errdefs.ErrInvalidArgument)
	}
	c, p, err := m.process(id, execID)
	if err != nil {
		return err
	}
	if !p.hasExited() {
		return fmt.Errorf("exec %q in container %q is still running; signal it and wait first: %w", execID, id, errdefs.ErrFailedPrecondition)
	}
	m.mu.Lock()
	delete(c.execs, execID)
	m.mu.Unlock()
	p.release()
	return nil
}

// Pause freezes a container.
func (m *Manager) Pause(ctx context.Context, id string) error {
	c, err := m.get(id)
	if err != nil {
		return err
	}
	if c.init.hasExited() {
		return fmt.Errorf("container %q has stopped: %w", id, errdefs.ErrFailedPrecondition)
	}
	if err := c.runc.Pause(ctx, id); err != nil {
		return runcError(c.runc, c.bundle, fmt.Sprintf("pausing container %q", id), err)
	}
	m.mu.Lock()
	c.paused = true
	m.mu.Unlock()
	return nil
}

// Resume thaws a paused container.
func (m *Manager) Resume(ctx context.Context, id string) error {
	c, err := m.get(id)
	if err != nil {
		return err
	}
	if err := c.runc.Resume(ctx, id); err != nil {
		return runcError(c.runc, c.bundle, fmt.Sprintf("resuming container %q", id), err)
	}
	m.mu.Lock()
	c.paused = false
	m.mu.Unlock()
	return nil
}

// Update changes a container's resources (OCI LinuxResources JSON).
func (m *Manager) Update(ctx context.Context, id string, resources []byte) error {
	c, err := m.get(id)
	if err != nil {
		return err
	}
	r, err := ParseResources(resources)
	if err != nil {
		return fmt.Errorf("updating container %q: %w", id, err)
	}
	if err := c.runc.Update(ctx, id, r); err != nil {
		return runcError(c.runc, c.bundle, fmt.Sprintf("updating container %q", id), err)
	}
	return nil
}

// ProcessInfo is one pid of a container.
type ProcessInfo struct {
	Pid    int
	ExecID string
}

// Pids lists a container's processes, naming the exec processes.
func (m *Manager) Pids(ctx context.Context, id string) ([]ProcessInfo, error) {
	c, err := m.get(id)
	if err != nil {
		return nil, err
	}
	pids, err := c.runc.Ps(ctx, id)
	if err != nil {
		return nil, runcError(c.runc, c.bundle, fmt.Sprintf("listing processes of container %q", id), err)
	}
	m.mu.Lock()
	byPid := map[int]string{}
	for execID, p := range c.execs {
		if p != nil {
			byPid[p.pid] = execID
		}
	}
	m.mu.Unlock()
	out := make([]ProcessInfo, 0, len(pids))
	for _, pid := range pids {
		out = append(out, ProcessInfo{Pid: pid, ExecID: byPid[pid]})
	}
	return out, nil
}

// removeWait bounds how long Remove waits for a killed init to be reaped.
const removeWait = 10 * time.Second

// Remove deletes a container. Without force the container must not be
// running (created or stopped); with force it is killed first. Its storages
// are unmounted and its bundle removed.
func (m *Manager) Remove(ctx context.Context, id string, force bool) error {
	c, err := m.get(id)
	if err != nil {
		return err
	}
	m.mu.Lock()
	running := c.started && !c.init.hasExited()
	m.mu.Unlock()
	if running && !force {
		return fmt.Errorf("container %q is running; stop it first or remove with force: %w", id, errdefs.ErrFailedPrecondition)
	}
	kill := !c.init.hasExited()
	if err := c.runc.Delete(ctx, id, &runc.DeleteOpts{Force: kill}); err != nil {
		// The container may be gone from runc already; when it was alive,
		// the init's exit below tells whether it is really dead.
		m.cfg.Log.Warn("runc delete", "id", id, "err", runcError(c.runc, c.bundle, "deleting", err))
	}
	if kill {
		wctx, cancel := context.WithTimeout(ctx, removeWait)
		defer cancel()
		select {
		case <-c.init.exited:
		case <-wctx.Done():
			return fmt.Errorf("removing container %q: init process %d did not exit after SIGKILL: %w", id, c.init.pid, wctx.Err())
		}
		// runc delete --force ran while the container lived; delete its state now.
		_ = c.runc.Delete(ctx, id, &runc.DeleteOpts{Force: true})
	}
	m.mu.Lock()
	delete(m.containers, id)
	m.mu.Unlock()
	if c.stopOOM != nil {
		c.stopOOM()
	}
	c.init.release()
	for _, p := range c.execs {
		if p != nil {
			p.release()
		}
	}
	m.unmountAll(c.mounts)
	removeBundle(c.bundle)
	m.cfg.Log.Info("container removed", "id", id)
	return nil
}

// RemoveAll force-removes every container (DestroySandbox, Shutdown).
func (m *Manager) RemoveAll(ctx context.Context) error {
	var errs []error
	for _, id := range m.IDs() {
		if err := m.Remove(ctx, id, true); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
