package shim

import (
	"context"
	"fmt"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/veil-runtime/veil/guest-agent/api"
)

// Kill signals a process; with All, every process of the container.
func (s *service) Kill(ctx context.Context, r *taskAPI.KillRequest) (*emptypb.Empty, error) {
	return empty, errgrpc.ToGRPC(s.kill(s.logCtx(ctx, r.ID, r.ExecID), r))
}

func (s *service) kill(ctx context.Context, r *taskAPI.KillRequest) error {
	c, pr, err := s.lookup(r.ID, r.ExecID)
	if err != nil {
		return err
	}
	if pr.hasExited() {
		return fmt.Errorf("process %s/%s has already exited: %w", r.ID, r.ExecID, errdefs.ErrNotFound)
	}
	if c.sandbox {
		select {
		case c.pause <- r.Signal:
		default: // a signal is already on its way
		}
		return nil
	}
	if st, _, _, _ := pr.state(); r.ExecID != "" && st == task.Status_CREATED {
		return fmt.Errorf("exec %s has not started: %w", r.ExecID, errdefs.ErrFailedPrecondition)
	}
	p, err := s.currentPod()
	if err != nil {
		return err
	}
	cctx, cancel := p.callCtx(ctx)
	defer cancel()
	if _, err := p.agent.process.SignalProcess(cctx, &api.SignalProcessRequest{
		ContainerId: r.ID, ExecId: r.ExecID, Signal: r.Signal, All: r.All,
	}); err != nil {
		if p.isDead() {
			// The process is about to be reported exited with 255.
			return nil
		}
		return p.agentError("signalling process in the guest", err)
	}
	return nil
}
