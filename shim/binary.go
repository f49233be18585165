package shim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"sync"
	"time"
)

// logBinaryReadyTimeout bounds how long a binary:// logger has to say it is
// ready.
const logBinaryReadyTimeout = 10 * time.Second

// startLogBinary runs containerd's binary:// logging protocol: the binary
// (the URI's path, its query as "--key value" arguments) gets the
// container's stdout as fd 3, stderr as fd 4 and a ready pipe as fd 5, which
// it closes once it is ready; CONTAINER_ID and CONTAINER_NAMESPACE are in its
// environment. The returned writers feed fds 3 and 4; when both are closed
// the binary sees EOF and is waited for.
func startLogBinary(ctx context.Context, u *url.URL, ns, cid string) (stdout, stderr io.WriteCloser, retErr error) {
	var args []string
	for k, vs := range u.Query() {
		args = append(args, k)
		if len(vs) > 0 && vs[0] != "" {
			args = append(args, vs[0])
		}
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return nil, nil, err
	}
	readyR, readyW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		errR.Close()
		errW.Close()
		return nil, nil, err
	}
	defer readyR.Close()
	cmd := exec.Command(u.Path, args...)
	cmd.Env = append(os.Environ(), "CONTAINER_ID="+cid, "CONTAINER_NAMESPACE="+ns)
	cmd.ExtraFiles = []*os.File{outR, errR, readyW}
	err = cmd.Start()
	outR.Close()
	errR.Close()
	readyW.Close()
	if err != nil {
		outW.Close()
		errW.Close()
		return nil, nil, fmt.Errorf("starting log binary %s: %w", u.Path, err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()

	ready := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, readyR)
		ready <- err
	}()
	select {
	case err = <-ready:
	case err = <-waited:
		if err == nil {
			err = errors.New("exited before it was ready")
		}
	case <-time.After(logBinaryReadyTimeout):
		err = fmt.Errorf("not ready after %s", logBinaryReadyTimeout)
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		outW.Close()
		errW.Close()
		_ = cmd.Process.Kill()
		return nil, nil, fmt.Errorf("starting log binary %s: %w", u.Path, err)
	}
	lb := &logBinary{cmd: cmd, waited: waited, open: 2}
	return &logBinaryStream{File: outW, lb: lb}, &logBinaryStream{File: errW, lb: lb}, nil
}

// logBinary waits for the logger once both of its streams are closed.
type logBinary struct {
	cmd    *exec.Cmd
	waited chan error
	mu     sync.Mutex
	open   int
}

func (l *logBinary) streamClosed() {
	l.mu.Lock()
	l.open--
	last := l.open == 0
	l.mu.Unlock()
	if !last {
		return
	}
	// The binary's exit status says nothing once its pipes are closed (or
	// it was killed): log binaries exit as they like.
	select {
	case <-l.waited: //nolint:errcheck // see above
	case <-time.After(logBinaryReadyTimeout):
		_ = l.cmd.Process.Kill()
		<-l.waited //nolint:errcheck // see above
	}
}

type logBinaryStream struct {
	*os.File
	lb   *logBinary
	once sync.Once
}

func (s *logBinaryStream) Close() error {
	var err error
	s.once.Do(func() {
		err = s.File.Close()
		s.lb.streamClosed()
	})
	return err
}
