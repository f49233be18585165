package containers

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/containerd/typeurl/v2"
)

// TestStatsTypeURL reads a stand-in cgroup directory: what matters is that
// the Any carries the type URL containerd decodes cgroup v2 metrics by.
func TestStatsTypeURL(t *testing.T) {
	h := newHarness(t, 1<<20)
	h.create(t, "c1", false, "/bin/sh", "-c", "exit 0")
	dir := filepath.Join(h.m.cfg.CgroupRoot, "veil", "c1")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{
		"cgroup.controllers": "cpu memory pids\n",
		"pids.current":       "3\n",
		"pids.max":           "max\n",
		"cpu.stat":           "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n",
		"memory.current":     "4096\n",
		"memory.max":         "max\n",
		"memory.stat":        "anon 4096\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	a, err := h.m.Stats("c1")
	if err != nil {
		t.Fatal(err)
	}
	if a.GetTypeUrl() != "io.containerd.cgroups.v2.Metrics" {
		t.Fatalf("type URL %q, want io.containerd.cgroups.v2.Metrics", a.GetTypeUrl())
	}
	var m stats.Metrics
	if err := typeurl.UnmarshalTo(a, &m); err != nil {
		t.Fatal(err)
	}
	if m.GetPids().GetCurrent() != 3 || m.GetCPU().GetUsageUsec() != 1500 || m.GetMemory().GetUsage() != 4096 {
		t.Fatalf("metrics %v", &m)
	}
}
