//go:build vm

package vmtest

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/veil-runtime/veil/guest-agent/api"
	"github.com/veil-runtime/veil/hypervisor/qemu"
)

// TestFigures logs the numbers the release note quotes: the guest image's
// size, QEMU start to agent ready (median of 5 boots), and QEMU's resident
// memory with one idle container. It fails only if it cannot measure.
//
//	VEIL_GUEST_DIR=build/guest go test -tags vm -v -run TestFigures ./tools/vmtest
func TestFigures(t *testing.T) {
	var total int64
	for _, f := range []string{"vmlinux", "initrd.img"} {
		fi, err := os.Stat(guestFile(f))
		if err != nil {
			t.Fatal(err)
		}
		total += fi.Size()
		t.Logf("image: %-10s %6.1f MiB", f, mib(fi.Size()))
	}
	t.Logf("image: total      %6.1f MiB", mib(total))

	var ready []time.Duration
	var kernelToReady []time.Duration
	for i := range 5 {
		ctx := testCtx(t)
		v, err := boot(ctx, fmt.Sprintf("fig%d", i), false)
		if err != nil {
			t.Fatalf("boot %d: %v", i, err)
		}
		ready = append(ready, v.ready)
		d, err := v.client.Sandbox.GuestDetails(ctx, &api.GuestDetailsRequest{})
		if err != nil {
			t.Fatalf("GuestDetails: %v", err)
		}
		kernelToReady = append(kernelToReady, time.Duration(d.KernelToReadyNs))
		if err := v.shutdown(); err != nil {
			t.Fatalf("shutdown %d: %v", i, err)
		}
	}
	t.Logf("boot: qemu start to agent ready, median of 5: %v (all: %v)", median(ready), ready)
	t.Logf("boot: guest kernel start to agent ready (guest clock), median of 5: %v", median(kernelToReady))

	ctx := testCtx(t)
	createContainer(t, ctx, shared, "idle", nil, "sleep", "100000")
	startContainer(t, ctx, shared, "idle")
	st, err := shared.client.Container.StateContainer(ctx, &api.StateContainerRequest{ContainerId: "idle"})
	if err != nil || st.Status != api.Status_STATUS_RUNNING {
		t.Fatalf("idle container: %v %v", st.GetStatus(), err)
	}
	pid := shared.q.PID()
	rss := procField(t, fmt.Sprintf("/proc/%d/status", pid), "VmRSS:")
	pss := procField(t, fmt.Sprintf("/proc/%d/smaps_rollup", pid), "Pss:")
	thp := procField(t, fmt.Sprintf("/proc/%d/smaps_rollup", pid), "AnonHugePages:")
	d, err := shared.client.Sandbox.GuestDetails(ctx, &api.GuestDetailsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("memory: qemu with one idle container (guest %d MiB, %d vCPUs): VmRSS %s, Pss %s, of which transparent huge pages %s",
		d.MemTotalBytes>>20, d.Cpus, rss, pss, thp)
	// Every VM of this tier boots qboot where QEMU's data directory has it
	// (hypervisor/qemu/bios.go), as Debian's does: the tier's power-offs,
	// root image, 9p share and serial ports all ran on it.
	if qboot := "/usr/share/qemu/" + qemu.QbootFile; func() bool { _, err := os.Stat(qboot); return err == nil }() {
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(cmdline, []byte("\x00-bios\x00"+qboot+"\x00")) {
			t.Errorf("qemu's command line has no -bios %s: %q", qboot, bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '}))
		}
	}
	// The guest's own view: what it uses of its RAM.
	if _, err := shared.client.Process.ExecProcess(ctx, &api.ExecProcessRequest{ContainerId: "idle", ExecId: "meminfo",
		Process: processJSON("head", "-n", "5", "/proc/meminfo")}); err != nil {
		t.Fatalf("exec meminfo: %v", err)
	}
	r := finish(t, ctx, shared.client, "idle", "meminfo", false)
	t.Logf("memory: guest /proc/meminfo:\n%s", r.stdout)
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// procField returns the value of the line starting with key ("123 kB").
func procField(t *testing.T, path, key string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), key); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("%s: no %s line", path, key)
	return ""
}
