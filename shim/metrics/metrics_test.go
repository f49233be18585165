package metrics

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/veil-runtime/veil/guest-agent/api"
)

// fakeClock advances by step on every reading.
type fakeClock struct {
	t    time.Time
	step time.Duration
}

func (c *fakeClock) now() time.Time {
	t := c.t
	c.t = c.t.Add(c.step)
	return t
}

// fakeProc writes a procfs tree with smaps_rollup for the given pids.
func fakeProc(t *testing.T, rollups map[int][2]uint64) string {
	t.Helper()
	dir := t.TempDir()
	for pid, v := range rollups {
		d := filepath.Join(dir, strconv.Itoa(pid))
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		content := "00400000-7ffd0000 ---p 00000000 00:00 0 [rollup]\n" +
			"Rss:            " + strconv.FormatUint(v[0], 10) + " kB\n" +
			"Pss:            " + strconv.FormatUint(v[1], 10) + " kB\n"
		if err := os.WriteFile(filepath.Join(d, "smaps_rollup"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// parse renders m over HTTP and parses the text back.
func parse(t *testing.T, m *Pod) map[string]*dto.MetricFamily {
	t.Helper()
	sock := filepath.Join(t.TempDir(), SocketName)
	srv, err := m.Serve(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := srv.Close(); err != nil {
			t.Error(err)
		}
		if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket %s still there after Close: %v", sock, err)
		}
	}()
	client := http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	resp, err := client.Get("http://shim/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %s: %s", resp.Status, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parsing %s: %v", body, err)
	}
	return fams
}

func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	t.Helper()
	f := fams[name]
	if f == nil {
		t.Fatalf("no family %s", name)
	}
next:
	for _, m := range f.Metric {
		got := map[string]string{}
		for _, l := range m.Label {
			got[l.GetName()] = l.GetValue()
		}
		for k, v := range labels {
			if got[k] != v {
				continue next
			}
		}
		switch {
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Counter != nil:
			return m.Counter.GetValue()
		}
	}
	t.Fatalf("%s%v not found", name, labels)
	return 0
}

func TestRenderedAndParsedBack(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	clock := &fakeClock{t: t0.Add(time.Second), step: time.Second}
	proc := fakeProc(t, map[int][2]uint64{10: {20_000, 15_000}, 20: {300_000, 250_000}})
	m, err := New(Options{
		Now: clock.now, Proc: proc, ShimPID: 10, ShimStart: t0,
		QEMUPID: func() int { return 20 },
		Containers: func(context.Context) (map[string]Usage, error) {
			return map[string]Usage{"c1": {MemoryBytes: 4 << 20, CPUSeconds: 0.5}}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	m.Mark(PhaseQEMUSpawned) // t0+1s
	m.Mark(PhaseAgentReady)  // t0+2s
	m.SetGuest(Guest{KernelToAgent: 300 * time.Millisecond, KernelToReady: 500 * time.Millisecond, MemTotalBytes: 256 << 20, CPUs: 1})
	m.Mark(PhaseSandboxCreated)             // t0+3s
	m.MarkContainer("c1", ContainerCreated) // t0+4s
	m.MarkContainer("c1", ContainerStarted) // t0+5s
	m.MarkContainer("gone", ContainerCreated)
	m.ForgetContainer("gone")
	m.SetVM(VM{Accel: "tcg", VCPUs: 1, MemoryMiB: 256, TCGTranslationCacheMiB: 32})

	// Two agent calls through the interceptor: one fine, one NotFound.
	invoke := func(err error) ttrpc.Invoker {
		return func(context.Context, *ttrpc.Request, *ttrpc.Response) error { return err }
	}
	info := &ttrpc.UnaryClientInfo{FullMethod: api.MethodCheck}
	if err := m.Interceptor(context.Background(), nil, nil, info, invoke(nil)); err != nil {
		t.Fatal(err)
	}
	notFound := status.Error(codes.NotFound, "no such container")
	if err := m.Interceptor(context.Background(), nil, nil, info, invoke(notFound)); !errors.Is(err, notFound) {
		t.Fatalf("interceptor changed the error: %v", err)
	}

	fams := parse(t, m)
	sec := func(d time.Duration) float64 { return float64(t0.Add(d).UnixNano()) / 1e9 }
	for phase, want := range map[string]float64{
		PhaseShimStart:      sec(0),
		PhaseQEMUSpawned:    sec(time.Second),
		PhaseAgentReady:     sec(2 * time.Second),
		PhaseKernelEntry:    sec(1500 * time.Millisecond),
		PhaseAgentStarted:   sec(1800 * time.Millisecond),
		PhaseSandboxCreated: sec(3 * time.Second),
	} {
		if got := value(t, fams, "veil_pod_phase_timestamp_seconds", map[string]string{"phase": phase}); got != want {
			t.Errorf("phase %s = %f, want %f", phase, got, want)
		}
	}
	if got := value(t, fams, "veil_container_phase_timestamp_seconds", map[string]string{"container": "c1", "phase": ContainerStarted}); got != sec(5*time.Second) {
		t.Errorf("c1 started = %f", got)
	}
	for _, m := range fams["veil_container_phase_timestamp_seconds"].Metric {
		for _, l := range m.Label {
			if l.GetValue() == "gone" {
				t.Errorf("forgotten container still reported")
			}
		}
	}
	checks := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"veil_vm_boot_seconds", nil, 1},
		{"veil_guest_boot_seconds", map[string]string{"stage": "kernel_to_ready"}, 0.5},
		{"veil_guest_boot_seconds", map[string]string{"stage": "kernel_to_agent"}, 0.3},
		{"veil_guest_memory_bytes", nil, 256 << 20},
		{"veil_guest_cpus", nil, 1},
		{"veil_vm_config", map[string]string{"accel": "tcg", "tcg_translation_cache_mib": "32"}, 1},
		{"veil_process_resident_memory_bytes", map[string]string{"process": "qemu"}, 300_000 * 1024},
		{"veil_process_pss_bytes", map[string]string{"process": "qemu"}, 250_000 * 1024},
		{"veil_process_pss_bytes", map[string]string{"process": "shim"}, 15_000 * 1024},
		{"veil_container_memory_usage_bytes", map[string]string{"container": "c1"}, 4 << 20},
		{"veil_container_cpu_usage_seconds_total", map[string]string{"container": "c1"}, 0.5},
	}
	for _, c := range checks {
		if got := value(t, fams, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	// The histogram: one OK and one NotFound call, each of one fake
	// clock step (1s).
	h := fams["veil_agent_rpc_duration_seconds"]
	if h == nil || len(h.Metric) != 2 {
		t.Fatalf("rpc histogram: %v", h)
	}
	for _, mm := range h.Metric {
		if mm.Histogram.GetSampleCount() != 1 || mm.Histogram.GetSampleSum() != 1 {
			t.Errorf("rpc %v: count %d sum %f, want 1 and 1", mm.Label, mm.Histogram.GetSampleCount(), mm.Histogram.GetSampleSum())
		}
	}
}

// A VM that has gone (no smaps_rollup) and an agent that fails leave their
// figures out; the rest is still served.
func TestScrapeSurvivesMissingSources(t *testing.T) {
	proc := fakeProc(t, map[int][2]uint64{10: {1, 1}})
	m, err := New(Options{Proc: proc, ShimPID: 10, ShimStart: time.Unix(1, 0),
		QEMUPID:    func() int { return 99 },
		Containers: func(context.Context) (map[string]Usage, error) { return nil, errors.New("agent gone") },
	})
	if err != nil {
		t.Fatal(err)
	}
	fams := parse(t, m)
	if got := value(t, fams, "veil_pod_phase_timestamp_seconds", map[string]string{"phase": PhaseShimStart}); got != 1 {
		t.Errorf("shim_start = %v", got)
	}
	if got := value(t, fams, "veil_process_pss_bytes", map[string]string{"process": "shim"}); got != 1024 {
		t.Errorf("shim pss = %v", got)
	}
	if _, ok := fams["veil_container_memory_usage_bytes"]; ok {
		t.Error("container figures reported although the agent failed")
	}
}

// A nil *Pod records nothing and does not panic: the shim's code paths do
// not check for it.
func TestNilPod(t *testing.T) {
	var m *Pod
	m.Mark(PhaseAgentReady)
	m.MarkContainer("c", ContainerCreated)
	m.ForgetContainer("c")
	m.SetGuest(Guest{})
	m.SetVM(VM{})
	if _, ok := m.Phase(PhaseAgentReady); ok {
		t.Error("nil pod has a phase")
	}
}

// A process's start is placed on the host clock to within the kernel's
// tick (10 ms), not rounded to /proc/stat's whole-second boot time.
func TestMarkProcessStart(t *testing.T) {
	m, err := New(Options{ShimStart: time.Unix(1, 0)})
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	after := time.Now()
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	m.MarkProcessStart(PhaseQEMUSpawned, cmd.Process.Pid)
	got, ok := m.Phase(PhaseQEMUSpawned)
	const tick = 10 * time.Millisecond
	if !ok || got.Before(before.Add(-tick)) || got.After(after.Add(tick)) {
		t.Errorf("process start %v, want within [%v, %v] +- %v", got, before, after, tick)
	}
}
