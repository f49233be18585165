//go:build vm

package vmtest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/veil-runtime/veil/guest-agent/api"
)

// applets the test containers use, linked to busybox in their rootfs.
var applets = []string{"sh", "echo", "cat", "uname", "sleep", "head", "sha256sum", "stty", "tty", "true", "ls", "hostname", "nc"}

// makeRootfs builds <share>/<cid>/rootfs: busybox-static and symlinks to it.
// It is removed when the test ends.
func makeRootfs(t *testing.T, v *vm, cid string) {
	t.Helper()
	root := filepath.Join(v.share, cid, "rootfs")
	for _, d := range []string{"bin", "proc", "dev", "sys", "tmp", "etc", "root"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	src, err := os.Open("/bin/busybox")
	if err != nil {
		t.Fatalf("opening busybox (apt-get install busybox-static): %v", err)
	}
	defer src.Close()
	dst, err := os.OpenFile(filepath.Join(root, "bin", "busybox"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	for _, a := range applets {
		if err := os.Symlink("busybox", filepath.Join(root, "bin", a)); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { os.RemoveAll(filepath.Join(v.share, cid)) })
}

var defaultCaps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
	"CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
	"CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

func process(args ...string) *specs.Process {
	return &specs.Process{
		Args: args,
		Cwd:  "/",
		Env:  []string{"PATH=/bin", "HOME=/root", "TERM=xterm"},
		Capabilities: &specs.LinuxCapabilities{
			Bounding: defaultCaps, Effective: defaultCaps, Permitted: defaultCaps,
		},
		NoNewPrivileges: true,
	}
}

// containerSpec is a minimal OCI runtime spec running args, as containerd
// would hand the shim for a busybox image.
func containerSpec(args ...string) []byte {
	s := specs.Spec{
		Version:  specs.Version,
		Process:  process(args...),
		Root:     &specs.Root{Path: "rootfs"},
		Hostname: "vmtest",
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
		},
		Linux: &specs.Linux{
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace}, {Type: specs.IPCNamespace},
				{Type: specs.UTSNamespace}, {Type: specs.MountNamespace},
			},
			MaskedPaths:   []string{"/proc/kcore", "/proc/keys", "/proc/timer_list"},
			ReadonlyPaths: []string{"/proc/sys", "/proc/sysrq-trigger"},
		},
	}
	b, err := json.Marshal(&s)
	if err != nil {
		panic(err)
	}
	return b
}

func processJSON(args ...string) []byte {
	b, err := json.Marshal(process(args...))
	if err != nil {
		panic(err)
	}
	return b
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// stream is the output of one stream read to EOF.
type stream struct {
	data []byte
	err  error
}

// drain reads a process's stdout (or stderr) until EOF in the background.
func drain(ctx context.Context, c *api.Client, cid, eid string, stderr bool) <-chan stream {
	ch := make(chan stream, 1)
	read := c.Process.ReadStdout
	if stderr {
		read = c.Process.ReadStderr
	}
	go func() {
		var b bytes.Buffer
		for {
			r, err := read(ctx, &api.ReadStreamRequest{ContainerId: cid, ExecId: eid, Len: 256 << 10})
			if err != nil {
				ch <- stream{b.Bytes(), err}
				return
			}
			if len(r.Data) == 0 {
				ch <- stream{b.Bytes(), nil}
				return
			}
			b.Write(r.Data)
		}
	}()
	return ch
}

// result is a finished process: its output and exit status.
type result struct {
	stdout, stderr []byte
	status         uint32
}

// finish reads both streams to EOF and waits for the process, as the shim does.
func finish(t *testing.T, ctx context.Context, c *api.Client, cid, eid string, tty bool) result {
	t.Helper()
	out := drain(ctx, c, cid, eid, false)
	var errc <-chan stream
	if !tty {
		errc = drain(ctx, c, cid, eid, true)
	}
	w, err := c.Process.WaitProcess(ctx, &api.WaitProcessRequest{ContainerId: cid, ExecId: eid})
	if err != nil {
		t.Fatalf("WaitProcess(%s/%s): %v", cid, eid, err)
	}
	r := result{status: w.ExitStatus}
	o := <-out
	if o.err != nil {
		t.Fatalf("reading stdout of %s/%s: %v", cid, eid, o.err)
	}
	r.stdout = o.data
	if errc != nil {
		e := <-errc
		if e.err != nil {
			t.Fatalf("reading stderr of %s/%s: %v", cid, eid, e.err)
		}
		r.stderr = e.data
	}
	return r
}

// createContainer creates (not starts) a container running args on a fresh
// busybox rootfs; it is force-removed when the test ends.
func createContainer(t *testing.T, ctx context.Context, v *vm, cid string, req *api.CreateContainerRequest, args ...string) {
	t.Helper()
	makeRootfs(t, v, cid)
	if req == nil {
		req = &api.CreateContainerRequest{}
	}
	req.ContainerId = cid
	req.Spec = containerSpec(args...)
	req.Rootfs = &api.Storage{Driver: "shared", Source: cid + "/rootfs"}
	if _, err := v.client.Container.CreateContainer(ctx, req); err != nil {
		t.Fatalf("CreateContainer %s: %v", cid, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := v.client.Container.RemoveContainer(ctx, &api.RemoveContainerRequest{ContainerId: cid, Force: true}); err != nil {
			t.Errorf("RemoveContainer %s: %v", cid, err)
		}
	})
}

func startContainer(t *testing.T, ctx context.Context, v *vm, cid string) {
	t.Helper()
	if _, err := v.client.Container.StartContainer(ctx, &api.StartContainerRequest{ContainerId: cid}); err != nil {
		t.Fatalf("StartContainer %s: %v", cid, err)
	}
}
