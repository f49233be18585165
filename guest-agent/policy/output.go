package policy

// OutputReadable reports whether the host may read containers' output
// (Process.ReadStdout, ReadStderr) under the policy in force now: always
// for an ordinary pod; for a confidential one only once init-data was
// accepted with allow_read_output and while the agent is not locked down.
// The container manager asks when it creates a process: output nobody may
// read is drained in the guest instead of buffered for a reader that will
// never come (guest-agent/stream's NewDrain).
func (e *Enforcer) OutputReadable() bool {
	if !e.confidential {
		return true
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.locked == "" && e.policy != nil && e.policy.AllowReadOutput
}
