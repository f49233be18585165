package shim

import (
	"context"
	"errors"
	"fmt"
	"time"

	cgroup2stats "github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"github.com/containerd/typeurl/v2"

	"github.com/veil-runtime/veil/guest-agent/api"
	"github.com/veil-runtime/veil/hypervisor"
	"github.com/veil-runtime/veil/shim/config"
	"github.com/veil-runtime/veil/shim/metrics"
)

// newMetrics creates the shim's metrics (shim/metrics): the QEMU pid and
// the containers' guest usage are read from the service at each scrape.
func (s *service) newMetrics() (*metrics.Pod, error) {
	return metrics.New(metrics.Options{
		QEMUPID: func() int {
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.pod == nil {
				return 0
			}
			return s.pod.hv.PID()
		},
		Containers: s.guestUsage,
	})
}

// dialMetered connects to the agent with every call timed in the metrics.
func (s *service) dialMetered(ctx context.Context, hv hypervisor.Hypervisor) (*agentConn, error) {
	return dialAgent(ctx, hv, ttrpc.WithUnaryClientInterceptor(s.metrics.Interceptor))
}

// guestUsage asks the agent for each running container's cgroup stats.
func (s *service) guestUsage(ctx context.Context) (map[string]metrics.Usage, error) {
	s.mu.Lock()
	p := s.pod
	var ids []string
	for id, c := range s.containers {
		if !c.sandbox {
			ids = append(ids, id)
		}
	}
	s.mu.Unlock()
	if p == nil || p.isDead() {
		return nil, errors.New("no pod VM")
	}
	usage := make(map[string]metrics.Usage, len(ids))
	var errs []error
	for _, id := range ids {
		resp, err := p.agent.container.StatsContainer(ctx, &api.StatsContainerRequest{ContainerId: id})
		if err != nil {
			errs = append(errs, fmt.Errorf("container %s: %w", id, err))
			continue
		}
		v, err := typeurl.UnmarshalAny(resp.GetMetrics())
		if err != nil {
			errs = append(errs, fmt.Errorf("decoding stats of container %s: %w", id, err))
			continue
		}
		m, ok := v.(*cgroup2stats.Metrics)
		if !ok {
			errs = append(errs, fmt.Errorf("stats of container %s are %T, not cgroup v2 metrics", id, v))
			continue
		}
		usage[id] = metrics.Usage{MemoryBytes: m.GetMemory().GetUsage(), CPUSeconds: float64(m.GetCPU().GetUsageUsec()) / 1e6}
	}
	return usage, errors.Join(errs...)
}

// recordBoot records what the pod's boot took: the VM's size, and the
// guest's own boot timing (GuestDetails) once the agent is ready.
func (s *service) recordBoot(ctx context.Context, agent *agentConn, cfg config.Config, vcpus, mem uint32) {
	s.metrics.SetVM(metrics.VM{Accel: cfg.Hypervisor.Accel, VCPUs: vcpus, MemoryMiB: mem,
		TCGTranslationCacheMiB: cfg.Hypervisor.TCGTranslationCacheMiB})
	cctx, cancel := context.WithTimeout(ctx, cfg.Agent.CallTimeout.Std())
	defer cancel()
	d, err := agent.sandbox.GuestDetails(cctx, &api.GuestDetailsRequest{})
	if err != nil {
		log.G(ctx).WithError(err).Warn("reading guest details for metrics")
		return
	}
	s.metrics.SetGuest(metrics.Guest{
		KernelToAgent: time.Duration(d.GetKernelToAgentNs()),
		KernelToReady: time.Duration(d.GetKernelToReadyNs()),
		MemTotalBytes: d.GetMemTotalBytes(),
		CPUs:          d.GetCpus(),
	})
}
