package shim

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/ttrpc"
	dto "github.com/prometheus/client_model/go"

	"github.com/veil-runtime/veil/guest-agent/api"
	"github.com/veil-runtime/veil/hypervisor"
	"github.com/veil-runtime/veil/shim/metrics"
)

func (a *fakeAgent) GuestDetails(context.Context, *api.GuestDetailsRequest) (*api.GuestDetailsResponse, error) {
	return &api.GuestDetailsResponse{KernelToAgentNs: 2e8, KernelToReadyNs: 3e8, MemTotalBytes: 200 << 20, Cpus: 1}, a.gone()
}

func gather(t *testing.T, s *service) map[string]*dto.MetricFamily {
	t.Helper()
	fams, err := s.metrics.Gatherer().Gather()
	if err != nil {
		// Partial errors (the fake VM's pid is no process) are expected;
		// the families are still there.
		t.Logf("gather: %v", err)
	}
	m := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		m[f.GetName()] = f
	}
	return m
}

func labelSet(m *dto.Metric) map[string]string {
	l := map[string]string{}
	for _, p := range m.Label {
		l[p.GetName()] = p.GetValue()
	}
	return l
}

// The shim records every pod start phase as it happens, serves the metrics
// in the pod's state directory, and removes the socket with the pod.
func TestPodMetricsRecordedAndServed(t *testing.T) {
	h := newHarness(t)
	startPodAndContainer(t, h)
	sock := filepath.Join(h.root, "test", "sb", metrics.SocketName)
	if fi, err := os.Stat(sock); err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("metrics socket %s: %v %v", sock, fi, err)
	}

	fams := gather(t, h.s)
	seen := map[string]bool{}
	for _, m := range fams["veil_pod_phase_timestamp_seconds"].GetMetric() {
		seen[labelSet(m)["phase"]] = m.GetGauge().GetValue() > 0
	}
	for _, ph := range metrics.PodPhases {
		if !seen[ph] {
			t.Errorf("phase %s not recorded (have %v)", ph, seen)
		}
	}
	containers := map[string]bool{}
	for _, m := range fams["veil_container_phase_timestamp_seconds"].GetMetric() {
		l := labelSet(m)
		containers[l["container"]+"/"+l["phase"]] = true
	}
	for _, want := range []string{"sb/created", "c1/created", "c1/started"} {
		if !containers[want] {
			t.Errorf("container phase %s not recorded (have %v)", want, containers)
		}
	}
	if g := fams["veil_guest_memory_bytes"].GetMetric(); len(g) != 1 || g[0].GetGauge().GetValue() != 200<<20 {
		t.Errorf("guest memory: %v", g)
	}

	h.sd.Shutdown()
	<-h.sd.Done()
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("metrics socket still there after teardown: %v", err)
	}
}

// Every agent call over the real ttrpc client goes through the metrics
// interceptor.
func TestAgentCallsTimed(t *testing.T) {
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
	h.s.dialAgent = h.s.dialMetered
	h.s.drivers = fakeDrivers(func(cfg hypervisor.Config, _ *slog.Logger) (hypervisor.Hypervisor, error) {
		h.hv = &fakeHV{cfg: cfg, done: make(chan struct{})}
		return &socketHV{fakeHV: h.hv, path: sock}, nil
	})
	startPodAndContainer(t, h)

	counts := map[string]uint64{}
	for _, m := range gather(t, h.s)["veil_agent_rpc_duration_seconds"].GetMetric() {
		l := labelSet(m)
		counts[l["method"]+" "+l["code"]] += m.GetHistogram().GetSampleCount()
	}
	for _, want := range []string{
		api.MethodCheck + " OK",
		api.MethodGuestDetails + " OK",
		api.MethodCreateSandbox + " OK",
		api.MethodCreateContainer + " OK",
		api.MethodStartContainer + " OK",
	} {
		if counts[want] == 0 {
			t.Errorf("no %s in the rpc histogram: %v", want, counts)
		}
	}
}
