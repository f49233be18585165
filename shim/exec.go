package shim

import (
	"context"
	"fmt"

	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"google.golang.org/protobuf/types/known/emptypb"
)

var empty = &emptypb.Empty{}

// Exec records an exec process (TaskExecAdded); Start runs it in the guest.
func (s *service) Exec(ctx context.Context, r *taskAPI.ExecProcessRequest) (*emptypb.Empty, error) {
	return empty, errgrpc.ToGRPC(s.exec(r))
}

func (s *service) exec(r *taskAPI.ExecProcessRequest) error {
	c, _, err := s.lookup(r.ID, "")
	if err != nil {
		return err
	}
	if c.sandbox {
		return fmt.Errorf("container %s is the pod sandbox, which runs no process to exec in: %w", c.id, errdefs.ErrNotImplemented)
	}
	if r.ExecID == "" || r.Spec == nil {
		return fmt.Errorf("exec needs an ID and a process: %w", errdefs.ErrInvalidArgument)
	}
	c.mu.Lock()
	if c.initExited {
		c.mu.Unlock()
		return fmt.Errorf("container %s has exited: %w", c.id, errdefs.ErrFailedPrecondition)
	}
	if _, ok := c.execs[r.ExecID]; ok {
		c.mu.Unlock()
		return fmt.Errorf("exec %s in container %s: %w", r.ExecID, c.id, errdefs.ErrAlreadyExists)
	}
	pr := newProcess(c.id, r.ExecID, stdio{stdin: r.Stdin, stdout: r.Stdout, stderr: r.Stderr, terminal: r.Terminal})
	// The spec is an OCI Process as JSON: the agent takes it as is.
	pr.spec = r.Spec.GetValue()
	c.execs[r.ExecID] = pr
	c.mu.Unlock()
	s.send(&eventstypes.TaskExecAdded{ContainerID: c.id, ExecID: r.ExecID})
	return nil
}
