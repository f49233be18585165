package shim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/fifo"
	"github.com/containerd/log"

	"github.com/veil-runtime/veil/guest-agent/api"
)

// readChunk is how much output one ReadStdout/ReadStderr asks for.
const readChunk = 32 << 10

// processIO pumps one guest process's stdio between containerd's side
// (FIFOs, a file:// log or a binary:// logger) and the agent (ReadStdout/ReadStderr,
// WriteStdin/CloseStdin).
//
// Output pumps read until the agent reports EOF (empty data), which it does
// after the process exited and its output was drained, or until the pod's
// context ends (VM gone). The shim holds a read end of each output FIFO
// next to its write end, as containerd's runc shim does: the FIFO then
// always has a reader, so a write never fails with EPIPE while containerd is away
// (restarting); what the process writes meanwhile waits in the FIFO (and,
// once that is full, in the guest) until containerd opens the FIFO again
// and reads on. A write that fails (a file:// log on a full disk, a
// binary:// logger that died) loses that chunk only: the destination is
// kept for the next one, never dropped for the rest of the process's life.
// The stdin
// pump copies until containerd closes its end (EOF) or CloseIO, then closes
// the process's stdin.
//
// A confidential pod's policy may deny reading output (allow_read_output
// false, the default): the agent then drains the output in the guest and
// refuses every read with PermissionDenied. Each pump stops at its first
// denial (no retry), the process's stderr (stdout when there is no stderr)
// gets one line saying why (deniedLine), so `crictl logs` is not silently
// empty, the shim logs one warning, and the destinations are closed so
// containerd sees EOF. The exit is still published: WaitProcess is not
// output.
type processIO struct {
	outputs   sync.WaitGroup
	stdin     io.ReadCloser
	stdinDone chan struct{}
	closeOnce sync.Once
	denyOnce  sync.Once // the one warning for denied output
}

// outputTarget opens where containerd wants one output stream. It returns
// nil for "" (discard). A plain path or fifo:// is a FIFO; file:// is a file
// appended to.
func outputTarget(ctx context.Context, uri string) (io.WriteCloser, error) {
	if uri == "" {
		return nil, nil
	}
	u, err := url.Parse(uri)
	if err != nil || u.Scheme == "" || u.Scheme == "fifo" {
		path := uri
		if err == nil && u.Scheme == "fifo" {
			path = u.Path
		}
		// The write end first: it waits for containerd's reader, so output
		// of a process that ends at once is not written before anyone
		// reads. Then a read end of the shim's own, which it never reads:
		// the FIFO keeps a reader while containerd's is gone, so writes
		// wait instead of failing (processIO).
		w, err := fifo.OpenFifo(ctx, path, syscall.O_WRONLY, 0)
		if err != nil {
			return nil, fmt.Errorf("opening output fifo %s: %w", path, err)
		}
		r, err := fifo.OpenFifo(ctx, path, syscall.O_RDONLY, 0)
		if err != nil {
			w.Close()
			return nil, fmt.Errorf("opening output fifo %s for reading: %w", path, err)
		}
		return &heldFIFO{WriteCloser: w, r: r}, nil
	}
	switch u.Scheme {
	case "file":
		if err := os.MkdirAll(filepath.Dir(u.Path), 0o755); err != nil {
			return nil, fmt.Errorf("creating log directory: %w", err)
		}
		f, err := os.OpenFile(u.Path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
		if err != nil {
			return nil, fmt.Errorf("opening log file: %w", err)
		}
		return f, nil
	default:
		return nil, fmt.Errorf("stdio URI scheme %q (%s): %w", u.Scheme, uri, errdefs.ErrNotImplemented)
	}
}

// heldFIFO is an output FIFO's write end with a read end the shim holds
// open, and never reads, for as long as it writes.
type heldFIFO struct {
	io.WriteCloser
	r io.Closer
}

func (f *heldFIFO) Close() error {
	return errors.Join(f.WriteCloser.Close(), f.r.Close())
}

// outputs opens the process's stdout and stderr destinations. A file:// or
// binary:// stdout takes both streams, as in runc's shim: one log file, or
// one logging binary (binary.go).
func outputs(ctx context.Context, st stdio, ns, cid string) (stdout, stderr io.WriteCloser, err error) {
	if u, perr := url.Parse(st.stdout); perr == nil && st.stdout != "" {
		switch u.Scheme {
		case "binary":
			return startLogBinary(ctx, u, ns, cid)
		case "file":
			f, err := outputTarget(ctx, st.stdout)
			if err != nil {
				return nil, nil, err
			}
			if st.terminal {
				return f, nil, nil
			}
			both := shareWriter(f, 2)
			return both[0], both[1], nil
		}
	}
	if stdout, err = outputTarget(ctx, st.stdout); err != nil {
		return nil, nil, err
	}
	if st.terminal {
		return stdout, nil, nil
	}
	if stderr, err = outputTarget(ctx, st.stderr); err != nil {
		if stdout != nil {
			stdout.Close()
		}
		return nil, nil, err
	}
	return stdout, stderr, nil
}

// startIO opens containerd's side of the process's stdio and starts the
// pumps. podCtx ends the waiting reads when the VM is gone; callTimeout
// bounds each write to stdin. failure, when not nil, says why the pod
// failed ("" while it has not): the output then ends with a line saying so
// (pumpOutput), the one place a Kubernetes user sees it (kubectl logs).
func startIO(ctx, podCtx context.Context, agent api.ProcessService, ns, cid, execID string, st stdio, callTimeout time.Duration, failure func() string) (_ *processIO, retErr error) {
	pio := &processIO{stdinDone: make(chan struct{})}
	var closers []io.Closer
	defer func() {
		if retErr != nil {
			for _, c := range closers {
				c.Close()
			}
		}
	}()

	stdout, stderr, err := outputs(podCtx, st, ns, cid)
	if err != nil {
		return nil, err
	}
	for _, w := range []io.WriteCloser{stdout, stderr} {
		if w != nil {
			closers = append(closers, w)
		}
	}
	if st.stdin != "" {
		// Opened under the pod's context, not the request's: the open completes
		// when containerd's side opens its end, which may be after Create returns.
		in, err := fifo.OpenFifo(podCtx, st.stdin, syscall.O_RDONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			return nil, fmt.Errorf("opening stdin fifo %s: %w", st.stdin, err)
		}
		pio.stdin = in
	} else {
		close(pio.stdinDone)
	}

	req := func() *api.ReadStreamRequest {
		return &api.ReadStreamRequest{ContainerId: cid, ExecId: execID, Len: readChunk}
	}
	logger := log.G(ctx).WithField("container", cid)
	if execID != "" {
		logger = logger.WithField("exec", execID)
	}
	// A denial is told on stderr, or on stdout when there is no stderr.
	noticeOnStdout := st.terminal || stderr == nil
	ended := func(stream string, err error) {
		switch {
		case err == nil:
		case readDenied(err):
			pio.denyOnce.Do(func() {
				logger.WithError(err).WithField("rule", deniedRule(err)).Warn("container output not readable by the host: the confidential agent policy denies it; the guest drains the output and the log holds one line saying so")
			})
		default:
			logger.WithError(err).Debug(stream + " pump ended")
		}
	}
	pio.outputs.Add(1)
	go func() {
		defer pio.outputs.Done()
		ended("stdout", pumpOutput(podCtx, func(ctx context.Context) ([]byte, error) {
			r, err := agent.ReadStdout(ctx, req())
			return r.GetData(), err
		}, stdout, noticeOnStdout, failure))
	}()
	if !st.terminal {
		pio.outputs.Add(1)
		go func() {
			defer pio.outputs.Done()
			ended("stderr", pumpOutput(podCtx, func(ctx context.Context) ([]byte, error) {
				r, err := agent.ReadStderr(ctx, req())
				return r.GetData(), err
			}, stderr, !noticeOnStdout, failure))
		}()
	}
	if pio.stdin != nil {
		go func() {
			defer close(pio.stdinDone)
			if err := pumpStdin(podCtx, agent, cid, execID, pio.stdin, callTimeout); err != nil {
				logger.WithError(err).Debug("stdin pump ended")
			}
		}()
	}
	return pio, nil
}

// pumpOutput copies what read returns to w until read returns no data (EOF)
// or fails, or ctx ends, then closes w. A failing write loses that chunk
// only: w is kept for the next one. ctx ending also closes w, so a write
// waiting for a reader that never comes back does not hold the pump. A
// read the agent's policy refuses (readDenied) ends the pump at once, never
// retried; with notice, deniedLine is written to w first.
//
// With notice and failure, a pod that failed (its VM died, or its agent
// stopped answering the health check) ends w with failureLine: the shim
// ends the pod's context (ctx) once it has recorded why (watchPod), and a
// read that failed before that waits for it, at most failureWait.
func pumpOutput(ctx context.Context, read func(context.Context) ([]byte, error), w io.WriteCloser, notice bool, failure func() string) error {
	if w != nil {
		var closeOnce, endOnce sync.Once
		closeW := func() { closeOnce.Do(func() { w.Close() }) }
		// end tells the pod's failure, if any, and closes w, once: when ctx
		// ends (unblocking a write that waits for a reader) or when the
		// pump returns, whichever comes first; the other waits for it.
		end := func() {
			endOnce.Do(func() {
				if notice && failure != nil {
					if why := failure(); why != "" {
						// A FIFO nobody drains blocks the write: closing w ends it.
						t := time.AfterFunc(failureWriteTimeout, closeW)
						_, _ = io.WriteString(w, failureLine(why))
						t.Stop()
					}
				}
				closeW()
			})
		}
		// stop may win over a ctx that has just ended (context.AfterFunc
		// starts f only after ctx.Err is set), so the pump calls end too.
		stop := context.AfterFunc(ctx, end)
		defer func() {
			stop()
			end()
		}()
	}
	for {
		data, err := read(ctx)
		if err != nil {
			if notice && w != nil && readDenied(err) {
				_, _ = io.WriteString(w, deniedLine(err))
				return err
			}
			if notice && w != nil && failure != nil && ctx.Err() == nil {
				// The agent connection broke with the pod still live: its VM
				// may be dying, and watchPod ends ctx once it knows why.
				t := time.NewTimer(failureWait)
				select {
				case <-ctx.Done():
				case <-t.C:
				}
				t.Stop()
			}
			return err
		}
		if len(data) == 0 {
			return nil
		}
		if w != nil {
			_, _ = w.Write(data)
		}
	}
}

const (
	// failureWait bounds how long a pump whose read failed waits for the
	// pod's context to end with a failure reason (pumpOutput).
	failureWait = 2 * time.Second
	// failureWriteTimeout bounds the write of failureLine.
	failureWriteTimeout = time.Second
)

// failureLine is the last line of a failed pod's container output.
func failureLine(why string) string {
	return fmt.Sprintf("veil: the pod VM failed, so this process is reported exited with status %d: %s\n", vmGoneStatus, why)
}

// pumpStdin copies in to the process's stdin until in ends, then closes the
// process's stdin.
func pumpStdin(ctx context.Context, agent api.ProcessService, cid, execID string, in io.Reader, callTimeout time.Duration) error {
	buf := make([]byte, readChunk)
	var copyErr error
	for {
		n, err := in.Read(buf)
		if n > 0 {
			if werr := writeStdin(ctx, agent, cid, execID, buf[:n], callTimeout); werr != nil {
				copyErr = werr
				break
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, os.ErrClosed) {
				copyErr = err
			}
			break
		}
	}
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	if _, err := agent.CloseStdin(cctx, &api.CloseStdinRequest{ContainerId: cid, ExecId: execID}); err != nil {
		return errors.Join(copyErr, fmt.Errorf("closing stdin: %w", err))
	}
	return copyErr
}

func writeStdin(ctx context.Context, agent api.ProcessService, cid, execID string, data []byte, callTimeout time.Duration) error {
	for len(data) > 0 {
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		resp, err := agent.WriteStdin(cctx, &api.WriteStdinRequest{ContainerId: cid, ExecId: execID, Data: data})
		cancel()
		if err != nil {
			return fmt.Errorf("writing stdin: %w", err)
		}
		if resp.GetLen() == 0 {
			return errors.New("writing stdin: agent took nothing")
		}
		data = data[min(int(resp.GetLen()), len(data)):]
	}
	return nil
}

// closeStdin ends the stdin pump: containerd has closed its side (CloseIO),
// so what is left in the FIFO is read first; if the pump has not seen EOF
// within grace, the FIFO is closed under it. Either way the pump closes the
// process's stdin.
func (pio *processIO) closeStdin(grace time.Duration) {
	if pio == nil || pio.stdin == nil {
		return
	}
	select {
	case <-pio.stdinDone:
	case <-time.After(grace):
	}
	pio.closeOnce.Do(func() { pio.stdin.Close() })
	<-pio.stdinDone
}

// wait returns when both output pumps have finished.
func (pio *processIO) wait() {
	if pio != nil {
		pio.outputs.Wait()
	}
}

// close releases containerd's stdin FIFO.
func (pio *processIO) close() {
	if pio != nil && pio.stdin != nil {
		pio.closeOnce.Do(func() { pio.stdin.Close() })
	}
}

// readDenied reports a read the agent refused by policy (PermissionDenied:
// a confidential pod without allow_read_output).
func readDenied(err error) bool {
	return errdefs.IsPermissionDenied(errgrpc.ToNative(err))
}

// ruleInDenial finds the rule an agent policy denial names ("... denied by
// the confidential agent policy (rule allow_read_output): ...").
var ruleInDenial = regexp.MustCompile(`\(rule ([A-Za-z0-9_.-]+)\)`)

// deniedRule is the rule a denial names, or "" when it names none.
func deniedRule(err error) string {
	if m := ruleInDenial.FindStringSubmatch(err.Error()); m != nil {
		return m[1]
	}
	return ""
}

// deniedLine is the line a container's log gets in place of its output
// when the agent's policy denies reading it.
func deniedLine(err error) string {
	if rule := deniedRule(err); rule != "" {
		return "veil: output not readable by the host: denied by the confidential agent policy (rule " + rule + ")\n"
	}
	msg := errgrpc.ToNative(err).Error()
	return "veil: output not readable by the host: " + strings.ReplaceAll(msg, "\n", " ") + "\n"
}

// shareWriter gives n writers of w that close w when the last of them is
// closed: the two output pumps of a file:// log each close their end when
// their stream ends, and the first to end must not cut off the other's
// last output (or its denial line).
func shareWriter(w io.WriteCloser, n int) []io.WriteCloser {
	s := &sharedWriter{w: w, open: n}
	out := make([]io.WriteCloser, n)
	for i := range out {
		out[i] = &sharedEnd{s: s}
	}
	return out
}

type sharedWriter struct {
	w    io.WriteCloser
	mu   sync.Mutex
	open int
}

type sharedEnd struct {
	s    *sharedWriter
	once sync.Once
}

func (e *sharedEnd) Write(p []byte) (int, error) { return e.s.w.Write(p) }

func (e *sharedEnd) Close() error {
	var err error
	e.once.Do(func() {
		e.s.mu.Lock()
		e.s.open--
		last := e.s.open == 0
		e.s.mu.Unlock()
		if last {
			err = e.s.w.Close()
		}
	})
	return err
}
