package shim

import (
	"context"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/log"
	"google.golang.org/protobuf/types/known/emptypb"
)

// Shutdown ends the shim once it serves no container; while containers
// remain it does nothing, as runc's shim does. The pod VM is normally gone
// already (the last Delete ended it); if not (a failed first Create that
// containerd never deleted), it is killed here without waiting for the
// guest: containerd allows Shutdown 3 seconds.
func (s *service) Shutdown(ctx context.Context, r *taskAPI.ShutdownRequest) (*emptypb.Empty, error) {
	p, ok := s.takePod(true)
	if !ok {
		return empty, nil
	}
	if p != nil {
		if err := s.teardownPod(log.WithLogger(context.WithoutCancel(ctx), log.G(ctx).WithField("pod", p.id)), p, true); err != nil {
			log.G(ctx).WithError(err).Error("tearing down pod VM")
		}
	}
	s.sd.Shutdown()
	return empty, nil
}
