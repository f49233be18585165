package shim

import (
	"context"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"testing"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/ttrpc"

	"github.com/veil-runtime/veil/guest-agent/api"
	"github.com/veil-runtime/veil/hypervisor"
)

// socketHV is a fake VM whose agent transport is a real unix socket served
// by a ttrpc server, so the shim's real agent client is exercised.
type socketHV struct {
	*fakeHV
	path string
}

func (h *socketHV) DialAgent(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "unix", h.path)
}

func TestAgentOverTTRPC(t *testing.T) {
	h := newHarness(t)
	sock := filepath.Join(t.TempDir(), "agent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ttrpc.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	api.RegisterSandboxService(srv, h.agent)
	api.RegisterContainerService(srv, h.agent)
	api.RegisterProcessService(srv, h.agent)
	go srv.Serve(context.Background(), l) //nolint:errcheck // ends with Close
	t.Cleanup(func() { srv.Close() })

	h.s.dialAgent = h.s.dialMetered // the real client, timed by the metrics interceptor
	var shv *socketHV
	h.s.drivers = fakeDrivers(func(cfg hypervisor.Config, _ *slog.Logger) (hypervisor.Hypervisor, error) {
		h.hv = &fakeHV{cfg: cfg, done: make(chan struct{})}
		shv = &socketHV{fakeHV: h.hv, path: sock}
		return shv, nil
	})
	ctx := context.Background()
	startPodAndContainer(t, h)

	// An agent error crosses ttrpc as a gRPC status and comes back as the
	// errdefs kind.
	_, err = h.s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "rejected", Bundle: bundle(t, containerAnn)})
	if !errdefs.IsInvalidArgument(errgrpc.ToNative(err)) {
		t.Errorf("Create the agent rejects: %v, want invalid argument", err)
	}

	// The agent goes away (the VM died): the connection closes, every
	// waiting call fails, and every task exits with 255.
	h.agent.disconnect()
	srv.Close()
	h.pub.waitFor(t, "exits", func(evs []any) bool {
		n := names(evs)
		return slices.Contains(n, "TaskExit(c1/c1=255)") && slices.Contains(n, "TaskExit(sb/sb=255)")
	})
	// The rejected container left no mounts behind.
	if !slices.Contains(h.mnt.log, "unmount "+filepath.Join(h.root, "test/sb/shared/rejected/rootfs")) {
		t.Errorf("rejected container's rootfs not unmounted: %v", h.mnt.log)
	}
}
