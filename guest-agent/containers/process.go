package containers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containerd/console"
	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"
	"golang.org/x/sys/unix"

	"github.com/veil-runtime/veil/guest-agent/reaper"
	"github.com/veil-runtime/veil/guest-agent/stream"
)

// process is a container's init or exec process and its stdio.
type process struct {
	execID   string
	pid      int
	terminal bool

	stdout, stderr *stream.Buffer

	// stdinMu guards stdin, which is nil when the process has no stdin or
	// it was closed.
	stdinMu sync.Mutex
	stdin   io.WriteCloser

	console console.Console // pty master, with a terminal
	closers []io.Closer     // output ends the agent holds

	copying sync.WaitGroup // output copiers
	exited  chan struct{}  // closed at exit; status and exitedAt are set
	done    chan struct{}  // closed at exit once output reached EOF
	status  int
	at      time.Time
}

// stdio is the half-made stdio of a process while runc starts it.
type stdio struct {
	pipes  runc.IO
	socket *runc.Socket
}

// newStdio prepares pipes, or a console socket for a terminal.
func newStdio(terminal, stdin bool, uid, gid int) (*stdio, error) {
	if terminal {
		s, err := runc.NewTempConsoleSocket()
		if err != nil {
			return nil, fmt.Errorf("creating console socket: %w", err)
		}
		return &stdio{socket: s}, nil
	}
	p, err := runc.NewPipeIO(uid, gid, func(o *runc.IOOption) { o.OpenStdin = stdin })
	if err != nil {
		return nil, fmt.Errorf("creating stdio pipes: %w", err)
	}
	return &stdio{pipes: p}, nil
}

// close releases everything when runc failed.
func (s *stdio) close() {
	if s.pipes != nil {
		_ = s.pipes.Close()
	}
	if s.socket != nil {
		_ = s.socket.Close()
	}
}

// attach turns the stdio runc has started pid with into a process whose
// output is being copied: into buffers of limit bytes for the host, or,
// with drain, into tails of DrainTailBytes that never block the process.
func (s *stdio) attach(execID string, pid int, stdin bool, limit int, drain bool) (*process, error) {
	newBuffer := func() *stream.Buffer { return stream.NewBuffer(limit) }
	if drain {
		newBuffer = func() *stream.Buffer { return stream.NewDrain(DrainTailBytes) }
	}
	p := &process{
		execID:   execID,
		pid:      pid,
		terminal: s.socket != nil,
		stdout:   newBuffer(),
		stderr:   newBuffer(),
		exited:   make(chan struct{}),
		done:     make(chan struct{}),
	}
	if s.socket != nil {
		defer s.socket.Close()
		master, err := s.socket.ReceiveMaster()
		if err != nil {
			return nil, fmt.Errorf("receiving the terminal from runc: %w", err)
		}
		p.console = master
		p.closers = append(p.closers, master)
		if stdin {
			p.stdin = nopCloser{master}
		}
		p.stderr.CloseWrite()
		p.copy(p.stdout, master)
		return p, nil
	}
	if w := s.pipes.Stdin(); w != nil && stdin {
		p.stdin = w
	}
	p.closers = append(p.closers, s.pipes.Stdout(), s.pipes.Stderr())
	p.copy(p.stdout, s.pipes.Stdout())
	p.copy(p.stderr, s.pipes.Stderr())
	return p, nil
}

func (p *process) copy(b *stream.Buffer, r io.Reader) {
	p.copying.Add(1)
	go func() {
		defer p.copying.Done()
		stream.Fill(b, r)
	}()
}

// watch records the exit from exits, then waits for the output to drain.
func (p *process) watch(exits <-chan reaper.Exit) {
	go func() {
		e := <-exits
		p.status, p.at = e.Status, e.At
		close(p.exited)
		p.copying.Wait()
		close(p.done)
	}()
}

// hasExited reports whether the process has exited.
func (p *process) hasExited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// writeStdin writes to the process's stdin. The write blocks while the
// pipe is full; when ctx ends first, it stops with what was written.
func (p *process) writeStdin(ctx context.Context, data []byte) (int, error) {
	p.stdinMu.Lock()
	w := p.stdin
	p.stdinMu.Unlock()
	if w == nil {
		return 0, fmt.Errorf("process has no open stdin (create it with stdin set): %w", errdefs.ErrFailedPrecondition)
	}
	if d, ok := w.(interface{ SetWriteDeadline(time.Time) error }); ok {
		// Clear what an earlier cancelled call may have left.
		_ = d.SetWriteDeadline(time.Time{})
		stop := context.AfterFunc(ctx, func() { _ = d.SetWriteDeadline(time.Now()) })
		defer stop()
	}
	n, err := w.Write(data)
	if err != nil {
		return n, fmt.Errorf("writing stdin: %w", err)
	}
	return n, nil
}

// closeStdin gives the process end of file on stdin. With a terminal it
// sends the EOF character (^D), which the line discipline turns into EOF.
func (p *process) closeStdin() error {
	p.stdinMu.Lock()
	w := p.stdin
	p.stdin = nil
	p.stdinMu.Unlock()
	if w == nil {
		return nil
	}
	if p.console != nil {
		_, err := p.console.Write([]byte{4})
		return err
	}
	return w.Close()
}

// release drops the buffers and closes what the agent holds for the process.
func (p *process) release() {
	_ = p.closeStdin()
	p.stdout.Discard()
	p.stderr.Discard()
	for _, c := range p.closers {
		_ = c.Close()
	}
}

// nopCloser keeps CloseStdin from closing the pty master, which also
// carries the output.
type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// readPidFile reads the pid runc wrote.
func readPidFile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("reading runc pid file: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("runc pid file %s holds %q, not a pid", path, b)
	}
	return pid, nil
}

// signalPid sends sig to a process the agent knows has not been reaped.
func signalPid(pid int, sig unix.Signal) error {
	err := unix.Kill(pid, sig)
	if errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("process %d: %w", pid, errdefs.ErrNotFound)
	}
	return err
}
