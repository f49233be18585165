package shim

import (
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"

	"github.com/veil-runtime/veil/guest-agent/api"
)

// watchOOM keeps one GetOOMEvent long-poll outstanding for the pod's life
// (no timeout; it ends with the pod's context) and publishes TaskOOM for
// each container the guest kernel OOM-killed in.
func (s *service) watchOOM(p *pod) {
	for {
		resp, err := p.agent.container.GetOOMEvent(p.ctx, &api.GetOOMEventRequest{})
		if p.ctx.Err() != nil || p.isDead() {
			return
		}
		if err != nil {
			if errdefs.IsNotImplemented(errgrpc.ToNative(err)) {
				log.G(s.ctx).WithField("pod", p.id).Warn("agent has no OOM events")
				return
			}
			log.G(s.ctx).WithError(err).WithField("pod", p.id).Debug("waiting for OOM events; retrying")
			select {
			case <-p.ctx.Done():
				return
			case <-time.After(time.Second):
			}
			continue
		}
		if id := resp.GetContainerId(); id != "" {
			log.G(s.ctx).WithFields(log.Fields{"pod": p.id, "container": id}).Info("container OOM-killed in the guest")
			s.send(&eventstypes.TaskOOM{ContainerID: id})
		}
	}
}
