package shim

import (
	"strings"
	"testing"

	"github.com/containerd/log"
	"github.com/sirupsen/logrus"

	"github.com/veil-runtime/veil/shim/config"
)

// TestGuestLogForwarded: the agent's console lines land in the shim's log
// at their own level, the kernel's at debug, and nothing below the shim's
// level shows.
func TestGuestLogForwarded(t *testing.T) {
	buf := &syncBuffer{}
	l := logrus.New()
	l.SetOutput(buf)
	l.SetLevel(logrus.InfoLevel)
	l.SetFormatter(&logrus.TextFormatter{DisableTimestamp: true})
	line := guestLogLine(logrus.NewEntry(l).WithField("pod", "sb"))
	for _, s := range []string{
		`time=2026-12-07T03:00:00.000Z level=INFO msg=starting c=veil-agent version=v1`,
		`time=2026-12-07T03:00:01.000Z level=WARN msg="mount failed" c=veil-agent err="no such device"`,
		`time=2026-12-07T03:00:02.000Z level=DEBUG msg=chatter c=veil-agent`,
		`[    0.123456] virtio_blk virtio1: [vda] 2048 512-byte logical blocks`,
		`time=x level=ERROR msg="fatal: powering off" c=veil-agent`,
	} {
		line(s)
	}
	out := buf.String()
	for _, want := range []string{
		`level=info msg="msg=starting c=veil-agent version=v1" pod=sb source=guest-agent`,
		`level=warning msg="msg=\"mount failed\" c=veil-agent err=\"no such device\"" pod=sb source=guest-agent`,
		`level=error msg="msg=\"fatal: powering off\" c=veil-agent" pod=sb source=guest-agent`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("shim log lacks %s:\n%s", want, out)
		}
	}
	if strings.Contains(out, "chatter") || strings.Contains(out, "virtio_blk") {
		t.Errorf("debug lines shown at info:\n%s", out)
	}
	l.SetLevel(logrus.DebugLevel)
	line(`[    0.2] Run /init as init process`)
	if !strings.Contains(buf.String(), `level=debug msg="[    0.2] Run /init as init process" pod=sb source=guest-console`) {
		t.Errorf("kernel line at debug:\n%s", buf.String())
	}
}

func TestAgentLevelEdgeCases(t *testing.T) {
	for _, tc := range []struct {
		in    string
		level log.Level
		rest  string
	}{
		{"time=t level=DEBUG-4 msg=x c=veil-agent", log.DebugLevel, "msg=x c=veil-agent"},
		{"time=t level=WARN+2 msg=x c=veil-agent", log.WarnLevel, "msg=x c=veil-agent"},
		{"level=ERROR msg=x c=veil-agent", log.ErrorLevel, "msg=x c=veil-agent"},
		{"time=t level=PANIC msg=x c=veil-agent", log.InfoLevel, "msg=x c=veil-agent"},
		{"garbage c=veil-agent", log.InfoLevel, "garbage c=veil-agent"},
	} {
		if l, r := agentLevel(tc.in); l != tc.level || r != tc.rest {
			t.Errorf("agentLevel(%q) = %v %q, want %v %q", tc.in, l, r, tc.level, tc.rest)
		}
	}
}

// The VM the shim configures caps the console at the configured size and
// forwards its lines; a non-default agent level reaches the agent's kernel
// command line.
func TestPodVMConsoleConfig(t *testing.T) {
	h := newHarness(t)
	h.s.loadConfig = func(string) (config.Config, error) {
		cfg := config.Default()
		cfg.Hypervisor.ConsoleLogMaxKiB = 64
		cfg.Hypervisor.ConsoleLogFiles = 3
		cfg.Agent.LogLevel = "debug"
		return cfg, nil
	}
	cfg := startSandbox(t, h)
	if cfg.Console.MaxBytes != 64<<10 || cfg.Console.Files != 3 || cfg.Console.Line == nil {
		t.Errorf("console %+v, want 64 KiB x 3 with line forwarding", cfg.Console)
	}
	if !strings.Contains(strings.Join(cfg.KernelArgs, " "), "veil.log=debug") {
		t.Errorf("kernel args %q lack veil.log=debug", cfg.KernelArgs)
	}
	stopSandbox(t, h)

	h2 := newHarness(t)
	if cfg := startSandbox(t, h2); strings.Contains(strings.Join(cfg.KernelArgs, " "), "veil.log") || cfg.Console.MaxBytes != 1<<20 || cfg.Console.Files != 2 {
		t.Errorf("defaults: kernel args %q, console %+v; want no veil.log, 1 MiB x 2", cfg.KernelArgs, cfg.Console)
	}
	stopSandbox(t, h2)
}
