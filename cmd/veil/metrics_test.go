package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/veil-runtime/veil/shim/metrics"
)

// fakeNode makes a state root with two pods: ns1/sb1 whose shim serves
// metrics, and ns1/sb2 whose socket is left by a dead shim.
func fakeNode(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	proc := t.TempDir()
	pid := filepath.Join(proc, "7")
	if err := os.MkdirAll(pid, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pid, "smaps_rollup"), []byte("0-1 ---p 0 0:0 0 [rollup]\nRss: 2048 kB\nPss: 1024 kB\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1_700_000_000, 0)
	now := t0
	m, err := metrics.New(metrics.Options{Proc: proc, ShimPID: 7, ShimStart: t0, Now: func() time.Time { now = now.Add(time.Second); return now }})
	if err != nil {
		t.Fatal(err)
	}
	m.Mark(metrics.PhaseQEMUSpawned)
	m.Mark(metrics.PhaseAgentReady)
	m.Mark(metrics.PhaseSandboxCreated)
	m.MarkContainer("c1", metrics.ContainerCreated)
	for _, d := range []string{"ns1/sb1", "ns1/sb2"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	srv, err := m.Serve(filepath.Join(root, "ns1/sb1", metrics.SocketName))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(root, "ns1/sb2", metrics.SocketName), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	return root
}

func parseText(t *testing.T, text string) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("parsing %s: %v", text, err)
	}
	return fams
}

func checkAggregate(t *testing.T, fams map[string]*dto.MetricFamily) {
	t.Helper()
	sb1 := map[string]string{"namespace": "ns1", "sandbox": "sb1"}
	sb2 := map[string]string{"namespace": "ns1", "sandbox": "sb2"}
	if v, ok := metrics.Value(fams, "veil_shim_up", sb1); !ok || v != 1 {
		t.Errorf("sb1 up = %v %v, want 1", v, ok)
	}
	if v, ok := metrics.Value(fams, "veil_shim_up", sb2); !ok || v != 0 {
		t.Errorf("sb2 (dead shim) up = %v %v, want 0", v, ok)
	}
	if v, ok := metrics.Value(fams, "veil_vm_boot_seconds", sb1); !ok || v != 1 {
		t.Errorf("sb1 vm boot = %v %v, want 1", v, ok)
	}
	want := map[string]string{"namespace": "ns1", "sandbox": "sb1", "process": "shim"}
	if v, ok := metrics.Value(fams, "veil_process_pss_bytes", want); !ok || v != 1024*1024 {
		t.Errorf("sb1 shim pss = %v %v", v, ok)
	}
}

func TestMetricsPrometheus(t *testing.T) {
	root := fakeNode(t)
	var out bytes.Buffer
	if err := metricsCmd([]string{"--root", root}, &out); err != nil {
		t.Fatal(err)
	}
	checkAggregate(t, parseText(t, out.String()))
}

func TestMetricsTable(t *testing.T) {
	root := fakeNode(t)
	var out bytes.Buffer
	if err := metricsCmd([]string{"--root", root, "--format", "table"}, &out); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("table:\n%s", out.String())
	}
	f1, f2 := strings.Fields(lines[1]), strings.Fields(lines[2])
	// sb1: up, shim start to sandbox created 3s, vm boot 1s, shim PSS 1 MiB, one container.
	if strings.Join(f1[:5], " ") != "ns1 sb1 yes 3s 1s" || !strings.Contains(lines[1], "1.0 MiB") || f1[len(f1)-1] != "1" {
		t.Errorf("sb1 row: %q", lines[1])
	}
	if strings.Join(f2[:3], " ") != "ns1 sb2 no" {
		t.Errorf("sb2 row: %q", lines[2])
	}
}

func TestMetricsListen(t *testing.T) {
	root := fakeNode(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- serveMetrics(ctx, l, root) }()
	resp, err := http.Get("http://" + l.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: %s", resp.Status, b.String())
	}
	checkAggregate(t, parseText(t, b.String()))
	cancel()
	if err := <-served; err != nil {
		t.Errorf("serve: %v", err)
	}
}

func TestMetricsBadFormat(t *testing.T) {
	err := metricsCmd([]string{"--format", "xml"}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), `"xml"`) {
		t.Errorf("err = %v, want one naming the format", err)
	}
}

// No state root (no pod ever ran): an empty aggregate, not an error.
func TestMetricsNoRoot(t *testing.T) {
	var out bytes.Buffer
	if err := metricsCmd([]string{"--root", filepath.Join(t.TempDir(), "none")}, &out); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "sandbox=") {
		t.Errorf("output names a sandbox: %s", out.String())
	}
}
