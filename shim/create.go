package shim

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/veil-runtime/veil/guest-agent/api"
	"github.com/veil-runtime/veil/shim/config"
	"github.com/veil-runtime/veil/shim/metrics"
)

// Create creates a container in the pod VM (booting the VM first when this
// is the shim's first container) and queues TaskCreate.
func (s *service) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (*taskAPI.CreateTaskResponse, error) {
	ctx = s.logCtx(ctx, r.ID, "")
	resp, err := s.create(ctx, r)
	if err != nil {
		log.G(ctx).WithError(err).Error("creating container")
	}
	return resp, errgrpc.ToGRPC(err)
}

func (s *service) create(ctx context.Context, r *taskAPI.CreateTaskRequest) (_ *taskAPI.CreateTaskResponse, retErr error) {
	s.createMu.Lock()
	defer s.createMu.Unlock()
	s.mu.Lock()
	_, exists := s.containers[r.ID]
	p := s.pod
	s.mu.Unlock()
	if exists {
		return nil, fmt.Errorf("container %s: %w", r.ID, errdefs.ErrAlreadyExists)
	}
	spec, err := readSpec(r.Bundle)
	if err != nil {
		return nil, err
	}
	hooks, err := hostHooks(r.ID, r.Bundle, spec)
	if err != nil {
		return nil, err
	}
	ranCreateHooks := false

	if p == nil {
		path, err := configPath(r.Options, os.Getenv(config.PathEnv))
		if err != nil {
			return nil, err
		}
		cfg, err := s.loadConfig(path)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument)
		}
		if cfg.Debug {
			log.G(s.ctx).Logger.SetLevel(log.DebugLevel)
		}
		podID := groupID(r.ID, spec.Annotations)
		// The first container's create hooks run before the VM boots, so
		// the network they set up is the VM's (hooks.go).
		if !hooks.empty() && !hostNetwork(spec) && netnsPath(spec) == "" {
			dir := filepath.Join(s.stateRoot, s.namespace)
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return nil, fmt.Errorf("creating state directory: %w", err)
			}
			nsPath := filepath.Join(dir, podID+".netns")
			if err := newNetNS(nsPath); err != nil {
				return nil, err
			}
			setNetNSPath(spec, nsPath)
			s.mu.Lock()
			s.podNetNS = nsPath
			s.mu.Unlock()
			defer func() {
				if retErr != nil {
					s.removePodNetNS(ctx)
				}
			}()
		}
		hooks.netns = netnsPath(spec)
		if err := hooks.runCreate(ctx); err != nil {
			return nil, err
		}
		ranCreateHooks = true
		p, err = s.startPod(log.WithLogger(ctx, log.G(ctx).WithField("pod", podID)), podID, spec, cfg)
		if err != nil {
			return nil, err
		}
		s.setPod(p)
		defer func() {
			if retErr != nil {
				s.takePod(false)
				if err := s.teardownPod(context.WithoutCancel(ctx), p, false); err != nil {
					log.G(ctx).WithError(err).Warn("tearing down pod VM after failed create")
				}
			}
		}()
	}
	if p.isDead() {
		return nil, fmt.Errorf("creating container in pod %s: VM is gone: %w", p.id, errdefs.ErrUnavailable)
	}
	if !ranCreateHooks {
		// Not the pod's first container: the spec's namespace, else the
		// one the shim made for the pod.
		if hooks.netns = netnsPath(spec); hooks.netns == "" && !hostNetwork(spec) {
			s.mu.Lock()
			hooks.netns = s.podNetNS
			s.mu.Unlock()
		}
		if err := hooks.runCreate(ctx); err != nil {
			return nil, err
		}
	}

	c := &container{
		id:      r.ID,
		bundle:  r.Bundle,
		sandbox: isSandbox(spec.Annotations),
		init:    newProcess(r.ID, "", stdio{stdin: r.Stdin, stdout: r.Stdout, stderr: r.Stderr, terminal: r.Terminal}),
		execs:   make(map[string]*process),
		hooks:   hooks,
	}
	if c.sandbox {
		c.pause = make(chan uint32, 1)
		c.init.pid = uint32(p.hv.PID())
	} else if err := s.createInGuest(ctx, p, c, spec, r); err != nil {
		return nil, err
	}

	s.mu.Lock()
	s.containers[r.ID] = c
	s.mu.Unlock()
	s.metrics.MarkContainer(r.ID, metrics.ContainerCreated)
	s.send(&eventstypes.TaskCreate{
		ContainerID: r.ID,
		Bundle:      r.Bundle,
		Rootfs:      r.Rootfs,
		IO:          &eventstypes.TaskIO{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal},
		Checkpoint:  r.Checkpoint,
		Pid:         c.init.pid,
	})
	if c.sandbox {
		go s.runPause(p, c)
	} else {
		go s.waitProcess(p, c, c.init)
	}
	return &taskAPI.CreateTaskResponse{Pid: c.init.pid}, nil
}

// createInGuest shares the container's rootfs and bind mounts with the
// guest, asks the agent to create it, and starts pumping its stdio.
func (s *service) createInGuest(ctx context.Context, p *pod, c *container, spec *specs.Spec, r *taskAPI.CreateTaskRequest) (retErr error) {
	defer func() {
		if retErr != nil {
			s.unmountContainer(ctx, p, c)
		}
	}()
	if err := checkNetSysctls(c.id, spec, p.sysctls, p.conf != nil); err != nil {
		return err
	}
	rootfsStorage := &api.Storage{Driver: "shared", Source: rootfsTarget(c.id)}
	guestPull := p.cfg.Confidential.GuestPullEnabled()
	if !guestPull {
		if err := s.mountRootfs(p, c, spec, r); err != nil {
			return err
		}
	}

	// A confidential pod shares host paths only by allow_host_mounts, and
	// then whole (confidentialMounts classifies the spec's own mounts).
	submounts := hostSubmounts
	if p.conf != nil {
		submounts = nil
	}
	gspec, binds := guestSpec(c.id, spec, submounts)
	if p.guestShm {
		binds = useGuestShm(gspec, binds)
	}
	if p.conf != nil {
		// Confidential: volumes become guest copies or guest memory.
		var vols []guestVolume
		var err error
		binds, vols, err = confidentialMounts(c.id, spec, gspec, binds, p.conf.allowHostMounts(), p.conf.handler())
		if err != nil {
			return err
		}
		if err := s.startVolumes(ctx, p, c, vols); err != nil {
			return err
		}
	}
	for _, b := range binds {
		target := filepath.Join(p.sharedDir, b.Target)
		if err := s.mounter.Bind(b.Source, target, b.mode()); err != nil {
			return err
		}
		c.hostMounts = append(c.hostMounts, target)
	}
	specJSON, err := json.Marshal(gspec)
	if err != nil {
		return fmt.Errorf("encoding guest spec: %w", err)
	}
	if guestPull {
		// The guest pulls the image (after the mounts, so that a refused
		// one costs no pull); the host's snapshot is not shared.
		if rootfsStorage, err = s.guestPull(ctx, p, c.id, spec); err != nil {
			return err
		}
		defer func() {
			if retErr != nil {
				s.releaseGuestImage(ctx, p, c.id)
			}
		}()
	}
	devices, err := s.attachBlockDevices(ctx, p, c, spec)
	if err != nil {
		return err
	}

	cctx, cancel := p.callCtx(ctx)
	defer cancel()
	resp, err := p.agent.container.CreateContainer(cctx, &api.CreateContainerRequest{
		ContainerId: c.id,
		Spec:        specJSON,
		Rootfs:      rootfsStorage,
		Terminal:    r.Terminal,
		Stdin:       r.Stdin != "",
		Devices:     devices,
	})
	if err != nil {
		return p.agentError("creating container in the guest", err)
	}
	defer func() {
		if retErr != nil {
			rctx, cancel := p.callCtx(context.WithoutCancel(ctx))
			defer cancel()
			_, _ = p.agent.container.RemoveContainer(rctx, &api.RemoveContainerRequest{ContainerId: c.id, Force: true})
		}
	}()
	c.init.pid = resp.GetPid()
	pio, err := startIO(ctx, p.ctx, p.agent.process, s.namespace, c.id, "", c.init.stdio, p.cfg.Agent.CallTimeout.Std(), p.failure)
	if err != nil {
		return err
	}
	c.init.io = pio
	return nil
}

// mountRootfs shares the container's host rootfs (its snapshot mounts,
// or the bundle's rootfs directory) under the pod's shared directory.
func (s *service) mountRootfs(p *pod, c *container, spec *specs.Spec, r *taskAPI.CreateTaskRequest) error {
	rootfs := filepath.Join(p.sharedDir, rootfsTarget(c.id))
	mounts := mount.FromProto(r.Rootfs)
	if len(mounts) == 0 {
		// No snapshot (ctr run --rootfs): the spec's root is a directory.
		src := filepath.Join(r.Bundle, "rootfs")
		if spec.Root != nil && spec.Root.Path != "" {
			src = spec.Root.Path
			if !filepath.IsAbs(src) {
				src = filepath.Join(r.Bundle, src)
			}
		}
		mounts = []mount.Mount{{Type: "bind", Source: src, Options: []string{"rbind"}}}
	}
	if err := s.mounter.Rootfs(mounts, rootfs); err != nil {
		return err
	}
	c.hostMounts = append(c.hostMounts, rootfs)
	return nil
}

// unmountContainer stops the container's volume copies (confidential
// pods), detaches its block devices, undoes its host mounts, newest first,
// and removes its part of the shared directory.
func (s *service) unmountContainer(ctx context.Context, p *pod, c *container) {
	s.stopVolumes(ctx, p, c)
	s.detachBlockDevices(ctx, p, c)
	for _, m := range slices.Backward(c.hostMounts) {
		if err := s.mounter.Unmount(m); err != nil {
			log.G(ctx).WithError(err).Warn("unmounting container share")
		}
	}
	c.hostMounts = nil
	if p != nil {
		if err := removeUnmounted(filepath.Join(p.sharedDir, c.id)); err != nil {
			log.G(ctx).WithError(err).Warn("removing container share")
		}
	}
}

// removePodNetNS removes the network namespace the shim made for the pod,
// if it made one.
func (s *service) removePodNetNS(ctx context.Context) {
	s.mu.Lock()
	path := s.podNetNS
	s.podNetNS = ""
	s.mu.Unlock()
	if path == "" {
		return
	}
	if err := removeNetNS(path); err != nil {
		log.G(ctx).WithError(err).Warn("removing the pod's network namespace")
	}
}

func readSpec(bundle string) (*specs.Spec, error) {
	b, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return nil, fmt.Errorf("reading OCI spec: %w", err)
	}
	var spec specs.Spec
	if err := json.Unmarshal(b, &spec); err != nil {
		return nil, fmt.Errorf("decoding OCI spec %s: %w", filepath.Join(bundle, "config.json"), err)
	}
	return &spec, nil
}

// configPath returns the veil config path containerd passed in the task's
// runtime options (runtimeoptions.v1.Options, from the runtime's options in
// containerd's config or ctr's --runtime-config-path); without one, env
// (the shim's $VEIL_CONFIG: clients such as nerdctl pass no options);
// "" when there is neither (config.DefaultPath).
func configPath(opts *anypb.Any, env string) (string, error) {
	if opts == nil || opts.GetTypeUrl() == "" {
		return env, nil
	}
	v, err := typeurl.UnmarshalAny(opts)
	if err != nil {
		return "", fmt.Errorf("decoding runtime options %s: %w", opts.GetTypeUrl(), errdefs.ErrInvalidArgument)
	}
	if o, ok := v.(*runtimeoptions.Options); ok && o.GetConfigPath() != "" {
		return o.GetConfigPath(), nil
	}
	// Other option types (runc's) carry no config path.
	return env, nil
}
