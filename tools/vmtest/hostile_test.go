//go:build vm

package vmtest

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/veil-runtime/veil/attestation/initdata"
	"github.com/veil-runtime/veil/guest-agent/api"
	"github.com/veil-runtime/veil/guest-agent/policy"
	"github.com/veil-runtime/veil/hypervisor"
)

// hostileImage is the image the init-data binds for "app". The VM tier
// has no registry the guest can reach, so the rootfs comes through the
// pod's share (allow_host_share, a "shared" rootfs: the host's snapshot,
// whose image the policy cannot pin); the image binding is still what
// PullImage is held to.
const hostileImage = "registry.example/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// hostileDoc is the pod owner's init-data: one bound busybox container.
var hostileDoc = `version = "0.1.0"
algorithm = "sha256"

[agent]
policy = '''
allow_host_share = true
allow_read_output = true

[[containers]]
name = "app"
image = "` + hostileImage + `"
args = ["sh", "-c", "echo bound container up; exec sleep 600"]
env = ["PATH=/bin", "HOME=/root", "TERM=xterm"]
working_dir = "/"
user = { uid = 0, gid = 0 }

[[containers.exec]]
args = ["cat", "/etc/hostname"]
'''
`

// hostileSpec is the spec a CRI would write for "app": the bound process,
// containerd's masked and read-only paths, the kernel mounts, and the
// CRI's /etc/hostname as a copy in a guest volume.
func hostileSpec(f func(*specs.Spec)) []byte {
	p := process("sh", "-c", "echo bound container up; exec sleep 600")
	s := specs.Spec{
		Version:  specs.Version,
		Process:  p,
		Root:     &specs.Root{Path: "rootfs"},
		Hostname: "hostile",
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
			{Destination: "/etc/hostname", Type: "bind", Source: policy.GuestVolumeRoot + "/app1-0/hostname", Options: []string{"rbind", "rprivate", "ro"}},
		},
		Annotations: map[string]string{policy.ContainerNameAnnotation: "app", "io.kubernetes.cri.container-type": "container"},
		Linux: &specs.Linux{
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace}, {Type: specs.IPCNamespace},
				{Type: specs.UTSNamespace}, {Type: specs.MountNamespace},
			},
			MaskedPaths:   policy.RequiredMaskedPaths,
			ReadonlyPaths: policy.RequiredReadonlyPaths,
		},
	}
	if f != nil {
		f(&s)
	}
	b, err := json.Marshal(&s)
	if err != nil {
		panic(err)
	}
	return b
}

// denied asserts a PermissionDenied naming rule (and why, when given).
func denied(t *testing.T, err error, rule, why string) {
	t.Helper()
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "(rule "+rule+")") || !strings.Contains(err.Error(), why) {
		t.Fatalf("%v (code %s), want PermissionDenied naming rule %s and %q", err, status.Code(err), rule, why)
	}
}

// TestHostileHost boots a veil-dev guest whose init-data binds one busybox
// container and sends, as a hostile host would, each attack through the
// real agent API: each is refused naming its rule, while the pod's bound
// container is created, started, its output read and its bound exec run.
func TestHostileHost(t *testing.T) {
	doc := []byte(hostileDoc)
	start := time.Now()
	v := bootSample(t, "hostile", initdata.Digest(doc))
	booted := time.Since(start)
	ctx := testCtx(t)
	c := v.client
	if _, err := c.Attestation.SetInitData(ctx, &api.SetInitDataRequest{Document: doc}); err != nil {
		t.Fatalf("SetInitData: %v\nconsole:\n%s", err, v.console())
	}
	share := &api.Storage{Driver: "9p", Source: hypervisor.ShareTag, MountPoint: "/run/veil/shared", Fstype: "9p",
		Options: []string{"trans=virtio", "version=9p2000.L", "msize=262144", "cache=none"}}
	if _, err := c.Sandbox.CreateSandbox(ctx, &api.CreateSandboxRequest{SandboxId: "hostile", Hostname: "hostile", Storages: []*api.Storage{share}}); err != nil {
		t.Fatalf("CreateSandbox with the share veil sends: %v", err)
	}
	// The CRI's /etc/hostname, copied in as the shim does.
	if _, err := c.Volume.CopyFile(ctx, &api.CopyFileRequest{Volume: "app1-0", Path: "hostname", Data: []byte("hostile\n"), Mode: 0o644}); err != nil {
		t.Fatalf("CopyFile: %v", err)
	}
	makeRootfs(t, v, "app1")
	rootfs := func(cid string) *api.Storage { return &api.Storage{Driver: "shared", Source: cid + "/rootfs"} }
	create := func(cid string, f func(*specs.Spec), req func(*api.CreateContainerRequest)) error {
		r := &api.CreateContainerRequest{ContainerId: cid, Spec: hostileSpec(f), Rootfs: rootfs(cid)}
		if req != nil {
			req(r)
		}
		_, err := c.Container.CreateContainer(ctx, r)
		return err
	}
	attacksStart := time.Now()

	attacks := []struct {
		name, rule, why string
		do              func() error
	}{
		{"storage over /usr/bin/runc", "storages", "/usr/bin/runc", func() error {
			return create("evil-runc", nil, func(r *api.CreateContainerRequest) {
				r.Storages = []*api.Storage{{Driver: "bind", Source: policy.GuestVolumeRoot + "/app1-0/hostname", MountPoint: "/usr/bin/runc"}}
			})
		}},
		{"bind storage over the image rootfs", "storages", policy.GuestImageRoot + "/app1/rootfs", func() error {
			return create("evil-over-image", nil, func(r *api.CreateContainerRequest) {
				r.Storages = []*api.Storage{{Driver: "bind", Source: policy.GuestVolumeRoot + "/app1-0", MountPoint: policy.GuestImageRoot + "/app1/rootfs"}}
			})
		}},
		{"rootfs from a guest volume", "rootfs", "not the container's guest-pulled image", func() error {
			return create("evil-rootfs", nil, func(r *api.CreateContainerRequest) {
				r.Rootfs = &api.Storage{Driver: "bind", Source: policy.GuestVolumeRoot + "/app1-0"}
			})
		}},
		{"unknown driver with a 9p fstype", "storages", `driver "virtiofs"`, func() error {
			_, err := c.Sandbox.CreateSandbox(ctx, &api.CreateSandboxRequest{SandboxId: "hostile", Storages: []*api.Storage{
				{Driver: "virtiofs", Source: hypervisor.ShareTag, MountPoint: "/run/veil/shared", Fstype: "9p"}}})
			return err
		}},
		{"host disk mount over /usr/bin", "storages", `driver "block"`, func() error {
			_, err := c.Sandbox.CreateSandbox(ctx, &api.CreateSandboxRequest{SandboxId: "hostile", Storages: []*api.Storage{
				{Driver: "block", Source: "/dev/vda", MountPoint: "/usr/bin", Fstype: "ext4"}}})
			return err
		}},
		{"LD_PRELOAD env", "containers[app].env", "LD_PRELOAD=/etc/hostname", func() error {
			return create("evil-preload", func(s *specs.Spec) { s.Process.Env = append(s.Process.Env, "LD_PRELOAD=/etc/hostname") }, nil)
		}},
		{"changed args", "containers[app].args", `seen ["sh" "-c" "cat /proc/1/environ"]`, func() error {
			return create("evil-args", func(s *specs.Spec) { s.Process.Args = []string{"sh", "-c", "cat /proc/1/environ"} }, nil)
		}},
		{"devtmpfs mount", "containers[app].mounts", `type "devtmpfs"`, func() error {
			return create("evil-devtmpfs", func(s *specs.Spec) {
				s.Mounts = append(s.Mounts, specs.Mount{Destination: "/dev", Type: "devtmpfs", Source: "devtmpfs"})
			}, nil)
		}},
		{"extra capability CAP_SYS_MODULE", "containers[app].capabilities", "CAP_SYS_MODULE", func() error {
			return create("evil-caps", func(s *specs.Spec) {
				s.Process.Capabilities.Bounding = append(s.Process.Capabilities.Bounding, "CAP_SYS_MODULE")
			}, nil)
		}},
		{"container the policy does not bind", "containers", `"debug" names no container`, func() error {
			return create("evil-unbound", func(s *specs.Spec) { s.Annotations[policy.ContainerNameAnnotation] = "debug" }, nil)
		}},
		{"setuid copied file", "volume-copy", "setuid", func() error {
			_, err := c.Volume.CopyFile(ctx, &api.CopyFileRequest{Volume: "app1-0", Path: "su", Data: []byte("#!/bin/sh\n"), Mode: 0o4755})
			return err
		}},
		{"file planted in an emptyDir", "volume-copy", "guest-memory volume", func() error {
			_, err := c.Volume.CopyFile(ctx, &api.CopyFileRequest{Volume: "emptydir-data", Path: "dir/run.sh", Data: []byte("#!/bin/sh\n"), Mode: 0o755})
			return err
		}},
		{"removal inside an emptyDir", "volume-copy", "guest-memory volume", func() error {
			_, err := c.Volume.RemovePath(ctx, &api.RemovePathRequest{Volume: "emptydir-data", Path: "dir/state.db"})
			return err
		}},
		{"PullImage of another image", "image", "registry.example/evil:latest", func() error {
			_, err := c.Image.PullImage(ctx, &api.PullImageRequest{Image: "registry.example/evil:latest", ContainerId: "evil-pull"})
			return err
		}},
	}
	for _, a := range attacks {
		t.Run(a.name, func(t *testing.T) { denied(t, a.do(), a.rule, a.why) })
	}
	t.Run("unknown method", func(t *testing.T) {
		// ttrpc refuses a method no service registers before any
		// interceptor runs: never served. A registered method without a
		// table entry is refused by the policy (rule unknown-method,
		// guest-agent/policy TestUnknownMethodRefused); the table covers
		// every registered one (TestMethodTableCoversTheAPI).
		for _, m := range [][2]string{{"veil.agent.v1.Sandbox", "Exploit"}, {"veil.agent.v2.Debug", "Shell"}} {
			err := c.TTRPC().Call(ctx, m[0], m[1], &api.CheckRequest{}, &api.CheckResponse{})
			if status.Code(err) != codes.Unimplemented {
				t.Fatalf("/%s/%s: %v (code %s), want Unimplemented", m[0], m[1], err, status.Code(err))
			}
		}
	})
	attacksTook := time.Since(attacksStart)

	// The pod's own container runs: created, started, its output read.
	legitStart := time.Now()
	if err := create("app1", nil, nil); err != nil {
		t.Fatalf("CreateContainer of the bound container: %v\nconsole:\n%s", err, v.console())
	}
	startContainer(t, ctx, v, "app1")
	r, err := c.Process.ReadStdout(ctx, &api.ReadStreamRequest{ContainerId: "app1", Len: 4096})
	if err != nil || string(r.GetData()) != "bound container up\n" {
		t.Fatalf("ReadStdout = %q, %v", r.GetData(), err)
	}
	t.Run("exec of the bound command", func(t *testing.T) {
		if _, err := c.Process.ExecProcess(ctx, &api.ExecProcessRequest{ContainerId: "app1", ExecId: "hostname", Process: processJSON("cat", "/etc/hostname")}); err != nil {
			t.Fatalf("ExecProcess: %v", err)
		}
		res := finish(t, ctx, c, "app1", "hostname", false)
		if res.status != 0 || string(res.stdout) != "hostile\n" {
			t.Fatalf("exec: status %d, stdout %q, stderr %q", res.status, res.stdout, res.stderr)
		}
	})
	t.Run("exec of an unlisted command", func(t *testing.T) {
		_, err := c.Process.ExecProcess(ctx, &api.ExecProcessRequest{ContainerId: "app1", ExecId: "shell", Process: processJSON("sh")})
		denied(t, err, "allow_exec", `args ["sh"] are not one of the commands`)
	})
	t.Run("exec of the bound command with LD_PRELOAD", func(t *testing.T) {
		p := process("cat", "/etc/hostname")
		p.Env = append(p.Env, "LD_PRELOAD=/etc/hostname")
		raw, _ := json.Marshal(p)
		_, err := c.Process.ExecProcess(ctx, &api.ExecProcessRequest{ContainerId: "app1", ExecId: "preload", Process: raw})
		denied(t, err, "containers[app].env", "LD_PRELOAD")
	})
	t.Run("UpdateContainer allowing a disk", func(t *testing.T) {
		_, err := c.Container.UpdateContainer(ctx, &api.UpdateContainerRequest{ContainerId: "app1", Resources: []byte(`{"devices":[{"allow":true,"type":"b","major":254,"access":"rwm"}]}`)})
		denied(t, err, "containers[app].resources", "254:*")
	})
	t.Run("PullImage of the bound image is admitted", func(t *testing.T) {
		// Admitted by the agent policy; it then fails in the Image service
		// (this init-data has no image policy, and the VM no registry).
		_, err := c.Image.PullImage(ctx, &api.PullImageRequest{Image: hostileImage, ContainerId: "app2"})
		if err == nil || status.Code(err) == codes.PermissionDenied {
			t.Fatalf("PullImage of the bound image: %v, want a pull failure, not a denial", err)
		}
	})
	if _, err := c.Process.SignalProcess(ctx, &api.SignalProcessRequest{ContainerId: "app1", Signal: uint32(unix.SIGKILL)}); err != nil {
		t.Fatalf("SignalProcess: %v", err)
	}
	w, err := c.Process.WaitProcess(ctx, &api.WaitProcessRequest{ContainerId: "app1"})
	if err != nil || w.ExitStatus != 128+uint32(unix.SIGKILL) {
		t.Fatalf("WaitProcess = %v, %v", w, err)
	}
	if _, err := c.Container.RemoveContainer(ctx, &api.RemoveContainerRequest{ContainerId: "app1"}); err != nil {
		t.Fatalf("RemoveContainer: %v", err)
	}
	legitTook := time.Since(legitStart)

	// The decision log holds each refusal with its rule, and the bound
	// container's admission.
	dl, err := c.Attestation.DecisionLog(ctx, &api.DecisionLogRequest{})
	if err != nil {
		t.Fatalf("DecisionLog: %v", err)
	}
	rules := map[string]int{}
	createdApp := false
	for _, d := range dl.GetDecisions() {
		if !d.GetAllowed() {
			rules[d.GetRule()]++
		}
		if d.GetAllowed() && d.GetContainerId() == "app1" && strings.HasSuffix(d.GetMethod(), "/CreateContainer") {
			createdApp = true
		}
	}
	for _, a := range attacks {
		if rules[a.rule] == 0 {
			t.Errorf("decision log has no denial with rule %s (%s): %v", a.rule, a.name, rules)
		}
	}
	if !createdApp || rules["allow_exec"] != 1 {
		t.Errorf("decision log: app1 created %v, allow_exec denials %d: %v", createdApp, rules["allow_exec"], rules)
	}
	if !strings.Contains(v.console(), "policy denial") {
		t.Errorf("the agent did not log its denials:\n%s", v.console())
	}
	if err := v.shutdown(); err != nil {
		t.Fatal(err)
	}
	t.Logf("boot to agent %v; %d attacks on creation refused in %v; bound container created, run, exec'd (one bound exec, two execs and an update refused) and removed in %v; %d decisions logged",
		booted.Round(time.Millisecond), len(attacks)+1, attacksTook.Round(time.Millisecond), legitTook.Round(time.Millisecond), len(dl.GetDecisions()))
}
