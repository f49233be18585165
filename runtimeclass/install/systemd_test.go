package install

import (
	"bufio"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/godbus/dbus/v5"
)

// fakeSystemd is systemd's Manager on a private bus: RestartUnit records the
// unit and mode, then reports the job finished with result.
type fakeSystemd struct {
	conn   *dbus.Conn
	result string
	mu     sync.Mutex
	calls  []string
}

func (f *fakeSystemd) RestartUnit(name, mode string) (dbus.ObjectPath, *dbus.Error) {
	f.mu.Lock()
	f.calls = append(f.calls, name+" "+mode)
	f.mu.Unlock()
	job := dbus.ObjectPath("/org/freedesktop/systemd1/job/7")
	go f.conn.Emit("/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager.JobRemoved", uint32(7), job, name, f.result)
	return job, nil
}

// privateBus starts a dbus-daemon on a socket in a temp dir and points
// DBUS_SYSTEM_BUS_ADDRESS at it.
func privateBus(t *testing.T) string {
	t.Helper()
	addr := "unix:path=" + filepath.Join(t.TempDir(), "bus")
	cmd := exec.Command("dbus-daemon", "--session", "--nofork", "--nopidfile", "--print-address", "--address="+addr)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting dbus-daemon: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	// The daemon prints its address once it listens.
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "unix:") {
		t.Fatalf("dbus-daemon did not start: %q %v", line, err)
	}
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", strings.TrimSpace(line))
	return strings.TrimSpace(line)
}

func TestSystemdRestartOverDBus(t *testing.T) {
	addr := privateBus(t)
	for _, tc := range []struct {
		result string
		err    string
	}{
		{"done", ""},
		{"failed", "systemd job failed (journalctl -u containerd.service)"},
	} {
		t.Run(tc.result, func(t *testing.T) {
			conn, err := dbus.Connect(addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			fake := &fakeSystemd{conn: conn, result: tc.result}
			if err := conn.Export(fake, "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager"); err != nil {
				t.Fatal(err)
			}
			if reply, err := conn.RequestName("org.freedesktop.systemd1", dbus.NameFlagDoNotQueue); err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
				t.Fatalf("owning org.freedesktop.systemd1: %v %v", reply, err)
			}
			defer conn.ReleaseName("org.freedesktop.systemd1")

			err = Systemd{Unit: "containerd.service"}.Restart(context.Background())
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("Restart: %v, want %q", err, tc.err)
			}
			fake.mu.Lock()
			defer fake.mu.Unlock()
			if len(fake.calls) != 1 || fake.calls[0] != "containerd.service replace" {
				t.Fatalf("systemd saw %q, want one RestartUnit(containerd.service, replace)", fake.calls)
			}
		})
	}
}
