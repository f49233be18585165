package shim

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/veil-runtime/veil/guest-agent/api"
)

// stdinCloseGrace is how long CloseIO lets the stdin pump read what is left
// in the FIFO before closing it.
const stdinCloseGrace = 2 * time.Second

// Pause freezes the container in the guest (TaskPaused).
func (s *service) Pause(ctx context.Context, r *taskAPI.PauseRequest) (*emptypb.Empty, error) {
	return empty, errgrpc.ToGRPC(s.pauseResume(s.logCtx(ctx, r.ID, ""), r.ID, true))
}

// Resume thaws it (TaskResumed).
func (s *service) Resume(ctx context.Context, r *taskAPI.ResumeRequest) (*emptypb.Empty, error) {
	return empty, errgrpc.ToGRPC(s.pauseResume(s.logCtx(ctx, r.ID, ""), r.ID, false))
}

func (s *service) pauseResume(ctx context.Context, id string, pause bool) error {
	c, pr, err := s.lookup(id, "")
	if err != nil {
		return err
	}
	st, _, _, _ := pr.state()
	if pause && st != task.Status_RUNNING || !pause && st != task.Status_PAUSED {
		return fmt.Errorf("container %s is %s: %w", id, st, errdefs.ErrFailedPrecondition)
	}
	if !c.sandbox {
		p, err := s.currentPod()
		if err != nil {
			return err
		}
		cctx, cancel := p.callCtx(ctx)
		defer cancel()
		if pause {
			_, err = p.agent.container.PauseContainer(cctx, &api.PauseContainerRequest{ContainerId: id})
		} else {
			_, err = p.agent.container.ResumeContainer(cctx, &api.ResumeContainerRequest{ContainerId: id})
		}
		if err != nil {
			return p.agentError("pausing or resuming container in the guest", err)
		}
	}
	if pause {
		pr.setStatus(task.Status_PAUSED)
		s.send(&eventstypes.TaskPaused{ContainerID: id})
	} else {
		pr.setStatus(task.Status_RUNNING)
		s.send(&eventstypes.TaskResumed{ContainerID: id})
	}
	return nil
}

// Update changes the container's resources in the guest, within the pod
// VM's size. The VM is sized at boot and has no CPU or memory hotplug: a
// resize of the sandbox, or a container limit beyond the VM, is refused
// (checkResize).
func (s *service) Update(ctx context.Context, r *taskAPI.UpdateTaskRequest) (*emptypb.Empty, error) {
	ctx = s.logCtx(ctx, r.ID, "")
	c, _, err := s.lookup(r.ID, "")
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	var res specs.LinuxResources
	if err := json.Unmarshal(r.GetResources().GetValue(), &res); err != nil {
		return nil, errgrpc.ToGRPC(fmt.Errorf("decoding resources (%s): %w: %w", r.GetResources().GetTypeUrl(), err, errdefs.ErrInvalidArgument))
	}
	p, err := s.currentPod()
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	if err := checkResize(r.ID, c.sandbox, &res, p.vcpus, p.memMiB); err != nil {
		log.G(ctx).WithError(err).Warn("refusing resource update")
		return nil, errgrpc.ToGRPC(err)
	}
	if c.sandbox {
		return empty, nil // nothing asked
	}
	b, err := json.Marshal(&res)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	cctx, cancel := p.callCtx(ctx)
	defer cancel()
	if _, err := p.agent.container.UpdateContainer(cctx, &api.UpdateContainerRequest{ContainerId: r.ID, Resources: b}); err != nil {
		return nil, errgrpc.ToGRPC(p.agentError("updating container resources in the guest", err))
	}
	return empty, nil
}

// ResizePty resizes the process's terminal.
func (s *service) ResizePty(ctx context.Context, r *taskAPI.ResizePtyRequest) (*emptypb.Empty, error) {
	c, _, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	if c.sandbox {
		return empty, nil
	}
	p, err := s.currentPod()
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	cctx, cancel := p.callCtx(ctx)
	defer cancel()
	if _, err := p.agent.process.ResizeTTY(cctx, &api.ResizeTTYRequest{ContainerId: r.ID, ExecId: r.ExecID, Width: r.Width, Height: r.Height}); err != nil {
		return nil, errgrpc.ToGRPC(p.agentError("resizing terminal in the guest", err))
	}
	return empty, nil
}

// CloseIO closes the process's stdin once what containerd wrote has been
// passed on.
func (s *service) CloseIO(ctx context.Context, r *taskAPI.CloseIORequest) (*emptypb.Empty, error) {
	_, pr, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	if r.Stdin {
		pr.mu.Lock()
		pio := pr.io
		pr.mu.Unlock()
		pio.closeStdin(stdinCloseGrace)
	}
	return empty, nil
}

// Checkpoint is not supported: a VM's containers cannot be checkpointed
// with CRIU from the host.
func (s *service) Checkpoint(ctx context.Context, r *taskAPI.CheckpointTaskRequest) (*emptypb.Empty, error) {
	return nil, errgrpc.ToGRPC(fmt.Errorf("checkpoint of %s: not supported by the veil runtime: %w", r.ID, errdefs.ErrNotImplemented))
}
