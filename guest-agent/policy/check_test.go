package policy

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/veil-runtime/veil/guest-agent/api"
	"github.com/veil-runtime/veil/guest-agent/storage"
	"github.com/veil-runtime/veil/hypervisor"
)

const appImage = "registry.example/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// boundPolicy binds one container, "app", as `veil policy generate` would.
func boundPolicy() Policy {
	return Policy{Containers: []Container{{
		Name:  "app",
		Image: appImage,
		Args:  []string{"/app", "--listen", ":8080"},
		Env:   []string{"PATH=/usr/local/bin:/usr/bin:/bin", "MODE=prod"},
		EnvPatterns: []EnvPattern{
			{Name: `[A-Z][A-Z0-9_]*_SERVICE_(HOST|PORT(_[A-Z0-9_]+)?)`, Value: `[0-9a-fA-F.:]*`},
			{Name: `HOSTNAME`, Value: `[a-z0-9.-]+`},
		},
		WorkingDir: "/srv",
		User:       User{UID: 1000, GID: 1000, AdditionalGIDs: []uint32{2000}},
		Seccomp:    SeccompRuntimeDefault,
		Sysctls:    map[string]string{"net.ipv4.ping_group_range": "0 2147483647"},
		Mounts: []Mount{
			{Destination: "/etc/config", Kind: MountCopy, ReadOnly: true},
			{Destination: "/cache", Kind: MountEmptyDir},
		},
		Exec: []Exec{{Args: []string{"/bin/cat", "/tmp/ready"}}},
	}}}
}

// criSpec is the spec containerd's CRI writes for "app" (as the shim
// rewrites it for a confidential pod: binds of guest volumes, no hooks,
// no network namespace).
func criSpec() *specs.Spec {
	return &specs.Spec{
		Version: specs.Version,
		Process: &specs.Process{
			User: specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{1000, 2000}},
			Args: []string{"/app", "--listen", ":8080"},
			Env: []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOSTNAME=app-7d4b9", "MODE=prod",
				"KUBERNETES_SERVICE_HOST=10.96.0.1", "KUBERNETES_SERVICE_PORT=443", "KUBERNETES_SERVICE_PORT_HTTPS=443"},
			Cwd:          "/srv",
			Capabilities: &specs.LinuxCapabilities{Bounding: DefaultCapabilities, Effective: DefaultCapabilities, Permitted: DefaultCapabilities},
			OOMScoreAdj:  ptr(1000),
		},
		Root:     &specs.Root{Path: "rootfs"},
		Hostname: "app-7d4b9",
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
			{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
			{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"nosuid", "noexec", "nodev", "relatime", "ro"}},
			{Destination: "/etc/config", Type: "bind", Source: "/run/veil/volumes/c1-6", Options: []string{"rbind", "rprivate", "ro"}},
			{Destination: "/cache", Type: "bind", Source: "/run/veil/volumes/emptydir-cache/dir", Options: []string{"rbind", "rprivate", "rw"}},
			{Destination: "/etc/hosts", Type: "bind", Source: "/run/veil/volumes/c1-8/hosts", Options: []string{"rbind", "rprivate", "rw"}},
			{Destination: "/dev/termination-log", Type: "bind", Source: "/run/veil/volumes/c1-9/termination-log", Options: []string{"rbind", "rprivate", "rw"}},
			{Destination: "/etc/hostname", Type: "bind", Source: "/run/veil/volumes/c1-10/hostname", Options: []string{"rbind", "rprivate", "rw"}},
			{Destination: "/etc/resolv.conf", Type: "bind", Source: "/run/veil/volumes/c1-11/resolv.conf", Options: []string{"rbind", "rprivate", "rw"}},
			{Destination: "/dev/shm", Type: "bind", Source: "/run/veil/volumes/shm/dir", Options: []string{"rbind", "rprivate", "rw"}},
		},
		Annotations: map[string]string{
			"io.kubernetes.cri.container-type": "container",
			ContainerNameAnnotation:            "app",
			"io.kubernetes.cri.image-name":     appImage,
			"io.kubernetes.cri.sandbox-id":     "5f0c",
		},
		Linux: &specs.Linux{
			Resources: &specs.LinuxResources{
				Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
				Memory:  &specs.LinuxMemory{Limit: ptr(int64(128 << 20))},
			},
			CgroupsPath: "kubepods-besteffort-pod1.slice:cri-containerd:c1",
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace}, {Type: specs.IPCNamespace, Path: "/proc/42/ns/ipc"},
				{Type: specs.UTSNamespace, Path: "/proc/42/ns/uts"}, {Type: specs.MountNamespace},
			},
			Sysctl:        map[string]string{"net.ipv4.ping_group_range": "0 2147483647"},
			MaskedPaths:   append(slices.Clone(RequiredMaskedPaths), "/sys/devices/virtual/powercap"),
			ReadonlyPaths: slices.Clone(RequiredReadonlyPaths),
			Seccomp: &specs.LinuxSeccomp{
				DefaultAction: specs.ActErrno,
				Architectures: []specs.Arch{specs.ArchX86_64},
				Syscalls:      []specs.LinuxSyscall{{Names: []string{"read", "write"}, Action: specs.ActAllow}},
			},
		},
	}
}

func ptr[T any](v T) *T { return &v }

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// createReq is the shim's CreateContainer for c1 with a guest-pulled
// rootfs.
func createReq(t testing.TB, s *specs.Spec) *api.CreateContainerRequest {
	return &api.CreateContainerRequest{ContainerId: "c1", Spec: mustJSON(t, s), Rootfs: &api.Storage{Driver: "bind", Source: "/run/veil/images/c1/rootfs"}}
}

// pulled is the state after a PullImage of appImage for c1.
func pulled() State { return State{Pulled: map[string]string{"c1": appImage}} }

func TestShareFactsAreTheHypervisors(t *testing.T) {
	if storage.ShareTag != hypervisor.ShareTag {
		t.Fatalf("the agent mounts share %q, the hypervisor exports %q", storage.ShareTag, hypervisor.ShareTag)
	}
}

// check runs one decision and asserts the rule (or none) and that the
// denial names it and the method.
func check(t *testing.T, p Policy, method string, req any, st State, wantRule, wantWhy string) {
	t.Helper()
	d := p.CheckState(method, req, st)
	if wantRule == "" {
		if d != nil {
			t.Fatalf("denied: %v", d)
		}
		return
	}
	if d == nil || d.Rule != wantRule {
		t.Fatalf("denial %v, want rule %s", d, wantRule)
	}
	if !strings.Contains(d.Error(), "rule "+wantRule) || !strings.Contains(d.Error(), method) || d.Why == "" {
		t.Fatalf("denial %q does not name the rule, the method and why", d)
	}
	if !strings.Contains(d.Why, wantWhy) {
		t.Fatalf("denial %q does not say %q", d, wantWhy)
	}
}

func TestCheck(t *testing.T) {
	share := &api.Storage{Driver: "9p", Source: "veilshare", MountPoint: "/run/veil/shared", Fstype: "9p", Options: []string{"trans=virtio", "version=9p2000.L", "msize=262144", "cache=none"}}
	rootfs := &api.Storage{Driver: "shared", Source: "c1/rootfs"}
	all := Policy{AllowExec: true, AllowReadOutput: true, AllowWriteStdin: true, AllowPortForward: true, AllowHostShare: true, AllowHostMounts: true, AllowPrivileged: true, AllowHooks: true, AllowUnboundContainers: true}
	shareOnly := Policy{AllowHostShare: true, AllowUnboundContainers: true}
	unbound := func(f func(*specs.Spec)) []byte {
		s := criSpec()
		delete(s.Annotations, ContainerNameAnnotation)
		if f != nil {
			f(s)
		}
		return mustJSON(t, s)
	}
	sharedReq := func(f func(*specs.Spec)) *api.CreateContainerRequest {
		return &api.CreateContainerRequest{ContainerId: "c1", Rootfs: rootfs, Spec: unbound(f)}
	}
	tests := []struct {
		name     string
		p        Policy
		method   string
		req      any
		wantRule string // "" allowed
		wantWhy  string
	}{
		{"exec denied", Default(), MethodExecProcess, &api.ExecProcessRequest{}, "allow_exec", ""},
		{"stdout denied", Default(), MethodReadStdout, &api.ReadStreamRequest{}, "allow_read_output", ""},
		{"stderr denied", Default(), MethodReadStderr, &api.ReadStreamRequest{}, "allow_read_output", ""},
		{"stdout allowed", all, MethodReadStdout, &api.ReadStreamRequest{}, "", ""},
		{"stdin denied", Default(), MethodWriteStdin, &api.WriteStdinRequest{}, "allow_write_stdin", ""},
		{"port-forward dial denied", Default(), MethodDialPort, &api.DialPortRequest{Port: 8080}, "allow_port_forward", ""},
		{"port-forward read denied", Default(), MethodReadPort, &api.ReadPortRequest{StreamId: 1}, "allow_port_forward", ""},
		{"port-forward write denied", Default(), MethodWritePort, &api.WritePortRequest{StreamId: 1, Data: []byte("x")}, "allow_port_forward", ""},
		{"port-forward dial allowed", Policy{AllowPortForward: true}, MethodDialPort, &api.DialPortRequest{Port: 8080}, "", ""},
		{"wait allowed", Default(), MethodWaitProcess, &api.WaitProcessRequest{}, "", ""},
		{"network allowed: the host carries every packet anyway", Default(), MethodUpdateRoutes, &api.UpdateRoutesRequest{}, "", ""},
		{"unknown method", all, "/veil.agent.v1.Sandbox/Exploit", &api.CheckRequest{}, "unknown-method", "not in the agent's method table"},
		{"unknown service", all, "/veil.agent.v2.Debug/Shell", nil, "unknown-method", ""},

		{"sandbox with the veil share denied by default", Default(), MethodCreateSandbox, &api.CreateSandboxRequest{Storages: []*api.Storage{share}}, "allow_host_share", ""},
		{"sandbox with the veil share allowed", shareOnly, MethodCreateSandbox, &api.CreateSandboxRequest{Storages: []*api.Storage{share}}, "", ""},
		{"sandbox share without fstype and options", shareOnly, MethodCreateSandbox, &api.CreateSandboxRequest{Storages: []*api.Storage{{Driver: "9p", Source: "veilshare"}}}, "", ""},
		{"sandbox without storages", Default(), MethodCreateSandbox, &api.CreateSandboxRequest{Hostname: "p"}, "", ""},
		{"sandbox with sysctls", all, MethodCreateSandbox, &api.CreateSandboxRequest{Sysctls: map[string]string{"net.ipv4.ip_forward": "1", "kernel.shm_rmid_forced": "1"}}, "sysctls", "[kernel.shm_rmid_forced net.ipv4.ip_forward]: expected none"},
		{"sandbox tmpfs", all, MethodCreateSandbox, &api.CreateSandboxRequest{Storages: []*api.Storage{{Driver: "tmpfs", Source: "tmpfs", MountPoint: "/run/x"}}}, "storages", `driver "tmpfs"`},
		{"sandbox block device over /usr/bin", all, MethodCreateSandbox, &api.CreateSandboxRequest{Storages: []*api.Storage{{Driver: "block", Source: "/dev/vdb", MountPoint: "/usr/bin", Fstype: "ext4"}}}, "storages", `driver "block"`},
		{"sandbox unknown driver with a 9p fstype", all, MethodCreateSandbox, &api.CreateSandboxRequest{Storages: []*api.Storage{{Driver: "virtiofs", Source: "veilshare", MountPoint: "/run/veil/shared", Fstype: "9p"}}}, "storages", `driver "virtiofs"`},
		{"sandbox share over runc", all, MethodCreateSandbox, &api.CreateSandboxRequest{Storages: []*api.Storage{{Driver: "9p", Source: "veilshare", MountPoint: "/usr/bin"}}}, "storages", `mount point "/usr/bin"`},
		{"sandbox other 9p tag", all, MethodCreateSandbox, &api.CreateSandboxRequest{Storages: []*api.Storage{{Driver: "9p", Source: "hostroot"}}}, "storages", `mount tag "hostroot"`},
		{"sandbox share as ext4", all, MethodCreateSandbox, &api.CreateSandboxRequest{Storages: []*api.Storage{{Driver: "9p", Source: "veilshare", Fstype: "ext4"}}}, "storages", `fstype "ext4"`},
		{"sandbox share with another option", all, MethodCreateSandbox, &api.CreateSandboxRequest{Storages: []*api.Storage{{Driver: "9p", Source: "veilshare", Options: []string{"trans=virtio", "dev"}}}}, "storages", `option "dev"`},

		{"container rootfs from host denied", Policy{AllowUnboundContainers: true}, MethodCreateContainer, sharedReq(nil), "allow_host_share", ""},
		{"container rootfs from host allowed", shareOnly, MethodCreateContainer, sharedReq(nil), "", ""},
		{"container rootfs of another container's share", shareOnly, MethodCreateContainer, &api.CreateContainerRequest{ContainerId: "c1", Rootfs: &api.Storage{Driver: "shared", Source: "c2/rootfs"}, Spec: unbound(nil)}, "rootfs", `"c2/rootfs"`},
		{"container rootfs of another container's image", all, MethodCreateContainer, &api.CreateContainerRequest{ContainerId: "c1", Rootfs: &api.Storage{Driver: "bind", Source: "/run/veil/images/c2/rootfs"}, Spec: unbound(nil)}, "rootfs", ""},
		{"container rootfs on a guest volume", all, MethodCreateContainer, &api.CreateContainerRequest{ContainerId: "c1", Rootfs: &api.Storage{Driver: "bind", Source: "/run/veil/volumes/c1/v"}, Spec: unbound(nil)}, "rootfs", ""},
		{"container rootfs escaping the image root", all, MethodCreateContainer, &api.CreateContainerRequest{ContainerId: "c1", Rootfs: &api.Storage{Driver: "bind", Source: "/run/veil/images/c1/rootfs/../../../../"}, Spec: unbound(nil)}, "rootfs", ""},
		{"container rootfs with a mount point of the host's choosing", all, MethodCreateContainer, &api.CreateContainerRequest{ContainerId: "c1", Rootfs: &api.Storage{Driver: "shared", Source: "c1/rootfs", MountPoint: "/usr/bin"}, Spec: unbound(nil)}, "rootfs", "mount_point"},
		{"container rootfs as a block device", all, MethodCreateContainer, &api.CreateContainerRequest{ContainerId: "c1", Rootfs: &api.Storage{Driver: "block", Source: "/dev/vdb"}, Spec: unbound(nil)}, "rootfs", `driver "block"`},
		{"container without rootfs", all, MethodCreateContainer, &api.CreateContainerRequest{ContainerId: "c1", Spec: unbound(nil)}, "rootfs", ""},
		{"container ID climbing out", all, MethodCreateContainer, &api.CreateContainerRequest{ContainerId: "..", Rootfs: rootfs, Spec: unbound(nil)}, "containers", ""},
		{"container storage from the host", all, MethodCreateContainer, &api.CreateContainerRequest{ContainerId: "c1", Rootfs: rootfs, Storages: []*api.Storage{{Driver: "shared", Source: "c1/mounts/0"}}, Spec: unbound(nil)}, "storages", ""},
		// Regression: TestCheck asserted this was allowed.
		{"bind storage of a guest volume to an arbitrary mount point", all, MethodCreateContainer, &api.CreateContainerRequest{ContainerId: "c1", Rootfs: rootfs, Storages: []*api.Storage{{Driver: "bind", Source: "/run/veil/volumes/v", MountPoint: "/usr/bin/runc"}}, Spec: unbound(nil)}, "storages", "/usr/bin/runc"},
		{"spec that does not parse", all, MethodCreateContainer, &api.CreateContainerRequest{ContainerId: "c1", Rootfs: rootfs, Spec: []byte("{")}, "spec", ""},

		{"unbound container without allow_unbound_containers", Policy{AllowHostShare: true}, MethodCreateContainer, sharedReq(nil), "containers", "bound: none"},
		{"unbound: bind of the host share denied", shareOnly, MethodCreateContainer, sharedReq(func(s *specs.Spec) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/data", Type: "bind", Source: "/run/veil/shared/c1/mounts/3-data", Options: []string{"rbind"}})
		}), "allow_host_mounts", ""},
		{"unbound: bind of the host share allowed", Policy{AllowHostShare: true, AllowHostMounts: true, AllowUnboundContainers: true}, MethodCreateContainer, sharedReq(func(s *specs.Spec) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/data", Type: "bind", Source: "/run/veil/shared/c1/mounts/3-data", Options: []string{"rbind"}})
		}), "", ""},
		{"unbound: bind of a guest path", all, MethodCreateContainer, sharedReq(func(s *specs.Spec) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/x", Type: "bind", Source: "/etc", Options: []string{"rbind"}})
		}), "mounts", "neither a guest volume"},
		{"unbound: bind climbing out of the guest volumes", all, MethodCreateContainer, sharedReq(func(s *specs.Spec) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/x", Type: "bind", Source: "/run/veil/volumes/../attest", Options: []string{"rbind"}})
		}), "mounts", ""},
		{"unbound: bind of the volume root itself", all, MethodCreateContainer, sharedReq(func(s *specs.Spec) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/x", Type: "none", Source: "/run/veil/volumes", Options: []string{"bind"}})
		}), "mounts", ""},
		{"unbound: bind of another container's image", all, MethodCreateContainer, sharedReq(func(s *specs.Spec) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/x", Type: "bind", Source: "/run/veil/images/c2/rootfs", Options: []string{"rbind"}})
		}), "mounts", ""},
		{"unbound: devtmpfs", all, MethodCreateContainer, sharedReq(func(s *specs.Spec) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/dev", Type: "devtmpfs", Source: "devtmpfs"})
		}), "mounts", `type "devtmpfs"`},
		{"unbound: a disk", all, MethodCreateContainer, sharedReq(func(s *specs.Spec) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/usr/bin", Type: "ext4", Source: "/dev/vda"})
		}), "mounts", `type "ext4"`},
		{"unbound: proc elsewhere", all, MethodCreateContainer, sharedReq(func(s *specs.Spec) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/host-proc", Type: "proc", Source: "proc"})
		}), "mounts", ""},
		{"unbound: devpts of the guest", all, MethodCreateContainer, sharedReq(func(s *specs.Spec) {
			s.Mounts[2].Options = []string{"nosuid"}
		}), "mounts", "newinstance"},
		{"unbound: writable sysfs", shareOnly, MethodCreateContainer, sharedReq(func(s *specs.Spec) { s.Mounts[4].Options = []string{"nosuid"} }), "allow_privileged", "sysfs at /sys is writable"},
		{"unbound: writable cgroup", shareOnly, MethodCreateContainer, sharedReq(func(s *specs.Spec) { s.Mounts[5].Options = []string{"nosuid"} }), "allow_privileged", ""},
		{"unbound: writable sysfs when privileged", all, MethodCreateContainer, sharedReq(func(s *specs.Spec) { s.Mounts[4].Options = []string{"nosuid"} }), "", ""},
		{"unbound: CAP_SYS_ADMIN", shareOnly, MethodCreateContainer, sharedReq(func(s *specs.Spec) {
			s.Process.Capabilities.Bounding = append(slices.Clone(DefaultCapabilities), "CAP_SYS_ADMIN")
		}), "allow_privileged", "CAP_SYS_ADMIN"},
		{"unbound: CAP_SYS_MODULE", shareOnly, MethodCreateContainer, sharedReq(func(s *specs.Spec) {
			s.Process.Capabilities.Ambient = []string{"CAP_SYS_MODULE"}
		}), "allow_privileged", "CAP_SYS_MODULE in the ambient set"},
		{"unbound: linux.devices", shareOnly, MethodCreateContainer, sharedReq(func(s *specs.Spec) {
			s.Linux.Devices = []specs.LinuxDevice{{Path: "/dev/vda", Type: "b", Major: 254}}
		}), "allow_privileged", "/dev/vda"},
		{"unbound: device rule", shareOnly, MethodCreateContainer, sharedReq(func(s *specs.Spec) {
			s.Linux.Resources.Devices = append(s.Linux.Resources.Devices, specs.LinuxDeviceCgroup{Allow: true, Type: "b", Major: ptr(int64(254)), Access: "rw"})
		}), "allow_privileged", "254:*"},
		{"unbound: block device from the host", shareOnly, MethodCreateContainer, &api.CreateContainerRequest{ContainerId: "c1", Rootfs: rootfs, Spec: unbound(nil), Devices: []*api.Device{{ContainerPath: "/dev/xvda", Serial: "x"}}}, "allow_privileged", ""},
		// crictl sends no masked paths (containerd masks only what the
		// client asks): the spec the e2e tier's unbound containers get.
		{"unbound: no masked or read-only paths", shareOnly, MethodCreateContainer, sharedReq(func(s *specs.Spec) { s.Linux.MaskedPaths, s.Linux.ReadonlyPaths = nil, nil }), "", ""},
		{"unbound: the agent's PID namespace", shareOnly, MethodCreateContainer, sharedReq(func(s *specs.Spec) { s.Linux.Namespaces = s.Linux.Namespaces[1:] }), "allow_privileged", "no pid namespace"},
		{"unbound: no linux section", shareOnly, MethodCreateContainer, sharedReq(func(s *specs.Spec) { s.Linux = nil }), "allow_privileged", ""},
		{"unbound: hooks", shareOnly, MethodCreateContainer, sharedReq(func(s *specs.Spec) {
			s.Hooks = &specs.Hooks{CreateRuntime: []specs.Hook{{Path: "/bin/evil"}}}
		}), "allow_hooks", ""},
		{"unbound: seccomp notifier", shareOnly, MethodCreateContainer, sharedReq(func(s *specs.Spec) {
			s.Linux.Seccomp.Syscalls = append(s.Linux.Seccomp.Syscalls, specs.LinuxSyscall{Names: []string{"openat"}, Action: specs.ActNotify})
		}), "seccomp", "SCMP_ACT_NOTIFY"},
		{"unbound: seccomp listener", shareOnly, MethodCreateContainer, sharedReq(func(s *specs.Spec) { s.Linux.Seccomp.ListenerPath = "/run/x.sock" }), "seccomp", "listenerPath"},
		{"unbound: everything allowed", all, MethodCreateContainer, sharedReq(func(s *specs.Spec) {
			s.Hooks = &specs.Hooks{CreateRuntime: []specs.Hook{{Path: "/bin/x"}}}
			s.Process.Capabilities.Bounding = append(s.Process.Capabilities.Bounding, "CAP_SYS_ADMIN")
		}), "", ""},
		{"unbound: guest volume binds need no rule", shareOnly, MethodCreateContainer, sharedReq(nil), "", ""},

		{"debug console denied", Default(), MethodDebugConsole, nil, "allow_debug_console", ""},
		{"debug console allowed", Policy{AllowDebugConsole: true}, MethodDebugConsole, nil, "", ""},
		{"volume copies allowed by default", Default(), MethodCopyFile, &api.CopyFileRequest{Volume: "v", Path: "hosts", Mode: 0o644}, "", ""},
		{"volume copies denied", Policy{DenyVolumeCopies: true}, MethodCopyFile, &api.CopyFileRequest{Volume: "v", Path: "hosts"}, "deny_volume_copies", ""},
		{"volume removals denied", Policy{DenyVolumeCopies: true}, MethodRemovePath, &api.RemovePathRequest{Volume: "v", Path: "x"}, "deny_volume_copies", ""},
		{"setuid copied file", Default(), MethodCopyFile, &api.CopyFileRequest{Volume: "v", Path: "su", Mode: 0o4755}, "volume-copy", "04755"},
		{"emptyDir directory created by the host", Default(), MethodCopyFile, &api.CopyFileRequest{Volume: "emptydir-data", Path: "dir", Kind: api.CopyFileRequest_DIR, Mode: 0o777}, "", ""},
		{"shm directory created by the host", Default(), MethodCopyFile, &api.CopyFileRequest{Volume: "shm", Path: "dir", Kind: api.CopyFileRequest_DIR, Mode: 0o1777}, "", ""},
		{"file planted in an emptyDir", Default(), MethodCopyFile, &api.CopyFileRequest{Volume: "emptydir-data", Path: "dir/run.sh", Kind: api.CopyFileRequest_FILE, Mode: 0o755}, "volume-copy", "guest-memory volume"},
		{"symlink planted as an emptyDir's directory", Default(), MethodCopyFile, &api.CopyFileRequest{Volume: "emptydir-data", Path: "dir", Kind: api.CopyFileRequest_SYMLINK}, "volume-copy", "emptydir-data"},
		{"file planted in the pod's shm", Default(), MethodCopyFile, &api.CopyFileRequest{Volume: "shm", Path: "dir/x", Kind: api.CopyFileRequest_FILE}, "volume-copy", "shm"},
		{"removal inside an emptyDir", Default(), MethodRemovePath, &api.RemovePathRequest{Volume: "emptydir-data", Path: "dir/state.db"}, "volume-copy", "guest-memory volume"},
		{"removal of a copied file", Default(), MethodRemovePath, &api.RemovePathRequest{Volume: "c1-3", Path: "..data"}, "", ""},
		{"setgid copied file", Default(), MethodCopyFile, &api.CopyFileRequest{Volume: "v", Path: "sg", Mode: 0o2755}, "volume-copy", ""},
		{"setgid directory (fsGroup)", Default(), MethodCopyFile, &api.CopyFileRequest{Volume: "v", Path: "d", Kind: api.CopyFileRequest_DIR, Mode: 0o2777}, "", ""},

		{"update: memory limit", Default(), MethodUpdateContainer, &api.UpdateContainerRequest{ContainerId: "c1", Resources: []byte(`{"memory":{"limit":1048576}}`)}, "", ""},
		{"update: a device rule", Default(), MethodUpdateContainer, &api.UpdateContainerRequest{ContainerId: "c1", Resources: []byte(`{"devices":[{"allow":true,"type":"b","major":254,"access":"rwm"}]}`)}, "allow_privileged", "254:*"},
		{"update: a device rule, privileged", Policy{AllowPrivileged: true}, MethodUpdateContainer, &api.UpdateContainerRequest{ContainerId: "c1", Resources: []byte(`{"devices":[{"allow":true,"type":"b","major":254,"access":"rwm"}]}`)}, "", ""},
		{"update: resources that do not parse", Default(), MethodUpdateContainer, &api.UpdateContainerRequest{ContainerId: "c1", Resources: []byte(`[`)}, "resources", ""},

		{"pull of an image no container binds", boundPolicy(), MethodPullImage, &api.PullImageRequest{Image: "registry.example/evil:latest", ContainerId: "c1"}, "image", "app=" + appImage},
		{"pull of the bound image", boundPolicy(), MethodPullImage, &api.PullImageRequest{Image: appImage, ContainerId: "c1"}, "", ""},
		{"pull of the bound digest with a tag", boundPolicy(), MethodPullImage, &api.PullImageRequest{Image: "registry.example/app:1.0@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", ContainerId: "c1"}, "", ""},
		{"pull of the bound repository's tag", boundPolicy(), MethodPullImage, &api.PullImageRequest{Image: "registry.example/app:latest", ContainerId: "c1"}, "image", ""},
		{"pull of any image when unbound containers are allowed", Policy{AllowUnboundContainers: true}, MethodPullImage, &api.PullImageRequest{Image: "registry.example/any", ContainerId: "c1"}, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			check(t, tt.p, tt.method, tt.req, State{}, tt.wantRule, tt.wantWhy)
		})
	}
}

// TestBoundContainer compares CreateContainer with the binding: the CRI's
// spec of the bound container passes; each field the host changes is
// refused naming containers[app].<field>, the expected and the seen value.
func TestBoundContainer(t *testing.T) {
	tests := []struct {
		name     string
		spec     func(*specs.Spec)
		pol      func(*Policy)
		req      func(*api.CreateContainerRequest)
		st       *State
		wantRule string
		wantWhy  string
	}{
		{name: "the CRI's spec of the bound container"},
		{name: "stricter: no capabilities", spec: func(s *specs.Spec) { s.Process.Capabilities = nil }},
		{name: "stricter: fewer capabilities", spec: func(s *specs.Spec) { s.Process.Capabilities.Bounding = []string{"CAP_CHOWN"} }},
		{name: "stricter: unconfined binding, a default profile", pol: func(p *Policy) { p.Containers[0].Seccomp = SeccompUnconfined }},
		{name: "unconfined binding, no profile", pol: func(p *Policy) { p.Containers[0].Seccomp = SeccompUnconfined }, spec: func(s *specs.Spec) { s.Linux.Seccomp = nil }},
		{name: "no annotation (ctr)", spec: func(s *specs.Spec) { delete(s.Annotations, ContainerNameAnnotation) }, wantRule: "containers", wantWhy: `"" names no container of the policy (bound: app)`},
		{name: "another name", spec: func(s *specs.Spec) { s.Annotations[ContainerNameAnnotation] = "debug" }, wantRule: "containers", wantWhy: `"debug"`},
		{name: "image not pulled", st: &State{}, wantRule: "image", wantWhy: "not pulled in the guest"},
		{name: "another image pulled for it", st: &State{Pulled: map[string]string{"c1": "registry.example/evil@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}}, wantRule: "containers[app].image", wantWhy: "registry.example/evil"},
		{name: "changed args", spec: func(s *specs.Spec) { s.Process.Args = []string{"/bin/sh", "-c", "cat /secrets/*"} }, wantRule: "containers[app].args", wantWhy: `expected ["/app" "--listen" ":8080"], seen ["/bin/sh" "-c" "cat /secrets/*"]`},
		{name: "extra arg", spec: func(s *specs.Spec) { s.Process.Args = append(s.Process.Args, "--debug") }, wantRule: "containers[app].args"},
		{name: "LD_PRELOAD", spec: func(s *specs.Spec) { s.Process.Env = append(s.Process.Env, "LD_PRELOAD=/etc/config/evil.so") }, wantRule: "containers[app].env", wantWhy: `"LD_PRELOAD=/etc/config/evil.so" is neither a bound entry`},
		{name: "changed env value", spec: func(s *specs.Spec) { s.Process.Env[2] = "MODE=debug" }, wantRule: "containers[app].env", wantWhy: `"MODE=debug"`},
		{name: "missing env entry", spec: func(s *specs.Spec) { s.Process.Env = slices.Delete(s.Process.Env, 2, 3) }, wantRule: "containers[app].env", wantWhy: `expected "MODE=prod", seen no MODE`},
		{name: "duplicate env name", spec: func(s *specs.Spec) { s.Process.Env = append([]string{"MODE=prod"}, s.Process.Env...) }, wantRule: "containers[app].env", wantWhy: "MODE is set twice"},
		{name: "pattern value that does not match", spec: func(s *specs.Spec) { s.Process.Env[3] = "KUBERNETES_SERVICE_HOST=$(curl evil)" }, wantRule: "containers[app].env"},
		{name: "pattern is anchored", spec: func(s *specs.Spec) { s.Process.Env = append(s.Process.Env, "X_SERVICE_HOST_AND_MORE=1") }, wantRule: "containers[app].env"},
		{name: "cwd", spec: func(s *specs.Spec) { s.Process.Cwd = "/tmp" }, wantRule: "containers[app].working_dir", wantWhy: `expected "/srv", seen "/tmp"`},
		{name: "root user", spec: func(s *specs.Spec) { s.Process.User.UID = 0 }, wantRule: "containers[app].user.uid", wantWhy: "expected 1000, seen 0"},
		{name: "gid", spec: func(s *specs.Spec) { s.Process.User.GID = 0 }, wantRule: "containers[app].user.gid"},
		{name: "extra group", spec: func(s *specs.Spec) { s.Process.User.AdditionalGids = append(s.Process.User.AdditionalGids, 0) }, wantRule: "containers[app].user.additional_gids"},
		{name: "CAP_SYS_MODULE", spec: func(s *specs.Spec) {
			s.Process.Capabilities.Bounding = append(slices.Clone(DefaultCapabilities), "CAP_SYS_MODULE")
		}, wantRule: "containers[app].capabilities", wantWhy: "CAP_SYS_MODULE in the bounding set"},
		{name: "CAP_SYS_PTRACE effective", spec: func(s *specs.Spec) { s.Process.Capabilities.Effective = []string{"CAP_SYS_PTRACE"} }, wantRule: "containers[app].capabilities"},
		{name: "bound capabilities", pol: func(p *Policy) { p.Containers[0].Capabilities = []string{"CAP_NET_BIND_SERVICE"} }, wantRule: "containers[app].capabilities", wantWhy: "CAP_CHOWN"},
		{name: "bound capabilities held", pol: func(p *Policy) { p.Containers[0].Capabilities = []string{"CAP_NET_BIND_SERVICE"} }, spec: func(s *specs.Spec) {
			s.Process.Capabilities = &specs.LinuxCapabilities{Bounding: []string{"CAP_NET_BIND_SERVICE"}}
		}},
		{name: "privileged binding", pol: func(p *Policy) { p.Containers[0].Privileged = true }, spec: func(s *specs.Spec) {
			s.Process.Capabilities.Bounding = append(s.Process.Capabilities.Bounding, "CAP_SYS_ADMIN")
			s.Linux.MaskedPaths, s.Linux.Devices = nil, []specs.LinuxDevice{{Path: "/dev/vda"}}
			s.Mounts[4].Options = nil
		}},
		{name: "devices", spec: func(s *specs.Spec) { s.Linux.Devices = []specs.LinuxDevice{{Path: "/dev/vda", Type: "b", Major: 254}} }, wantRule: "containers[app].privileged"},
		{name: "host block device", req: func(r *api.CreateContainerRequest) { r.Devices = []*api.Device{{ContainerPath: "/dev/xvda"}} }, wantRule: "containers[app].privileged"},
		{name: "no_new_privileges bound", pol: func(p *Policy) { p.Containers[0].NoNewPrivileges = true }, wantRule: "containers[app].no_new_privileges"},
		{name: "read-only root bound", pol: func(p *Policy) { p.Containers[0].ReadOnlyRootFilesystem = true }, wantRule: "containers[app].read_only_root_filesystem"},
		{name: "read-only root not bound", spec: func(s *specs.Spec) { s.Root.Readonly = true }, wantRule: "containers[app].read_only_root_filesystem"},
		{name: "seccomp dropped", spec: func(s *specs.Spec) { s.Linux.Seccomp = nil }, wantRule: "containers[app].seccomp", wantWhy: "none (unconfined)"},
		{name: "seccomp allowing by default", spec: func(s *specs.Spec) { s.Linux.Seccomp.DefaultAction = specs.ActAllow }, wantRule: "containers[app].seccomp", wantWhy: "SCMP_ACT_ALLOW"},
		{name: "seccomp notifier", spec: func(s *specs.Spec) {
			s.Linux.Seccomp.Syscalls = append(s.Linux.Seccomp.Syscalls, specs.LinuxSyscall{Names: []string{"openat"}, Action: specs.ActNotify})
		}, wantRule: "containers[app].seccomp"},
		{name: "sysctl changed", spec: func(s *specs.Spec) { s.Linux.Sysctl = map[string]string{"kernel.shm_rmid_forced": "1"} }, wantRule: "containers[app].sysctls"},
		{name: "sysctls dropped", spec: func(s *specs.Spec) { s.Linux.Sysctl = nil }, wantRule: "containers[app].sysctls"},
		{name: "extra volume", spec: func(s *specs.Spec) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/usr/lib", Type: "bind", Source: "/run/veil/volumes/c1-12", Options: []string{"rbind"}})
		}, wantRule: "containers[app].mounts", wantWhy: "/usr/lib: no mount of the policy"},
		{name: "config volume writable", spec: func(s *specs.Spec) { s.Mounts[6].Options = []string{"rbind", "rw"} }, wantRule: "containers[app].mounts", wantWhy: "expected read-only"},
		{name: "config volume from an emptyDir", spec: func(s *specs.Spec) { s.Mounts[6].Source = "/run/veil/volumes/emptydir-cache/dir" }, wantRule: "containers[app].mounts", wantWhy: "expected kind copy, seen emptyDir"},
		{name: "emptyDir from a copy", spec: func(s *specs.Spec) { s.Mounts[7].Source = "/run/veil/volumes/c1-7" }, wantRule: "containers[app].mounts", wantWhy: "expected kind emptyDir, seen copy"},
		{name: "emptyDir from the host", pol: func(p *Policy) { p.AllowHostMounts = true }, spec: func(s *specs.Spec) { s.Mounts[7].Source = "/run/veil/shared/c1/mounts/7-cache" }, wantRule: "containers[app].mounts", wantWhy: "seen host"},
		{name: "host mount without allow_host_mounts", pol: func(p *Policy) { p.Containers[0].Mounts[1].Kind = MountHost }, spec: func(s *specs.Spec) { s.Mounts[7].Source = "/run/veil/shared/c1/mounts/7-cache" }, wantRule: "allow_host_mounts"},
		{name: "host mount bound and allowed", pol: func(p *Policy) { p.Containers[0].Mounts[1].Kind = MountHost; p.AllowHostMounts = true }, spec: func(s *specs.Spec) { s.Mounts[7].Source = "/run/veil/shared/c1/mounts/7-cache" }},
		{name: "/etc/hosts from the host", pol: func(p *Policy) { p.AllowHostMounts = true }, spec: func(s *specs.Spec) { s.Mounts[8].Source = "/run/veil/shared/c1/mounts/8-hosts" }, wantRule: "containers[app].mounts", wantWhy: "/etc/hosts is the CRI's"},
		{name: "/dev/shm from a copy", spec: func(s *specs.Spec) { s.Mounts[12].Source = "/run/veil/volumes/c1-12/shm" }, wantRule: "containers[app].mounts"},
		{name: "guest volume over runc", spec: func(s *specs.Spec) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/usr/bin/runc", Type: "bind", Source: "/run/veil/volumes/c1-6/runc", Options: []string{"bind"}})
		}, wantRule: "containers[app].mounts", wantWhy: "/usr/bin/runc"},
		{name: "devtmpfs", spec: func(s *specs.Spec) {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: "/dev", Type: "devtmpfs", Source: "devtmpfs"})
		}, wantRule: "containers[app].mounts", wantWhy: `type "devtmpfs"`},
		{name: "writable sysfs", spec: func(s *specs.Spec) { s.Mounts[4].Options = []string{"nosuid"} }, wantRule: "containers[app].privileged"},
		{name: "hooks", spec: func(s *specs.Spec) { s.Hooks = &specs.Hooks{StartContainer: []specs.Hook{{Path: "/bin/x"}}} }, wantRule: "allow_hooks"},
		{name: "/proc/kcore unmasked", spec: func(s *specs.Spec) {
			s.Linux.MaskedPaths = slices.DeleteFunc(s.Linux.MaskedPaths, func(p string) bool { return p == "/proc/kcore" })
		}, wantRule: "containers[app].privileged", wantWhy: "/proc/kcore is not in linux.maskedPaths"},
		{name: "/proc/sys writable", spec: func(s *specs.Spec) { s.Linux.ReadonlyPaths = nil }, wantRule: "containers[app].privileged", wantWhy: "/proc/bus"},
		{name: "the agent's mount namespace", spec: func(s *specs.Spec) { s.Linux.Namespaces = s.Linux.Namespaces[:3] }, wantRule: "containers[app].privileged", wantWhy: "no mount namespace"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := boundPolicy()
			if tt.pol != nil {
				tt.pol(&p)
			}
			s := criSpec()
			if tt.spec != nil {
				tt.spec(s)
			}
			r := createReq(t, s)
			if tt.req != nil {
				tt.req(r)
			}
			st := pulled()
			if tt.st != nil {
				st = *tt.st
			}
			check(t, p, MethodCreateContainer, r, st, tt.wantRule, tt.wantWhy)
		})
	}
}

// TestBoundExec: exec of a listed command (or any with allow_exec) in a
// created container, within the container's env, user and capabilities.
func TestBoundExec(t *testing.T) {
	created := State{Created: map[string]string{"c1": "app", "c2": ""}}
	proc := func(f func(*specs.Process)) *api.ExecProcessRequest {
		pr := *criSpec().Process
		pr.Args = []string{"/bin/cat", "/tmp/ready"}
		if f != nil {
			f(&pr)
		}
		return &api.ExecProcessRequest{ContainerId: "c1", ExecId: "e1", Process: mustJSON(t, &pr)}
	}
	allowExec := boundPolicy()
	allowExec.AllowExec = true
	tests := []struct {
		name     string
		p        Policy
		req      *api.ExecProcessRequest
		st       State
		wantRule string
		wantWhy  string
	}{
		{"a listed command", boundPolicy(), proc(nil), created, "", ""},
		{"a listed command, fewer env entries", boundPolicy(), proc(func(p *specs.Process) { p.Env = p.Env[:1] }), created, "", ""},
		{"another command", boundPolicy(), proc(func(p *specs.Process) { p.Args = []string{"/bin/sh"} }), created, "allow_exec", `args ["/bin/sh"] are not one of the commands`},
		{"a listed command with another argument", boundPolicy(), proc(func(p *specs.Process) { p.Args = append(p.Args, "/etc/shadow") }), created, "allow_exec", ""},
		{"any command with allow_exec", allowExec, proc(func(p *specs.Process) { p.Args = []string{"/bin/sh"} }), created, "", ""},
		{"a container never created", allowExec, proc(nil), State{}, "exec", "not created"},
		{"LD_PRELOAD", boundPolicy(), proc(func(p *specs.Process) { p.Env = append(p.Env, "LD_PRELOAD=/x.so") }), created, "containers[app].env", "LD_PRELOAD"},
		{"as root", boundPolicy(), proc(func(p *specs.Process) { p.User.UID = 0 }), created, "containers[app].user.uid", ""},
		{"CAP_SYS_PTRACE", allowExec, proc(func(p *specs.Process) { p.Capabilities.Bounding = []string{"CAP_SYS_PTRACE"} }), created, "containers[app].capabilities", ""},
		{"unbound container: CAP_SYS_ADMIN", Policy{AllowExec: true, AllowUnboundContainers: true}, &api.ExecProcessRequest{ContainerId: "c2", Process: []byte(`{"args":["sh"],"cwd":"/","capabilities":{"bounding":["CAP_SYS_ADMIN"]}}`)}, created, "allow_privileged", ""},
		{"unbound container: allowed", Policy{AllowExec: true, AllowUnboundContainers: true}, &api.ExecProcessRequest{ContainerId: "c2", Process: []byte(`{"args":["sh"],"cwd":"/","env":["LD_PRELOAD=x"]}`)}, created, "", ""},
		{"process that does not parse", allowExec, &api.ExecProcessRequest{ContainerId: "c1", Process: []byte("{")}, created, "exec", "does not parse"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			check(t, tt.p, MethodExecProcess, tt.req, tt.st, tt.wantRule, tt.wantWhy)
		})
	}
}

func TestSameImage(t *testing.T) {
	const d = "@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	tests := []struct {
		want, seen string
		same       bool
	}{
		{"busybox", "docker.io/library/busybox:latest", true},
		{"busybox:1.36", "index.docker.io/library/busybox:1.36", true},
		{"busybox:1.36", "busybox:1.37", false},
		{"busybox" + d, "docker.io/library/busybox" + d, true},
		{"busybox" + d, "busybox:1.36" + d, true},
		{"busybox" + d, "busybox:1.36", false},
		{"busybox:1.36", "busybox:1.36" + d, false},
		{"busybox" + d, "evil/busybox" + d, false},
		{"", "", false},
		{"not a reference!", "not a reference!", true},
		{"not a reference!", "busybox", false},
	}
	for _, tt := range tests {
		if got := SameImage(tt.want, tt.seen); got != tt.same {
			t.Errorf("SameImage(%q, %q) = %v, want %v", tt.want, tt.seen, got, tt.same)
		}
	}
}

// TestCheckContainer is the entry `veil policy check` uses: a spec and the
// image pulled for it.
func TestCheckContainer(t *testing.T) {
	p := boundPolicy()
	if d := p.CheckContainer("c1", appImage, criSpec()); d != nil {
		t.Fatalf("the bound container: %v", d)
	}
	s := criSpec()
	s.Process.Args = []string{"/bin/sh"}
	if d := p.CheckContainer("c1", appImage, s); d == nil || d.Rule != "containers[app].args" {
		t.Fatalf("changed args: %v", d)
	}
	if d := p.CheckContainer("c1", "registry.example/app:latest", criSpec()); d == nil || d.Rule != "containers[app].image" {
		t.Fatalf("another image: %v", d)
	}
	if d := p.CheckContainer("c1", "", criSpec()); d == nil || d.Rule != "allow_host_share" {
		t.Fatalf("a rootfs from the host: %v", d)
	}
}
