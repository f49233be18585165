package shim

import (
	"context"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/log"
	"google.golang.org/protobuf/types/known/emptypb"
)

// Shutdown ends the shim once it serves no container: the pod VM is powered
// off (or killed), every mount in the shared directory undone and the state
// directory removed; then the shim library exits the process. While
// containers remain it does nothing, as runc's shim does.
func (s *service) Shutdown(ctx context.Context, r *taskAPI.ShutdownRequest) (*emptypb.Empty, error) {
	s.mu.Lock()
	if len(s.containers) > 0 {
		s.mu.Unlock()
		return empty, nil
	}
	p := s.pod
	s.pod = nil
	s.mu.Unlock()
	if p != nil {
		if err := s.teardownPod(log.WithLogger(context.WithoutCancel(ctx), log.G(ctx).WithField("pod", p.id)), p); err != nil {
			log.G(ctx).WithError(err).Error("tearing down pod VM")
		}
	}
	s.sd.Shutdown()
	return empty, nil
}
