package shim

import (
	"github.com/veil-runtime/veil/internal/netnstest"

	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/errdefs/pkg/errgrpc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/vishvananda/netns"

	"github.com/veil-runtime/veil/guest-agent/api"
	"github.com/veil-runtime/veil/hypervisor"
	"github.com/veil-runtime/veil/shim/portfwd"
)

// refusingPorts is an agent whose policy refuses port forwarding; it
// records the ports it was asked for.
type refusingPorts struct {
	api.PortForwardService
	mu    sync.Mutex
	ports []uint32
	asked chan struct{}
}

func (r *refusingPorts) DialPort(_ context.Context, req *api.DialPortRequest) (*api.DialPortResponse, error) {
	r.mu.Lock()
	r.ports = append(r.ports, req.GetPort())
	r.mu.Unlock()
	r.asked <- struct{}{}
	return nil, errgrpc.ToGRPC(errors.New("policy: rule allow_port_forward: denied"))
}

// loopbackNetNS is a pinned network namespace with lo up, as CNI leaves a
// pod's.
func loopbackNetNS(t *testing.T) string {
	t.Helper()
	return netnstest.New(t, "netns", true)
}

// TestPortForwardFollowsThePod: a pod with a network namespace of its own
// gets the redirect there once the sandbox is created; a connection to
// 127.0.0.1:PORT in it asks the agent for PORT; the pod's teardown removes
// the table.
func TestPortForwardFollowsThePod(t *testing.T) {
	h := newHarness(t)
	ports := &refusingPorts{asked: make(chan struct{}, 1)}
	s := h.s
	s.dialAgent = func(context.Context, hypervisor.Hypervisor) (*agentConn, error) {
		return &agentConn{sandbox: h.agent, container: h.agent, process: h.agent, portForward: ports, close: func() error { h.agent.disconnect(); return nil }, done: h.agent.conn}, nil
	}
	nsPath := loopbackNetNS(t)
	dir := bundle(t, sandboxAnn)
	spec, err := readSpec(dir)
	if err != nil {
		t.Fatal(err)
	}
	spec.Linux.Namespaces = []specs.LinuxNamespace{{Type: specs.NetworkNamespace, Path: nsPath}}
	b, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	must(h.s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "sb", Bundle: dir}))
	if got := netnstest.NFTables(t, nsPath); len(got) != 1 || got[0] != portfwd.TableName {
		t.Fatalf("tables in the pod namespace after Create: %q, want [%s]", got, portfwd.TableName)
	}

	// containerd's dial, from inside the namespace.
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		ns, err := netns.GetFromPath(nsPath)
		if err == nil {
			defer ns.Close()
			err = netns.Set(ns)
		}
		if err != nil {
			errc <- err
			return
		}
		c, err := net.Dial("tcp4", "localhost:4321")
		if err != nil {
			errc <- err
			return
		}
		defer c.Close()
		_, err = c.Read(make([]byte, 1))
		errc <- err
	}()
	<-ports.asked
	if err := <-errc; err == nil {
		t.Fatal("a refused forward read data")
	}
	ports.mu.Lock()
	if len(ports.ports) != 1 || ports.ports[0] != 4321 {
		t.Errorf("the agent was asked for ports %v, want [4321]", ports.ports)
	}
	ports.mu.Unlock()

	must(h.s.Kill(ctx, &taskAPI.KillRequest{ID: "sb", Signal: 9}))
	must(h.s.Delete(ctx, &taskAPI.DeleteRequest{ID: "sb"}))
	if got := netnstest.NFTables(t, nsPath); len(got) != 0 {
		t.Fatalf("tables left in the pod namespace after the pod's teardown: %q", got)
	}
}
