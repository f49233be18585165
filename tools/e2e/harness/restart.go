package harness

import (
	"context"
	"path/filepath"
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
