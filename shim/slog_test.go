package shim

import (
	"bytes"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
)

// The hypervisor driver's slog lines reach containerd's log at their own
// level with their attributes as fields, written before the call returns.
func TestSlogToEntryKeepsLevelsAndFields(t *testing.T) {
	var buf bytes.Buffer
	l := logrus.New()
	l.SetOutput(&buf)
	l.SetLevel(logrus.InfoLevel)
	l.SetFormatter(&logrus.TextFormatter{DisableTimestamp: true})
	lg := slogTo(logrus.NewEntry(l).WithField("pod", "sb")).With("vm", "sb").WithGroup("qemu")

	lg.Debug("hidden", "x", 1)
	lg.Info("vm started", "pid", 42)
	lg.Warn("killing qemu", "err", "gone")

	got := buf.String()
	for _, want := range []string{
		`level=info msg="vm started" pod=sb qemu.pid=42 vm=sb`,
		`level=warning msg="killing qemu" pod=sb qemu.err=gone vm=sb`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("log lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "hidden") {
		t.Errorf("debug line written at info level:\n%s", got)
	}
}
