package harness

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/veil-runtime/veil/snapshotter"
)

// startSnapshotter runs veil's proxy snapshotter (snapshotter/) in this
// process, on a socket in the environment's directory, for the guest-pull
// handler, reading the sandbox image from the environment's containerd
// config (ConfigPath) as veil-snapshotter --containerd-config does; Close
// stops it.
func (e *Env) startSnapshotter() error {
	e.SnapshotterRoot = filepath.Join(e.Dir, "snapshotter")
	logf, err := os.Create(filepath.Join(e.LogDir, "snapshotter.log"))
	if err != nil {
		return fmt.Errorf("creating snapshotter log: %w", err)
	}
	sn, err := snapshotter.New(e.SnapshotterRoot, snapshotter.Options{
		Log: slog.New(slog.NewTextHandler(logf, nil)), ContainerdConfig: e.ConfigPath()})
	if err != nil {
		logf.Close()
		return err
	}
	// Listening before containerd starts: its proxy plugin can connect.
	ln, err := snapshotter.Listen(e.snapshotterSocket())
	if err != nil {
		return errors.Join(err, sn.Close(), logf.Close())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- snapshotter.ServeListener(ctx, sn, ln) }()
	e.stopSnapshotter = func() error {
		cancel()
		err := <-done
		return errors.Join(err, sn.Close(), logf.Close())
	}
	return nil
}

func (e *Env) snapshotterSocket() string { return filepath.Join(e.Dir, "snapshotter.sock") }

// VeilDevInitData is the veil-dev init-data document with agentPolicy
// whose [image] table also sends the guest to the registry's guest
// listener (Registry.GuestImageTable): VeilDevInitDataWith plus the mirror
// and TLS root.
func (e *Env) VeilDevInitData(agentPolicy string) string {
	return VeilDevInitDataWith(agentPolicy) + e.Registry.GuestImageTable()
}
