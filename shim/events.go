package shim

import (
	"context"

	"github.com/containerd/containerd/v2/core/events"
	"github.com/containerd/containerd/v2/core/runtime"
	"github.com/containerd/log"
)

// Events reach containerd through one channel (s.events) drained by one
// forwarder goroutine, so containerd sees them in the order the service sent
// them. The order the service keeps:
//
//   - TaskCreate is sent when Create has succeeded, before Create returns.
//   - TaskStart / TaskExecStarted are sent while the process's startMu is
//     held; a process's exit is sent only after taking startMu, so it always
//     follows the start event.
//   - TaskExecAdded is sent when Exec has recorded the exec.
//   - TaskOOM is sent when the agent's GetOOMEvent long-poll returns.
//   - TaskPaused / TaskResumed are sent after the agent paused or resumed.
//   - TaskExit of a process is sent after its output has been drained to
//     containerd's stdout/stderr (the agent's WaitProcess returns once the
//     output is in its buffers; the pumps then read it to EOF). The init
//     process's TaskExit is sent last for its container: after the exits of
//     every exec that had started.
//   - TaskDelete is sent when the init process's container has been removed.
//
// When the VM dies every process still running exits with status 255 through
// the same path (its WaitProcess fails), so the order holds then too.

// send queues an event for the forwarder; it blocks only when the queue is
// full, and never after the shim shut down.
func (s *service) send(evt any) {
	select {
	case s.events <- evt:
	case <-s.done:
	}
}

// forward publishes queued events in order until the shim shuts down, then
// publishes what is left. The shim library's publisher retries an event that
// containerd did not take (it may be restarting).
func (s *service) forward(ctx context.Context, publisher events.Publisher) {
	ctx = context.WithoutCancel(ctx)
	publish := func(e any) {
		topic := runtime.GetTopic(e)
		if err := publisher.Publish(ctx, topic, e); err != nil {
			log.G(ctx).WithError(err).WithField("topic", topic).Error("publishing event")
		}
	}
	defer close(s.forwarded)
	for {
		select {
		case e := <-s.events:
			publish(e)
		case <-s.done:
			for {
				select {
				case e := <-s.events:
					publish(e)
				default:
					return
				}
			}
		}
	}
}
