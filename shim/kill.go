package shim

import (
	"context"
	"fmt"
	"strings"

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
		if processGone(err) {
			// It exited in the guest before its exit reached the shim: the
			// exit is on its way; tell containerd what runc's shim would.
			return fmt.Errorf("process %s/%s has already exited: %w", r.ID, r.ExecID, errdefs.ErrNotFound)
		}
		return p.agentError("signalling process in the guest", err)
	}
	return nil
}

// processGone reports whether a signal failed because the process had
// already exited: the agent says not found, or runc (whose message the agent
// passes on) says the container is not running or there is no such process.
func processGone(err error) bool {
	if errdefs.IsNotFound(errgrpc.ToNative(err)) {
		return true
	}
	msg := strings.ToLower(err.Error())
	for _, s := range []string{"container not running", "process already finished", "no such process"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}
