package shim

import (
	"reflect"
	"slices"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestGuestSpecMounts(t *testing.T) {
	in := &specs.Spec{
		Root: &specs.Root{Path: "/run/containerd/x/rootfs", Readonly: true},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/etc/hosts", Type: "bind", Source: "/var/lib/cri/sb/hosts", Options: []string{"rbind", "rprivate", "rw"}},
			{Destination: "/data", Source: "/srv/data", Options: []string{"rbind", "ro"}},
			{Destination: "/dev/shm", Type: "bind", Source: "/run/cri/sb/shm", Options: []string{"rbind", "ro", "nosuid"}},
			{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid"}},
		},
	}
	out, binds := guestSpec("c1", in, nil)

	wantBinds := []hostBind{
		{Index: 1, Source: "/var/lib/cri/sb/hosts", Target: "c1/mounts/1-etc-hosts"},
		{Index: 2, Source: "/srv/data", Target: "c1/mounts/2-data", ReadOnly: true},
		{Index: 3, Source: "/run/cri/sb/shm", Target: "c1/mounts/3-dev-shm", ReadOnly: true},
	}
	if !reflect.DeepEqual(binds, wantBinds) {
		t.Errorf("binds = %+v\nwant %+v", binds, wantBinds)
	}
	wantSources := []string{"proc", "/run/veil/shared/c1/mounts/1-etc-hosts", "/run/veil/shared/c1/mounts/2-data", "/run/veil/shared/c1/mounts/3-dev-shm", "tmpfs"}
	for i, m := range out.Mounts {
		if m.Source != wantSources[i] {
			t.Errorf("mount %s source = %q, want %q", m.Destination, m.Source, wantSources[i])
		}
		if !reflect.DeepEqual(m.Options, in.Mounts[i].Options) || m.Destination != in.Mounts[i].Destination || m.Type != in.Mounts[i].Type {
			t.Errorf("mount %d changed beyond its source: %+v", i, m)
		}
	}
	if in.Mounts[1].Source != "/var/lib/cri/sb/hosts" {
		t.Error("guestSpec modified its input")
	}
	if out.Root.Path != "rootfs" || !out.Root.Readonly {
		t.Errorf("root = %+v", out.Root)
	}
}

func TestGuestSpecNamespacesAndHooks(t *testing.T) {
	in := &specs.Spec{
		Process: &specs.Process{User: specs.User{UID: 1000, GID: 1000}, Env: []string{"A=b"}, Cwd: "/w",
			Rlimits: []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 10, Soft: 10}}},
		Hooks: &specs.Hooks{CreateRuntime: []specs.Hook{{Path: "/usr/bin/nvidia-hook"}}},
		Linux: &specs.Linux{
			CgroupsPath: "kubepods-besteffort.slice:cri-containerd:c1",
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace},
				{Type: specs.IPCNamespace, Path: "/proc/42/ns/ipc"},
				{Type: specs.NetworkNamespace, Path: "/var/run/netns/cni-1"},
				{Type: specs.MountNamespace},
			},
		},
	}
	out, _ := guestSpec("c1", in, nil)
	// The pod's namespaces (by path) reach the agent, which maps them; the
	// network namespace does not: the VM's network is the pod's.
	wantNS := []specs.LinuxNamespace{{Type: specs.PIDNamespace}, {Type: specs.IPCNamespace, Path: "/proc/42/ns/ipc"}, {Type: specs.MountNamespace}}
	if !reflect.DeepEqual(out.Linux.Namespaces, wantNS) {
		t.Errorf("namespaces = %+v", out.Linux.Namespaces)
	}
	if out.Hooks != nil {
		t.Errorf("hooks kept: %+v", out.Hooks)
	}
	if !reflect.DeepEqual(out.Process, in.Process) {
		t.Errorf("process changed: %+v", out.Process)
	}
	if len(in.Linux.Namespaces) != 4 {
		t.Error("guestSpec modified its input namespaces")
	}
}

// Regression (critest "should support non-recursive readonly mounts"): a
// read-only hostPath with a tmpfs mounted inside was read-only all the way
// down in the guest, because the guest sees the share as one filesystem.
func TestNonRecursiveReadOnlyWithSubmounts(t *testing.T) {
	in := &specs.Spec{Mounts: []specs.Mount{
		{Destination: "/mnt", Type: "bind", Source: "/host/with-tmpfs", Options: []string{"rbind", "ro"}},
		{Destination: "/rro", Type: "bind", Source: "/host/with-tmpfs", Options: []string{"rbind", "rro"}},
		{Destination: "/plain", Type: "bind", Source: "/host/plain", Options: []string{"rbind", "ro"}},
	}}
	sub := func(p string) bool { return p == "/host/with-tmpfs" }
	out, binds := guestSpec("c1", in, sub)
	if slices.Contains(out.Mounts[0].Options, "ro") {
		t.Errorf("non-recursive ro over submounts kept ro in the guest: %v", out.Mounts[0].Options)
	}
	if !slices.Contains(out.Mounts[1].Options, "rro") || !slices.Contains(out.Mounts[2].Options, "ro") {
		t.Errorf("recursive or plain read-only mounts lost their option: %v %v", out.Mounts[1].Options, out.Mounts[2].Options)
	}
	for _, b := range binds {
		if !b.ReadOnly {
			t.Errorf("host bind of %s not read-only", b.Source)
		}
		// Only "rro" makes the host's submounts read-only too.
		if want := b.Index == 1; b.RecursiveReadOnly != want {
			t.Errorf("host bind %d of %s: RecursiveReadOnly = %v, want %v", b.Index, b.Source, b.RecursiveReadOnly, want)
		}
	}
	if !slices.Contains(in.Mounts[0].Options, "ro") {
		t.Error("guestSpec modified its input options")
	}
}
