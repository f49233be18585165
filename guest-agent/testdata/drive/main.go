// Command drive exercises a booted veil-agent by hand over its unix-socket
// backed virtio-serial port. It is a development aid, not a test: the VM
// tests live in tools/vmtest.
//
//	go run ./guest-agent/testdata/drive -sock /tmp/agent.sock -share /tmp/share
package main

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	v2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/veil-runtime/veil/guest-agent/api"
)

//go:embed config.json
var template []byte

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "drive:", err)
		os.Exit(1)
	}
}

func spec(args ...string) []byte {
	var s specs.Spec
	if err := json.Unmarshal(template, &s); err != nil {
		panic(err)
	}
	s.Process.Args = args
	s.Process.Terminal = false
	s.Root.Readonly = false
	b, _ := json.Marshal(&s)
	return b
}

func step(name string, err error) {
	if err != nil {
		fmt.Printf("FAIL %-40s %v\n", name, err)
		return
	}
	fmt.Printf("ok   %s\n", name)
}

func readAll(ctx context.Context, read func(context.Context, *api.ReadStreamRequest) (*api.ReadStreamResponse, error), cid, eid string) string {
	var b bytes.Buffer
	for {
		r, err := read(ctx, &api.ReadStreamRequest{ContainerId: cid, ExecId: eid, Len: 4096})
		if err != nil {
			return b.String() + " <" + err.Error() + ">"
		}
		if len(r.Data) == 0 {
			return b.String()
		}
		b.Write(r.Data)
	}
}

// runToEnd reads both streams and waits, as the shim would.
func runToEnd(ctx context.Context, c *api.Client, cid, eid string) (string, string, uint32, error) {
	var out, errs string
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); out = readAll(ctx, c.Process.ReadStdout, cid, eid) }()
	go func() { defer wg.Done(); errs = readAll(ctx, c.Process.ReadStderr, cid, eid) }()
	w, err := c.Process.WaitProcess(ctx, &api.WaitProcessRequest{ContainerId: cid, ExecId: eid})
	wg.Wait()
	if err != nil {
		return out, errs, 0, err
	}
	return out, errs, w.ExitStatus, nil
}

func run() error {
	sock := flag.String("sock", "/tmp/agent.sock", "unix socket of the agent's virtio-serial port")
	share := flag.String("share", "/tmp/share", "host directory shared as veilshare")
	reconnects := flag.Int("reconnect", 0, "first connect, check and disconnect this many times")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dial := func() (*api.Client, error) {
		var conn net.Conn
		var err error
		for i := 0; i < 100; i++ {
			if conn, err = net.Dial("unix", *sock); err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			return nil, err
		}
		c := api.NewClient(conn)
		t0 := time.Now()
		if _, err := c.Sandbox.Check(ctx, &api.CheckRequest{}); err != nil {
			return nil, fmt.Errorf("check: %w", err)
		}
		fmt.Printf("agent answered after %v\n", time.Since(t0))
		return c, nil
	}
	for i := 0; i < *reconnects; i++ {
		c, err := dial()
		if err != nil {
			return fmt.Errorf("connection %d: %w", i+1, err)
		}
		_ = c.Close()
	}
	c, err := dial()
	if err != nil {
		return err
	}
	defer c.Close()
	d, err := c.Sandbox.GuestDetails(ctx, &api.GuestDetailsRequest{})
	if err != nil {
		return err
	}
	fmt.Printf("details: %v\n", d)

	_, err = c.Sandbox.CreateSandbox(ctx, &api.CreateSandboxRequest{
		SandboxId: "pod", Hostname: "podhost", Dns: []string{"nameserver 10.0.0.1"}, SandboxPidns: true,
		Storages: []*api.Storage{{Driver: "9p", Source: "veilshare", MountPoint: "/run/veil/shared"}},
	})
	step("CreateSandbox", err)

	rootfs := func(id string) *api.Storage { return &api.Storage{Driver: "shared", Source: id + "/rootfs"} }
	for _, id := range []string{"c1", "c2", "c3"} {
		if _, err := os.Stat(filepath.Join(*share, id, "rootfs")); err != nil {
			return fmt.Errorf("prepare %s/%s/rootfs first: %w", *share, id, err)
		}
	}

	// c1: run to completion, output and exit status.
	r, err := c.Container.CreateContainer(ctx, &api.CreateContainerRequest{ContainerId: "c1", Rootfs: rootfs("c1"),
		Spec: spec("/bin/sh", "-c", "echo hello; echo oops >&2; hostname; cat /etc/resolv.conf; cat /proc/self/cgroup; i=0; while [ $i -lt 3000 ]; do echo line$i; i=$((i+1)); done; exit 3")})
	step("CreateContainer c1", err)
	if err == nil {
		fmt.Println("   c1 pid", r.Pid)
		_, err = c.Container.StartContainer(ctx, &api.StartContainerRequest{ContainerId: "c1"})
		step("StartContainer c1", err)
		out, errs, status, err := runToEnd(ctx, c, "c1", "")
		step("Wait c1", err)
		fmt.Printf("   status=%d stderr=%q stdout: %d bytes, head %q tail %q\n", status, errs, len(out), head(out), tail(out))
		st, err := c.Container.StateContainer(ctx, &api.StateContainerRequest{ContainerId: "c1"})
		step("State c1", err)
		fmt.Printf("   %v\n", st)
		_, err = c.Process.ExecProcess(ctx, &api.ExecProcessRequest{ContainerId: "c1", ExecId: "x", Process: procJSON("true")})
		fmt.Printf("   exec into stopped: %v\n", err)
		_, err = c.Container.RemoveContainer(ctx, &api.RemoveContainerRequest{ContainerId: "c1"})
		step("Remove c1", err)
	}

	// c2: long-running with stdin; exec, tty, pids, stats, pause, update, signal.
	_, err = c.Container.CreateContainer(ctx, &api.CreateContainerRequest{ContainerId: "c2", Rootfs: rootfs("c2"), Stdin: true,
		Spec: spec("/bin/sh", "-c", "read line; echo got:$line; exec sleep 1000")})
	step("CreateContainer c2", err)
	_, err = c.Container.StartContainer(ctx, &api.StartContainerRequest{ContainerId: "c2"})
	step("StartContainer c2", err)
	_, err = c.Process.WriteStdin(ctx, &api.WriteStdinRequest{ContainerId: "c2", Data: []byte("ping\n")})
	step("WriteStdin c2", err)
	o, err := c.Process.ReadStdout(ctx, &api.ReadStreamRequest{ContainerId: "c2", Len: 100})
	step("ReadStdout c2", err)
	fmt.Printf("   %q\n", o.GetData())
	e, err := c.Process.ExecProcess(ctx, &api.ExecProcessRequest{ContainerId: "c2", ExecId: "e1", Process: procJSON("/bin/sh", "-c", "echo from exec; ps; ls /proc | head -3; exit 5")})
	step("Exec e1", err)
	if err == nil {
		out, errs, status, err := runToEnd(ctx, c, "c2", "e1")
		step("Wait e1", err)
		fmt.Printf("   pid=%d status=%d out=%q err=%q\n", e.Pid, status, out, errs)
		_, err = c.Process.DeleteProcess(ctx, &api.DeleteProcessRequest{ContainerId: "c2", ExecId: "e1"})
		step("DeleteProcess e1", err)
	}
	_, err = c.Process.ExecProcess(ctx, &api.ExecProcessRequest{ContainerId: "c2", ExecId: "tty", Terminal: true, Stdin: true, Process: procJSON("/bin/sh")})
	step("Exec tty", err)
	if err == nil {
		_, err = c.Process.ResizeTTY(ctx, &api.ResizeTTYRequest{ContainerId: "c2", ExecId: "tty", Width: 100, Height: 40})
		step("ResizeTTY", err)
		_, err = c.Process.WriteStdin(ctx, &api.WriteStdinRequest{ContainerId: "c2", ExecId: "tty", Data: []byte("stty size; tty; exit 9\n")})
		step("WriteStdin tty", err)
		out, errs, status, err := runToEnd(ctx, c, "c2", "tty")
		step("Wait tty", err)
		fmt.Printf("   status=%d out=%q err=%q\n", status, out, errs)
	}
	pids, err := c.Container.ListPids(ctx, &api.ListPidsRequest{ContainerId: "c2"})
	step("ListPids", err)
	fmt.Printf("   %v\n", pids)
	stats, err := c.Container.StatsContainer(ctx, &api.StatsContainerRequest{ContainerId: "c2"})
	step("Stats", err)
	if err == nil {
		var m v2.Metrics
		err = typeurl.UnmarshalTo(stats.Metrics, &m)
		fmt.Printf("   type=%s unmarshal=%v pids=%d mem=%d cpu_usec=%d\n", stats.Metrics.TypeUrl, err, m.GetPids().GetCurrent(), m.GetMemory().GetUsage(), m.GetCPU().GetUsageUsec())
	}
	_, err = c.Container.PauseContainer(ctx, &api.PauseContainerRequest{ContainerId: "c2"})
	step("Pause", err)
	st, _ := c.Container.StateContainer(ctx, &api.StateContainerRequest{ContainerId: "c2"})
	fmt.Printf("   %v\n", st.GetStatus())
	_, err = c.Container.ResumeContainer(ctx, &api.ResumeContainerRequest{ContainerId: "c2"})
	step("Resume", err)
	_, err = c.Container.UpdateContainer(ctx, &api.UpdateContainerRequest{ContainerId: "c2", Resources: []byte(`{"pids":{"limit":50}}`)})
	step("Update", err)
	_, err = c.Process.SignalProcess(ctx, &api.SignalProcessRequest{ContainerId: "c2", Signal: 15, All: true})
	step("Signal all TERM", err)
	w, err := c.Process.WaitProcess(ctx, &api.WaitProcessRequest{ContainerId: "c2"})
	step("Wait c2", err)
	fmt.Printf("   status=%d\n", w.GetExitStatus())
	_, err = c.Container.RemoveContainer(ctx, &api.RemoveContainerRequest{ContainerId: "c2"})
	step("Remove c2", err)

	// c3: OOM.
	oom := make(chan string, 1)
	go func() {
		r, err := c.Container.GetOOMEvent(ctx, &api.GetOOMEventRequest{})
		if err != nil {
			oom <- "error " + err.Error()
			return
		}
		oom <- r.ContainerId
	}()
	var s specs.Spec
	_ = json.Unmarshal(spec("/bin/sh", "-c", `x=$(head -c 100000000 /dev/zero | tr '\0' a); echo survived`), &s)
	limit := int64(16 << 20)
	swap := limit
	s.Linux.Resources = &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit, Swap: &swap}}
	sb, _ := json.Marshal(&s)
	_, err = c.Container.CreateContainer(ctx, &api.CreateContainerRequest{ContainerId: "c3", Rootfs: rootfs("c3"), Spec: sb})
	step("CreateContainer c3 (16MiB)", err)
	_, err = c.Container.StartContainer(ctx, &api.StartContainerRequest{ContainerId: "c3"})
	step("Start c3", err)
	out, errs, status, err := runToEnd(ctx, c, "c3", "")
	step("Wait c3", err)
	fmt.Printf("   status=%d out=%q err=%q\n", status, out, errs)
	select {
	case id := <-oom:
		fmt.Printf("   OOM event: %s\n", id)
	case <-time.After(10 * time.Second):
		fmt.Println("FAIL no OOM event")
	}
	_, err = c.Container.RemoveContainer(ctx, &api.RemoveContainerRequest{ContainerId: "c3", Force: true})
	step("Remove c3", err)

	// Bad requests.
	_, err = c.Container.CreateContainer(ctx, &api.CreateContainerRequest{ContainerId: "bad", Rootfs: &api.Storage{Driver: "shared", Source: "../../etc"}, Spec: spec("true")})
	fmt.Printf("   escape: %v\n", err)
	_, err = c.Container.StateContainer(ctx, &api.StateContainerRequest{ContainerId: "nope"})
	fmt.Printf("   unknown: %v\n", err)

	_, err = c.Sandbox.DestroySandbox(ctx, &api.DestroySandboxRequest{SandboxId: "pod"})
	step("DestroySandbox", err)
	t1 := time.Now()
	_, err = c.Sandbox.Shutdown(ctx, &api.ShutdownRequest{})
	step("Shutdown", err)
	fmt.Printf("   shutdown replied after %v\n", time.Since(t1))
	return nil
}

func procJSON(args ...string) []byte {
	b, _ := json.Marshal(specs.Process{Args: args, Cwd: "/", Env: []string{"PATH=/bin:/usr/bin", "TERM=xterm"}})
	return b
}

func head(s string) string {
	if len(s) > 300 {
		return s[:300]
	}
	return s
}

func tail(s string) string {
	if len(s) > 40 {
		return s[len(s)-40:]
	}
	return s
}
