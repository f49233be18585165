package shim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
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
// context ends (VM gone). If containerd's reader goes away the pump keeps
// reading and discards, so the guest never blocks on a full buffer. The stdin
// pump copies until containerd closes its end (EOF) or CloseIO, then closes
// the process's stdin.
type processIO struct {
	outputs   sync.WaitGroup
	stdin     io.ReadCloser
	stdinDone chan struct{}
	closeOnce sync.Once
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
		w, err := fifo.OpenFifo(ctx, path, syscall.O_WRONLY, 0)
		if err != nil {
			return nil, fmt.Errorf("opening output fifo %s: %w", path, err)
		}
		return w, nil
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
			return f, nopCloser{f}, nil
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
// bounds each write to stdin.
func startIO(ctx, podCtx context.Context, agent api.ProcessService, ns, cid, execID string, st stdio, callTimeout time.Duration) (_ *processIO, retErr error) {
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
	logger := log.G(ctx)
	pio.outputs.Add(1)
	go func() {
		defer pio.outputs.Done()
		if err := pumpOutput(podCtx, func(ctx context.Context) ([]byte, error) {
			r, err := agent.ReadStdout(ctx, req())
			return r.GetData(), err
		}, stdout); err != nil {
			logger.WithError(err).Debug("stdout pump ended")
		}
	}()
	if !st.terminal {
		pio.outputs.Add(1)
		go func() {
			defer pio.outputs.Done()
			if err := pumpOutput(podCtx, func(ctx context.Context) ([]byte, error) {
				r, err := agent.ReadStderr(ctx, req())
				return r.GetData(), err
			}, stderr); err != nil {
				logger.WithError(err).Debug("stderr pump ended")
			}
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
// or fails, then closes w. A failing w is dropped, not fatal.
func pumpOutput(ctx context.Context, read func(context.Context) ([]byte, error), w io.WriteCloser) error {
	defer func() {
		if w != nil {
			w.Close()
		}
	}()
	for {
		data, err := read(ctx)
		if err != nil {
			return err
		}
		if len(data) == 0 {
			return nil
		}
		if w != nil {
			if _, err := w.Write(data); err != nil {
				w.Close()
				w = nil
			}
		}
	}
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

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }
