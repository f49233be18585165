//go:build vm

package vmtest

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/veil-runtime/veil/guest-agent/api"
	"github.com/veil-runtime/veil/hypervisor"
)

// TestPodSysctlsInGuest: the pod's sysctls (CreateSandbox, from the CRI
// sandbox's linux.sysctl) are what a container of the pod reads, in the
// IPC namespace the CRI asks it to share (given by path, the guest's) and
// the pod's network (the guest's); a sysctl that is not namespaced is
// refused before the sandbox exists. critest's "should support safe/unsafe
// sysctls" check the same two IPC ones through containerd.
func TestPodSysctlsInGuest(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	v, err := boot(ctx, "sysctl", false)
	if err != nil {
		t.Fatalf("booting: %v", err)
	}
	t.Cleanup(func() {
		if err := v.shutdown(); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	sandbox := &api.CreateSandboxRequest{
		SandboxId: "sysctl",
		Storages:  []*api.Storage{{Driver: "9p", Source: hypervisor.ShareTag, MountPoint: "/run/veil/shared"}},
		Sysctls:   map[string]string{"kernel.core_pattern": "|/tmp/evil %p"},
	}
	_, err = v.client.Sandbox.CreateSandbox(ctx, sandbox)
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "kernel.core_pattern") {
		t.Fatalf("CreateSandbox with kernel.core_pattern: %v, want InvalidArgument naming it", err)
	}
	want := map[string]string{
		"kernel.shm_rmid_forced":              "1",
		"fs.mqueue.msg_max":                   "100",
		"net.ipv4.ping_group_range":           "0\t2147483647",
		"net.ipv4.ip_unprivileged_port_start": "0",
	}
	sandbox.Sysctls = map[string]string{
		"kernel.shm_rmid_forced":              "1",
		"fs.mqueue.msg_max":                   "100",
		"net.ipv4.ping_group_range":           "0 2147483647",
		"net.ipv4.ip_unprivileged_port_start": "0",
	}
	if _, err := v.client.Sandbox.CreateSandbox(ctx, sandbox); err != nil {
		t.Fatalf("CreateSandbox with the pod's sysctls: %v", err)
	}

	// The CRI's container: IPC and network namespaces given by path (the
	// pause container's), which the guest maps to its own.
	var s specs.Spec
	if err := json.Unmarshal(containerSpec("cat", "/proc/sys/kernel/shm_rmid_forced", "/proc/sys/fs/mqueue/msg_max",
		"/proc/sys/net/ipv4/ping_group_range", "/proc/sys/net/ipv4/ip_unprivileged_port_start"), &s); err != nil {
		t.Fatal(err)
	}
	for i, ns := range s.Linux.Namespaces {
		if ns.Type == specs.IPCNamespace {
			s.Linux.Namespaces[i].Path = "/proc/4242/ns/ipc"
		}
	}
	s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: "/var/run/netns/cni-pod"})
	spec, err := json.Marshal(&s)
	if err != nil {
		t.Fatal(err)
	}
	makeRootfs(t, v, "reader")
	if _, err := v.client.Container.CreateContainer(ctx, &api.CreateContainerRequest{
		ContainerId: "reader", Spec: spec, Rootfs: &api.Storage{Driver: "shared", Source: "reader/rootfs"},
	}); err != nil {
		t.Fatalf("CreateContainer: %v", err)
	}
	startContainer(t, ctx, v, "reader")
	r := finish(t, ctx, v.client, "reader", "", false)
	got := strings.Split(strings.TrimSpace(string(r.stdout)), "\n")
	if r.status != 0 || len(got) != 4 {
		t.Fatalf("reader: status %d, stdout %q, stderr %q", r.status, r.stdout, r.stderr)
	}
	for i, name := range []string{"kernel.shm_rmid_forced", "fs.mqueue.msg_max", "net.ipv4.ping_group_range", "net.ipv4.ip_unprivileged_port_start"} {
		if got[i] != want[name] {
			t.Errorf("container reads %s = %q, want %q", name, got[i], want[name])
		}
	}
	if _, err := v.client.Container.RemoveContainer(ctx, &api.RemoveContainerRequest{ContainerId: "reader"}); err != nil {
		t.Errorf("RemoveContainer: %v", err)
	}
}
