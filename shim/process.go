package shim

import (
	"sync"
	"time"

	"github.com/containerd/containerd/api/types/task"
)

// stdio is where containerd wants a process's input and output: FIFO paths
// or file:// and binary:// URIs, empty when unused.
type stdio struct {
	stdin, stdout, stderr string
	terminal              bool
}

// process is one process containerd knows: a container's init (execID "")
// or an exec. Its status moves created -> running (-> paused -> running) ->
// stopped; setExited happens once.
type process struct {
	cid, execID string
	stdio       stdio
	// spec is the exec's OCI process as JSON (nil for init).
	spec []byte

	// startMu is held by Start from the agent call until the start event
	// is queued, and by the exit path before it queues the exit event, so
	// that a process that exits at once is never reported exited before it
	// is reported started.
	startMu sync.Mutex

	mu         sync.Mutex
	pid        uint32
	status     task.Status
	exitStatus uint32
	exitedAt   time.Time
	exited     chan struct{}
	io         *processIO
}

func newProcess(cid, execID string, io stdio) *process {
	return &process{cid: cid, execID: execID, stdio: io, status: task.Status_CREATED, exited: make(chan struct{})}
}

func (p *process) state() (status task.Status, pid, exitStatus uint32, exitedAt time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.status, p.pid, p.exitStatus, p.exitedAt
}

func (p *process) setStatus(s task.Status) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.status != task.Status_STOPPED {
		p.status = s
	}
}

// setExited records the exit once and wakes Wait; it reports whether this
// call recorded it.
func (p *process) setExited(status uint32, at time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.status == task.Status_STOPPED {
		return false
	}
	p.status, p.exitStatus, p.exitedAt = task.Status_STOPPED, status, at
	close(p.exited)
	return true
}

func (p *process) hasExited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// container is one containerd task: its init process, its execs and the
// host mounts made for it in the shared directory.
type container struct {
	id      string
	bundle  string
	sandbox bool // the pod's pause container, faked (pause.go)
	init    *process
	// hostMounts are shared-directory paths mounted for this container, in
	// the order made; delete unmounts them in reverse.
	hostMounts []string
	// volumes are a confidential pod's volume copies for this container
	// (volumes.go); stopped with the host mounts.
	volumes *volumeSet
	// pause receives the signals Kill sends to a faked sandbox process.
	pause chan uint32
	// blockIDs are the disks hot-plugged for the container (blockdev.go).
	blockIDs []string
	// hooks are the OCI hooks the host runs for it (hooks.go).
	hooks hookSet

	// deleteMu serialises Deletes of the container and its execs:
	// containerd may send two at once (a task's exit handler and a
	// RemoveContainer), and the second must find it gone, not undo its
	// mounts again.
	deleteMu sync.Mutex

	mu sync.Mutex
	// execs by exec ID.
	execs map[string]*process
	// initExited is set once the init process's exit is known; no exec
	// starts after it.
	initExited bool
	// starting counts exec Starts in flight, so the init's exit waits for
	// them to be running (and later exited) or failed.
	starting sync.WaitGroup
}

func (c *container) process(execID string) *process {
	if execID == "" {
		return c.init
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.execs[execID]
}

// runningExecs lists the execs that have started and not yet been reported
// exited.
func (c *container) runningExecs() []*process {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ps []*process
	for _, p := range c.execs {
		if st, _, _, _ := p.state(); st == task.Status_RUNNING || st == task.Status_PAUSED {
			ps = append(ps, p)
		}
	}
	return ps
}
