package containers

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestOOMEventFromMemoryEvents drives the watcher with a stand-in
// memory.events file: inotify reports writes to it as the kernel's
// notifications on the real file.
func TestOOMEventFromMemoryEvents(t *testing.T) {
	h := newHarness(t, 1<<20)
	dir := filepath.Join(h.m.cfg.CgroupRoot, "veil", "c1")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	events := filepath.Join(dir, "memory.events")
	if err := os.WriteFile(events, []byte("low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h.create(t, "c1", false, "/bin/sh", "-c", "exec sleep 1000")

	// A change without a new kill is not an OOM event; the kill after it is.
	if err := os.WriteFile(events, []byte("low 0\nhigh 0\nmax 4\noom 1\noom_kill 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(events, []byte("low 0\nhigh 0\nmax 5\noom 2\noom_kill 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	id, err := h.m.OOMEvent(ctx)
	if err != nil || id != "c1" {
		t.Fatalf("OOMEvent = %q, %v; want c1", id, err)
	}
	select {
	case extra := <-h.m.oom:
		t.Fatalf("one kill reported twice (%q)", extra)
	default:
	}

	// After removal the watcher is gone: nothing is reported.
	if err := h.m.Remove(context.Background(), "c1", true); err != nil {
		t.Fatal(err)
	}
	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	if _, err := h.m.OOMEvent(ctx); err == nil {
		t.Fatal("OOMEvent returned an event with nothing OOM-killed")
	}
}
