//go:build vm

package vmtest

import (
	"bytes"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/veil-runtime/veil/guest-agent/console"
	"github.com/veil-runtime/veil/hypervisor"
	"github.com/veil-runtime/veil/hypervisor/qemu"
	"github.com/veil-runtime/veil/tools/guest-image/cpio"
	"github.com/veil-runtime/veil/tools/guest-image/guestimage"
)

// TestDebugConsole opens the guest's debug shell twice through the VM's
// console socket: each session is a fresh root shell in the guest (its own
// PID), sees the guest (its kernel, the agent as PID 1), and ends when the
// shell exits.
func TestDebugConsole(t *testing.T) {
	pids := map[string]bool{}
	for i := range 2 {
		conn, err := net.Dial("unix", filepath.Join(shared.state, qemu.DebugConsoleSocket))
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		in := strings.NewReader("echo answer-$((6*7)) pid-$$ uid-$(id -u); cat /proc/1/comm; uname -r\nexit\n")
		err = console.Attach(conn, in, &out)
		conn.Close()
		if err != nil {
			t.Fatalf("session %d: %v; output:\n%s", i, err, out.String())
		}
		// The pty echoes the input line too; these match only the output.
		text := out.String()
		m := answer.FindStringSubmatch(text)
		if m == nil {
			t.Fatalf("session %d: no answer from a root shell:\n%s", i, text)
		}
		if !strings.Contains(text, "\ninit\r") {
			t.Errorf("session %d: PID 1 is not the agent (/init):\n%s", i, text)
		}
		if pid := m[1]; pids[pid] {
			t.Errorf("session %d reused shell pid %s: not a fresh shell", i, m[1])
		}
		pids[m[1]] = true
	}
}

var answer = regexp.MustCompile(`answer-42 pid-([0-9]+) uid-0`)

// TestBootWithoutInitialConsole boots an initramfs whose /dev/console
// leads nowhere, so the kernel starts /init with no stdin, stdout or
// stderr, as it does when the host has not yet announced the virtio
// console port hvc0 as /init starts (6 boots in 240 here under TCG, before
// the fix; CI lost a VM tier to it). Go's runtime then opens the image's
// /dev/null for them (without it the agent died before main: "Attempted
// to kill init!"), and the agent, once devtmpfs is mounted, logs to the
// console: it comes up and its log is on the console.
func TestBootWithoutInitialConsole(t *testing.T) {
	mb, err := os.ReadFile(guestFile(guestimage.ManifestFile))
	if err != nil {
		t.Fatal(err)
	}
	var m guestimage.Manifest
	if err := json.Unmarshal(mb, &m); err != nil {
		t.Fatalf("%s: %v", guestimage.ManifestFile, err)
	}
	var raw []byte
	if c := m.Initramfs.Compression; c == string(guestimage.CompressNone) {
		raw, err = os.ReadFile(guestFile("initrd.img"))
	} else {
		tool := map[string]string{"gzip": "gzip", "zstd": "zstd", "xz": "xz", "lz4": "lz4"}[c]
		if tool == "" {
			t.Fatalf("the initramfs is compressed with %q, which this test cannot undo", c)
		}
		raw, err = exec.Command(tool, "-dc", guestFile("initrd.img")).Output()
	}
	if err != nil {
		t.Fatalf("reading the initramfs: %v", err)
	}
	entries, err := cpio.Read(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	// The kernel's built-in initramfs has a /dev/console of its own, which
	// an entry of another type replaces: a symlink to nothing, which the
	// kernel cannot open.
	i := slices.IndexFunc(entries, func(e cpio.Entry) bool { return e.Name == "dev/console" })
	if i < 0 {
		t.Fatal("the image has no /dev/console")
	}
	entries[i] = cpio.Entry{Name: "dev/console", Mode: cpio.TypeSymlink | 0o777, Data: []byte("/no-console")}
	if _, err := cpio.Find(entries, "dev/null"); err != nil {
		t.Fatalf("the image has no /dev/null: %v", err)
	}
	var b bytes.Buffer
	if err := cpio.Write(&b, entries, 0); err != nil {
		t.Fatal(err)
	}
	initrd := filepath.Join(t.TempDir(), "initrd-no-console.cpio")
	if err := os.WriteFile(initrd, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	v, err := bootWith(testCtx(t), "noconsole", false, func(c *hypervisor.Config) {
		c.Initrd = initrd
		// The kernel's warning about the console is hidden on a quiet
		// console unless warnings are let through.
		c.KernelArgs = []string{"loglevel=5"}
	})
	if err != nil {
		t.Fatalf("booting without an initial console: %v", err)
	}
	defer func() {
		if err := v.shutdown(); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	}()
	c := v.console()
	if !strings.Contains(c, "unable to open an initial console") {
		t.Errorf("the kernel did open an initial console: the test did not make the case it means to:\n%s", c)
	}
	if !strings.Contains(c, "msg=ready c=veil-agent") {
		t.Errorf("the agent's log is not on the console:\n%s", c)
	}
}
