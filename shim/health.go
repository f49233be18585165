package shim

import (
	"context"
	"fmt"
	"time"

	"github.com/containerd/log"

	"github.com/veil-runtime/veil/guest-agent/api"
)

// healthCheck asks the pod's agent Check every agent.health_interval, each
// call bounded by agent.health_timeout. A hung agent (a guest stuck in the
// kernel, a deadlocked agent, a VM starved by the host) answers nothing,
// and without this check every task would wait on it forever.
// agent.health_failures failed checks in a row fail the pod with the
// reason (failPod): watchPod then logs it, kills the VM, and every
// process still running exits with status 255 (exit.go). It ends with the
// pod.
func (s *service) healthCheck(p *pod) {
	a := p.cfg.Agent
	interval := a.HealthInterval.Std()
	if interval <= 0 {
		return
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	failed := 0
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-p.dead:
			return
		case <-tick.C:
		}
		ctx, cancel := context.WithTimeout(p.ctx, a.HealthTimeout.Std())
		start := time.Now()
		resp, err := p.agent.sandbox.Check(ctx, &api.CheckRequest{})
		cancel()
		if err == nil && resp.GetStatus() != api.CheckResponse_SERVING {
			err = fmt.Errorf("agent reports %s", resp.GetStatus())
		}
		if p.ctx.Err() != nil || p.state() != podReady {
			return // the pod is going away: not the agent's fault
		}
		if err == nil {
			failed = 0
			continue
		}
		failed++
		log.G(s.ctx).WithError(err).WithFields(log.Fields{"pod": p.id, "failures": failed, "of": a.HealthFailures, "took": time.Since(start).Round(time.Millisecond)}).
			Warn("guest agent health check failed")
		if uint32(failed) >= a.HealthFailures {
			p.fail(fmt.Sprintf("guest agent is not responding: %d health checks in a row failed (agent.health_interval %s, agent.health_timeout %s; last: %v)",
				failed, interval, a.HealthTimeout.Std(), err))
			return
		}
	}
}

// failure is why the pod failed, "" while it has not (startIO).
func (p *pod) failure() string {
	select {
	case <-p.failed:
		return p.failReason
	default:
		return ""
	}
}

// fail marks the pod failed for reason; watchPod ends it. Only the first
// reason counts.
func (p *pod) fail(reason string) {
	p.failOnce.Do(func() {
		p.failReason = reason
		close(p.failed)
	})
}
