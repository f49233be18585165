package containers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containerd/errdefs"
	runc "github.com/containerd/go-runc"

	"github.com/veil-runtime/veil/guest-agent/storage"
)

// container is one container and its processes.
type container struct {
	id       string
	bundle   string
	runc     Runc
	init     *process // nil while being created
	execs    map[string]*process
	mounts   []string // storages mounted for it, in mount order
	started  bool
	paused   bool
	stopOOM  func()
	creating bool
}

// CreateRequest is a CreateContainer call.
type CreateRequest struct {
	ID       string
	Spec     []byte
	Rootfs   storage.Spec
	Storages []storage.Spec
	Terminal bool
	Stdin    bool
	// Devices are hot-plugged disks standing for spec devices.
	Devices []DeviceRequest
	// DrainOutput drains the process's stdout and stderr in the guest,
	// keeping only a tail (OutputTail), for output the host may not read:
	// a buffer waiting for a reader that never comes would block the
	// process on its next write.
	DrainOutput bool
}

// Create writes the bundle and runs runc create; it returns the init pid.
func (m *Manager) Create(ctx context.Context, req CreateRequest) (pid int, err error) {
	if err := CheckID("container id", req.ID); err != nil {
		return 0, err
	}
	bundle := m.bundle(req.ID)
	c := &container{id: req.ID, bundle: bundle, execs: map[string]*process{}, creating: true}
	m.mu.Lock()
	if _, ok := m.containers[req.ID]; ok {
		m.mu.Unlock()
		return 0, fmt.Errorf("container %q: %w", req.ID, errdefs.ErrAlreadyExists)
	}
	m.containers[req.ID] = c
	pidns := m.pidns
	m.mu.Unlock()
	defer func() {
		if err != nil {
			m.mu.Lock()
			delete(m.containers, req.ID)
			m.mu.Unlock()
		}
	}()

	if pidns == "" && m.cfg.PodPIDNamespace != nil && JoinsPodPIDNamespace(req.Spec) {
		if pidns, err = m.cfg.PodPIDNamespace(); err != nil {
			return 0, fmt.Errorf("container %q: %w", req.ID, err)
		}
	}
	rootfs, err := m.resolveRootfs(req.Rootfs)
	if err != nil {
		return 0, fmt.Errorf("container %q rootfs: %w", req.ID, err)
	}
	spec, err := RewriteSpec(req.Spec, Rewrite{ID: req.ID, Rootfs: rootfs, Terminal: req.Terminal, PIDNamespace: pidns, Confidential: m.cfg.Confidential, SpecVersion: m.cfg.SpecVersion})
	if err != nil {
		return 0, err
	}
	disks, err := m.findDevices(ctx, req.Devices)
	if err != nil {
		return 0, fmt.Errorf("container %q: %w", req.ID, err)
	}
	if err := RewriteDevices(spec, disks); err != nil {
		return 0, fmt.Errorf("container %q: %w", req.ID, err)
	}
	plans := make([]storage.Plan, 0, len(req.Storages))
	for _, s := range req.Storages {
		p, err := storage.PlanMount(s, m.cfg.SharedDir)
		if err != nil {
			return 0, fmt.Errorf("container %q storage: %w", req.ID, err)
		}
		plans = append(plans, p)
	}
	defer func() {
		if err != nil {
			m.unmountAll(c.mounts)
			removeBundle(bundle)
		}
	}()
	for _, p := range plans {
		if err := m.cfg.Mounter.Mount(p); err != nil {
			return 0, fmt.Errorf("container %q: %w", req.ID, err)
		}
		c.mounts = append(c.mounts, p.Target)
	}

	if err := writeBundle(bundle, spec); err != nil {
		return 0, err
	}
	uid, gid := int(spec.Process.User.UID), int(spec.Process.User.GID)
	io, err := newStdio(req.Terminal, req.Stdin, uid, gid)
	if err != nil {
		return 0, err
	}
	c.runc = m.cfg.NewRunc(bundle)
	pidFile := filepath.Join(bundle, "init.pid")
	// Never --no-pivot: the guest's root is a tmpfs (boot.SwitchRoot), so
	// runc pivots into the container's root and a chroot inside it cannot
	// climb out to the guest's files.
	opts := &runc.CreateOpts{PidFile: pidFile}
	if io.socket != nil {
		opts.ConsoleSocket = io.socket
	} else {
		opts.IO = io.pipes
	}
	if err := c.runc.Create(ctx, req.ID, bundle, opts); err != nil {
		io.close()
		return 0, runcError(c.runc, bundle, fmt.Sprintf("creating container %q", req.ID), err)
	}
	pid, err = readPidFile(pidFile)
	if err == nil {
		var p *process
		p, err = io.attach("", pid, req.Stdin, m.cfg.BufferBytes, req.DrainOutput)
		if err == nil {
			p.watch(m.cfg.Exits.Watch(pid))
			c.init = p
			if pidns != "" {
				// In the pod's shared PID namespace the init's death does not
				// end the container's other processes; as runc's shim does,
				// kill them, or they hold the output pipes open and the exit
				// is never reported (found by the shim's e2e run).
				go func() { //nolint:gosec // G118: runs after the create request (and its ctx) has ended, at the init's exit
					<-p.exited
					_ = c.runc.Kill(context.Background(), req.ID, 9, &runc.KillOpts{All: true})
				}()
			}
		}
	}
	if err != nil {
		io.close()
		_ = c.runc.Delete(context.WithoutCancel(ctx), req.ID, &runc.DeleteOpts{Force: true})
		return 0, fmt.Errorf("creating container %q: %w", req.ID, err)
	}
	c.stopOOM = m.watchOOM(req.ID)
	m.mu.Lock()
	c.creating = false
	m.mu.Unlock()
	m.cfg.Log.Info("container created", "id", req.ID, "pid", pid, "rootfs", rootfs)
	return pid, nil
}

// resolveRootfs finds the rootfs directory a Storage names: "shared"
// inside the shared directory, "bind" an absolute guest path.
func (m *Manager) resolveRootfs(s storage.Spec) (string, error) {
	switch s.Driver {
	case "shared":
		return storage.Resolve(m.cfg.SharedDir, s.Source)
	case "bind":
		if !filepath.IsAbs(s.Source) {
			return "", fmt.Errorf("bind rootfs %q must be an absolute guest path: %w", s.Source, errdefs.ErrInvalidArgument)
		}
		if _, err := os.Stat(s.Source); err != nil {
			return "", fmt.Errorf("rootfs %s: %w", s.Source, errdefs.ErrNotFound)
		}
		return filepath.Clean(s.Source), nil
	}
	return "", fmt.Errorf("rootfs driver %q: use \"shared\" with source <container_id>/rootfs: %w", s.Driver, errdefs.ErrInvalidArgument)
}

func writeBundle(dir string, spec any) error {
	if err := os.RemoveAll(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing stale bundle %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating bundle %s: %w", dir, err)
	}
	b, err := json.Marshal(spec)
	if err != nil {
		return fmt.Errorf("encoding config.json: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o600); err != nil {
		return fmt.Errorf("writing bundle config: %w", err)
	}
	return nil
}

func (m *Manager) unmountAll(targets []string) {
	for i := len(targets) - 1; i >= 0; i-- {
		if err := m.cfg.Mounter.Unmount(targets[i]); err != nil {
			m.cfg.Log.Warn("unmounting container storage", "path", targets[i], "err", err)
		}
	}
}

// Start starts a created container's init process.
func (m *Manager) Start(ctx context.Context, id string) error {
	c, err := m.get(id)
	if err != nil {
		return err
	}
	m.mu.Lock()
	started := c.started
	m.mu.Unlock()
	if started || c.init.hasExited() {
		return fmt.Errorf("container %q was already started: %w", id, errdefs.ErrFailedPrecondition)
	}
	if err := c.runc.Start(ctx, id); err != nil {
		return runcError(c.runc, c.bundle, fmt.Sprintf("starting container %q", id), err)
	}
	m.mu.Lock()
	c.started = true
	m.mu.Unlock()
	return nil
}
