package shim

import (
	"context"
	"errors"
	"testing"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestProcessGone(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{errgrpc.ToGRPC(errdefs.ErrNotFound), true},
		{status.Error(codes.Unknown, `signalling container "c": /usr/bin/runc did not terminate successfully: exit status 1: runc: container not running`), true},
		{status.Error(codes.Unknown, "os: process already finished"), true},
		{errors.New("kill: No such process"), true},
		{status.Error(codes.Unknown, "permission denied"), false},
		{status.Error(codes.DeadlineExceeded, "context deadline exceeded"), false},
	} {
		if got := processGone(tc.err); got != tc.want {
			t.Errorf("processGone(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestKillOfExitingContainerIsNotFound(t *testing.T) {
	h := newHarness(t)
	startPodAndContainer(t, h)
	// The container exits just as it is signalled: runc says so.
	h.agent.mu.Lock()
	h.agent.signalErr = status.Error(codes.Unknown, "runc: container not running")
	h.agent.mu.Unlock()
	_, err := h.s.Kill(context.Background(), &taskAPI.KillRequest{ID: "c1", Signal: 15})
	if !errdefs.IsNotFound(errgrpc.ToNative(err)) {
		t.Errorf("Kill racing the exit: %v, want not found (as runc's shim says)", err)
	}
}
