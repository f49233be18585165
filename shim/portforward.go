package shim

import (
	"context"

	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/veil-runtime/veil/shim/portfwd"
)

// startPortForward makes containerd's CRI PortForward reach the guest:
// containerd dials localhost:PORT in the pod's network namespace on the
// host, where nothing of the pod listens, so the shim answers there and
// relays each connection to the guest's loopback (shim/portfwd, the agent's
// PortForward service). A pod without a namespace of its own gets none (a
// hostNetwork pod's port-forward dials the node's own loopback). Port
// forwarding is not what the pod runs for: a namespace where it cannot be
// set up (a kernel without nf_tables NAT) is logged and the pod starts
// without it.
func (s *service) startPortForward(ctx context.Context, p *pod, spec *specs.Spec) *portfwd.Forwarder {
	path := netnsPath(spec)
	if hostNetwork(spec) || path == "" || p.agent.portForward == nil {
		return nil
	}
	f, err := portfwd.Start(path, p.agent.portForward, slogTo(log.G(s.ctx).WithField("pod", p.id)))
	if err != nil {
		log.G(ctx).WithError(err).Warn("port forwarding (kubectl port-forward) will not reach this pod")
		return nil
	}
	log.G(ctx).WithFields(log.Fields{"netns": path, "listener": f.Port(), "table": portfwd.TableName}).Info("port forwarding: loopback TCP in the pod namespace is relayed to the guest")
	return f
}
