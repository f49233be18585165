package shim

import (
	"path"
	"reflect"
	"slices"
	"testing"

	"github.com/moby/sys/mountinfo"
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
			Sysctl: map[string]string{"net.ipv4.ip_unprivileged_port_start": "0", "kernel.shmmax": "1"},
		},
	}
	out, _ := guestSpec("c1", in, nil)
	// net.* sysctls are the VM's network namespace's, which the pod set;
	// the others are for the container's own namespaces.
	if want := map[string]string{"kernel.shmmax": "1"}; !reflect.DeepEqual(out.Linux.Sysctl, want) {
		t.Errorf("sysctls = %v, want %v", out.Linux.Sysctl, want)
	}
	if len(in.Linux.Sysctl) != 2 {
		t.Error("guestSpec modified its input sysctls")
	}
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

// Regression (critest "should support non-recursive readonly mounts" and
// "recursive readonly mounts"): a read-only hostPath with a tmpfs mounted
// inside was read-only all the way down in the guest (one 9p filesystem),
// and the shim's recursive host bind kept the tmpfs's mount point busy, so
// its owner could not remove it (rmdir: EBUSY) while the container ran.
// Now the source is bound flat, the tmpfs beside it, and the guest binds
// the tmpfs back in: writable under "ro", read-only under "rro".
func TestReadOnlyBindsWithSubmounts(t *testing.T) {
	in := &specs.Spec{Mounts: []specs.Mount{
		{Destination: "/mnt", Type: "bind", Source: "/host/with-tmpfs", Options: []string{"rbind", "rprivate", "ro"}},
		{Destination: "/rro", Type: "bind", Source: "/host/with-tmpfs", Options: []string{"rbind", "rprivate", "rro"}},
		{Destination: "/plain", Type: "bind", Source: "/host/plain", Options: []string{"rbind", "ro"}},
		{Destination: "/rw", Type: "bind", Source: "/host/nested", Options: []string{"rbind", "rw"}},
	}}
	sub := func(p string) []string {
		switch p {
		case "/host/with-tmpfs":
			return []string{"tmpfs"}
		case "/host/nested":
			return []string{"a", "a/b"}
		}
		return nil
	}
	out, binds := guestSpec("c1", in, sub)

	wantBinds := []hostBind{
		{Index: 0, Source: "/host/with-tmpfs", Target: "c1/mounts/0-mnt", ReadOnly: true, Flat: true},
		{Index: 4, Source: "/host/with-tmpfs/tmpfs", Target: "c1/mounts/0-mnt.sub0", Flat: true},
		{Index: 1, Source: "/host/with-tmpfs", Target: "c1/mounts/1-rro", ReadOnly: true, RecursiveReadOnly: true, Flat: true},
		{Index: 5, Source: "/host/with-tmpfs/tmpfs", Target: "c1/mounts/1-rro.sub0", ReadOnly: true, Flat: true},
		{Index: 2, Source: "/host/plain", Target: "c1/mounts/2-plain", ReadOnly: true},
		{Index: 3, Source: "/host/nested", Target: "c1/mounts/3-rw", Flat: true},
		{Index: 6, Source: "/host/nested/a", Target: "c1/mounts/3-rw.sub0", Flat: true},
		{Index: 7, Source: "/host/nested/a/b", Target: "c1/mounts/3-rw.sub1", Flat: true},
	}
	if !reflect.DeepEqual(binds, wantBinds) {
		t.Errorf("binds =\n%+v\nwant\n%+v", binds, wantBinds)
	}
	wantMounts := []specs.Mount{
		{Destination: "/mnt", Type: "bind", Source: "/run/veil/shared/c1/mounts/0-mnt", Options: []string{"rbind", "rprivate", "ro"}},
		{Destination: "/rro", Type: "bind", Source: "/run/veil/shared/c1/mounts/1-rro", Options: []string{"rbind", "rprivate", "rro"}},
		{Destination: "/plain", Type: "bind", Source: "/run/veil/shared/c1/mounts/2-plain", Options: []string{"rbind", "ro"}},
		{Destination: "/rw", Type: "bind", Source: "/run/veil/shared/c1/mounts/3-rw", Options: []string{"rbind", "rw"}},
		{Destination: "/mnt/tmpfs", Type: "bind", Source: "/run/veil/shared/c1/mounts/0-mnt.sub0", Options: []string{"rbind", "rprivate", "rw"}},
		{Destination: "/rro/tmpfs", Type: "bind", Source: "/run/veil/shared/c1/mounts/1-rro.sub0", Options: []string{"rbind", "rprivate", "ro"}},
		{Destination: "/rw/a", Type: "bind", Source: "/run/veil/shared/c1/mounts/3-rw.sub0", Options: []string{"rbind", "rw"}},
		{Destination: "/rw/a/b", Type: "bind", Source: "/run/veil/shared/c1/mounts/3-rw.sub1", Options: []string{"rbind", "rw"}},
	}
	if !reflect.DeepEqual(out.Mounts, wantMounts) {
		t.Errorf("guest mounts =\n%+v\nwant\n%+v", out.Mounts, wantMounts)
	}
	for _, b := range binds {
		if out.Mounts[b.Index].Source != path.Join(guestSharedDir, b.Target) {
			t.Errorf("bind %+v: guest mount %d has source %s", b, b.Index, out.Mounts[b.Index].Source)
		}
	}
	if in.Mounts[0].Source != "/host/with-tmpfs" || len(in.Mounts) != 4 {
		t.Error("guestSpec modified its input")
	}
}

func TestSubmountsOf(t *testing.T) {
	mounts := []*mountinfo.Info{
		{Mountpoint: "/host/dir"},
		{Mountpoint: "/host/dir/tmpfs"},
		{Mountpoint: "/host/dir/tmpfs/inner"},
		{Mountpoint: "/host/dir/tmpfs"}, // mounted over: listed once
		{Mountpoint: "/host/dirty"},     // a sibling with the same prefix
	}
	got := submountsOf("/host/dir", mounts)
	want := []string{"tmpfs", "tmpfs/inner"}
	if !slices.Equal(got, want) {
		t.Errorf("submountsOf = %q, want %q", got, want)
	}
	if got := submountsOf("/host/dir", mounts[:1]); got != nil {
		t.Errorf("no submounts: got %q", got)
	}
}
