package reaper

import (
	"time"

	"golang.org/x/sys/unix"
)

// Exit is one reaped process.
type Exit struct {
	Pid int
	// Status as containerd reports it: the exit code, or 128+signal.
	Status int
	At     time.Time
}

// ExitStatus converts a wait status to containerd's convention: the exit
// code, or 128 plus the signal that killed the process.
func ExitStatus(ws unix.WaitStatus) int {
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

// table decides who gets an exit. Registered pids get theirs on their
// channel; exits nobody waits for yet are kept (a bounded number, oldest
// dropped first) because a container process can exit before the agent has
// read its pid from runc's pid file. It is not safe for concurrent use: the
// Reaper serialises access.
type table struct {
	waiters   map[int]chan Exit
	unclaimed map[int]Exit
	order     []int // unclaimed pids, oldest first
	limit     int
}

func newTable(limit int) *table {
	return &table{waiters: map[int]chan Exit{}, unclaimed: map[int]Exit{}, limit: limit}
}

// register returns the channel pid's exit will be delivered on (buffered,
// so delivery never blocks the reaper). A kept exit is delivered at once
// when claim is set; otherwise the pid is known to be a fresh process and a
// kept exit for it is stale (pid reuse) and dropped.
func (t *table) register(pid int, claim bool) chan Exit {
	ch := make(chan Exit, 1)
	if e, ok := t.unclaimed[pid]; ok {
		t.forget(pid)
		if claim {
			ch <- e
			return ch
		}
	}
	t.waiters[pid] = ch
	return ch
}

// deliver hands e to its waiter or keeps it.
func (t *table) deliver(e Exit) {
	if ch, ok := t.waiters[e.Pid]; ok {
		delete(t.waiters, e.Pid)
		ch <- e
		return
	}
	if _, ok := t.unclaimed[e.Pid]; ok {
		t.forget(e.Pid)
	}
	t.unclaimed[e.Pid] = e
	t.order = append(t.order, e.Pid)
	for len(t.order) > t.limit {
		delete(t.unclaimed, t.order[0])
		t.order = t.order[1:]
	}
}

func (t *table) forget(pid int) {
	delete(t.unclaimed, pid)
	for i, p := range t.order {
		if p == pid {
			t.order = append(t.order[:i], t.order[i+1:]...)
			return
		}
	}
}
