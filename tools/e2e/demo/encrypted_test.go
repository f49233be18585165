package main

import (
	"errors"
	"testing"
)

// TestReasonKeepsTheRuntimeMessage: the demo prints the runtime's reason,
// not crictl's command line and log framing.
func TestReasonKeepsTheRuntimeMessage(t *testing.T) {
	err := errors.New(`starting container 4c34: running nsenter -- crictl start 4c34: exit status 1: E1127 11:41:03.795654 28384 remote_runtime.go:523] "StartContainer from runtime service failed" err="rpc error: code = PermissionDenied desc = failed to create shim task: pulling image r/demo:1 in the guest: broker refused resource default/image-key/demo (403 PolicyDeny): permission denied" containerID="4c34"`)
	want := "failed to create shim task: pulling image r/demo:1 in the guest: broker refused resource default/image-key/demo (403 PolicyDeny): permission denied"
	if got := reason(err); got != want {
		t.Errorf("reason = %q\nwant     %q", got, want)
	}
	if got := reason(errors.New("plain\nerror")); got != "plain error" {
		t.Errorf("reason of a plain error = %q", got)
	}
}
