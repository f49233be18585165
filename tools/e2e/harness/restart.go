package harness

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"time"
)

// ConfigPath is the private containerd's config file. A test of an
// installer (runtimeclass/e2e_test.go) edits it like a node's
// /etc/containerd/config.toml; RestartContainerd makes containerd read it.
func (e *Env) ConfigPath() string { return filepath.Join(e.Dir, "config.toml") }

// RestartContainerd stops containerd (SIGTERM, SIGKILL after ten seconds)
// and starts it again with the same config file, waiting until its CRI
// answers, as a node's service manager would. containerd.log starts over.
func (e *Env) RestartContainerd(ctx context.Context) error {
	if e.daemon != nil {
		e.stopDaemon()
	}
	return e.startDaemon(ctx)
}

// RestartRequestFile is the file whose appearance makes the watcher of
// WatchRestartRequests restart containerd; the watcher removes it once
// containerd answers again.
func (e *Env) RestartRequestFile() string { return filepath.Join(e.Dir, "restart-containerd") }

// RestartCommand is a shell command (for `veil install --restart-command`,
// run in a pod that mounts the host's / at root) that asks the watcher for a
// restart and returns once containerd is back: the private containerd is a
// child of the test process, so only the test process can restart it, as
// systemd would on a node.
func (e *Env) RestartCommand(root string) string {
	f := filepath.Join(root, e.RestartRequestFile())
	return ": >" + f + " && while [ -e " + f + " ]; do busybox sleep 0.2; done"
}

// WatchRestartRequests restarts containerd whenever RestartRequestFile
// appears, until the returned stop function is called (Close calls it too).
func (e *Env) WatchRestartRequests() (stop func()) {
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			select {
			case <-done:
				return
			case <-time.After(200 * time.Millisecond):
			}
			if _, err := os.Stat(e.RestartRequestFile()); err != nil {
				continue
			}
			e.log.Info("restart requested", "file", e.RestartRequestFile())
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			err := e.RestartContainerd(ctx)
			cancel()
			if err != nil {
				e.log.Error("restarting containerd on request", "err", err)
			}
			if err := os.Remove(e.RestartRequestFile()); err != nil && !errors.Is(err, os.ErrNotExist) {
				e.log.Error("removing the restart request", "err", err)
			}
		}
	}()
	var once bool
	stop = func() {
		if !once {
			once = true
			close(done)
			<-stopped
		}
	}
	e.beforeClose = append(e.beforeClose, func() error { stop(); return nil })
	return stop
}
