package policy

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/ttrpc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/veil-runtime/veil/guest-agent/api"
	"github.com/veil-runtime/veil/guest-agent/volume"
)

func TestGuestVolumeRootIsTheVolumeService(t *testing.T) {
	if GuestVolumeRoot != volume.DefaultRoot {
		t.Fatalf("GuestVolumeRoot %s, the Volume service writes under %s", GuestVolumeRoot, volume.DefaultRoot)
	}
}

func TestParse(t *testing.T) {
	p, err := Parse("")
	if err != nil || p != Default() {
		t.Fatalf("empty: %+v, %v", p, err)
	}
	p, err = Parse("allow_exec = true\nallow_host_share = true\n")
	if err != nil || !p.AllowExec || !p.AllowHostShare || p.AllowReadOutput {
		t.Fatalf("parsed %+v, %v", p, err)
	}
	if p, err := Parse("allow_debug_console = true"); err != nil || !p.AllowDebugConsole {
		t.Fatalf("allow_debug_console: %+v, %v", p, err)
	}
	if _, err := Parse("allow_everything = true"); err == nil || !strings.Contains(err.Error(), "unknown rules allow_everything") {
		t.Fatalf("unknown rule: %v", err)
	}
	if _, err := Parse("allow_exec = "); err == nil || !strings.Contains(err.Error(), "parsing toml") {
		t.Fatalf("bad toml: %v", err)
	}
}

func specJSON(t *testing.T, f func(*specs.Spec)) []byte {
	t.Helper()
	s := &specs.Spec{Process: &specs.Process{Args: []string{"sh"}, Capabilities: &specs.LinuxCapabilities{Bounding: []string{"CAP_CHOWN"}}}}
	if f != nil {
		f(s)
	}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestCheck(t *testing.T) {
	share := &api.Storage{Driver: "9p", Source: "veilshare", MountPoint: "/run/veil/shared"}
	rootfs := &api.Storage{Driver: "shared", Source: "c1/rootfs"}
	tmpfs := &api.Storage{Driver: "tmpfs", Source: "tmpfs", MountPoint: "/run/x"}
	all := Policy{AllowExec: true, AllowReadOutput: true, AllowWriteStdin: true, AllowHostShare: true, AllowHostMounts: true, AllowPrivileged: true, AllowHooks: true}
	shareOnly := Policy{AllowHostShare: true}
	tests := []struct {
		name     string
		p        Policy
		method   string
		req      any
		wantRule string // "" allowed
	}{
		{"exec denied", Default(), methodExec, &api.ExecProcessRequest{}, "allow_exec"},
		{"exec allowed", all, methodExec, &api.ExecProcessRequest{}, ""},
		{"stdout denied", Default(), methodReadStdout, &api.ReadStreamRequest{}, "allow_read_output"},
		{"stderr denied", Default(), methodReadStderr, &api.ReadStreamRequest{}, "allow_read_output"},
		{"stdout allowed", all, methodReadStdout, &api.ReadStreamRequest{}, ""},
		{"stdin denied", Default(), methodWriteStdin, &api.WriteStdinRequest{}, "allow_write_stdin"},
		{"wait always allowed", Default(), "/veil.agent.v1.Process/WaitProcess", &api.WaitProcessRequest{}, ""},
		{"sandbox with host share denied", Default(), methodCreateSandbox, &api.CreateSandboxRequest{Storages: []*api.Storage{share}}, "allow_host_share"},
		{"sandbox with host share allowed", shareOnly, methodCreateSandbox, &api.CreateSandboxRequest{Storages: []*api.Storage{share}}, ""},
		{"sandbox with tmpfs only", Default(), methodCreateSandbox, &api.CreateSandboxRequest{Storages: []*api.Storage{tmpfs}}, ""},
		{"container rootfs from host denied", Default(), methodCreateContainer, &api.CreateContainerRequest{ContainerId: "c1", Rootfs: rootfs, Spec: specJSON(t, nil)}, "allow_host_share"},
		{"container rootfs from host allowed", shareOnly, methodCreateContainer, &api.CreateContainerRequest{ContainerId: "c1", Rootfs: rootfs, Spec: specJSON(t, nil)}, ""},
		{"container rootfs pulled in the guest", Default(), methodCreateContainer, &api.CreateContainerRequest{ContainerId: "c1", Rootfs: &api.Storage{Driver: "bind", Source: "/run/veil/images/c1/rootfs"}, Spec: specJSON(t, nil)}, ""},
		{"container rootfs of another container's image", all, methodCreateContainer, &api.CreateContainerRequest{ContainerId: "c1", Rootfs: &api.Storage{Driver: "bind", Source: "/run/veil/images/c2/rootfs"}, Spec: specJSON(t, nil)}, "rootfs"},
		{"container rootfs on a guest volume", all, methodCreateContainer, &api.CreateContainerRequest{ContainerId: "c1", Rootfs: &api.Storage{Driver: "bind", Source: "/run/veil/volumes/c1/v"}, Spec: specJSON(t, nil)}, "rootfs"},
		{"container rootfs escaping the image root", all, methodCreateContainer, &api.CreateContainerRequest{ContainerId: "c1", Rootfs: &api.Storage{Driver: "bind", Source: "/run/veil/images/c1/rootfs/../../../../"}, Spec: specJSON(t, nil)}, "rootfs"},
		{"container volume from host denied", shareOnly, methodCreateContainer, &api.CreateContainerRequest{ContainerId: "c1", Rootfs: rootfs, Storages: []*api.Storage{{Driver: "shared", Source: "c1/mounts/0"}}, Spec: specJSON(t, nil)}, "allow_host_mounts"},
		{"container bind mount denied", shareOnly, methodCreateContainer, &api.CreateContainerRequest{ContainerId: "c1", Rootfs: rootfs, Spec: specJSON(t, func(s *specs.Spec) {
			s.Mounts = []specs.Mount{{Destination: "/etc/hosts", Type: "bind", Source: "/run/veil/shared/c1/mounts/hosts", Options: []string{"rbind"}}}
		})}, "allow_host_mounts"},
		{"container proc mount fine", shareOnly, methodCreateContainer, &api.CreateContainerRequest{ContainerId: "c1", Rootfs: rootfs, Spec: specJSON(t, func(s *specs.Spec) {
			s.Mounts = []specs.Mount{{Destination: "/proc", Type: "proc", Source: "proc"}}
		})}, ""},
		{"privileged denied", shareOnly, methodCreateContainer, &api.CreateContainerRequest{ContainerId: "c1", Rootfs: rootfs, Spec: specJSON(t, func(s *specs.Spec) {
			s.Process.Capabilities.Bounding = append(s.Process.Capabilities.Bounding, "CAP_SYS_ADMIN")
		})}, "allow_privileged"},
		{"hooks denied", shareOnly, methodCreateContainer, &api.CreateContainerRequest{ContainerId: "c1", Rootfs: rootfs, Spec: specJSON(t, func(s *specs.Spec) {
			s.Hooks = &specs.Hooks{CreateRuntime: []specs.Hook{{Path: "/bin/evil"}}}
		})}, "allow_hooks"},
		{"everything allowed", all, methodCreateContainer, &api.CreateContainerRequest{ContainerId: "c1", Rootfs: rootfs, Spec: specJSON(t, func(s *specs.Spec) {
			s.Hooks = &specs.Hooks{CreateRuntime: []specs.Hook{{Path: "/bin/x"}}}
			s.Process.Capabilities.Bounding = append(s.Process.Capabilities.Bounding, "CAP_SYS_ADMIN")
		})}, ""},
		{"guest volume bind needs no rule", shareOnly, methodCreateContainer, &api.CreateContainerRequest{ContainerId: "c1", Rootfs: rootfs, Spec: specJSON(t, func(s *specs.Spec) {
			s.Mounts = []specs.Mount{
				{Destination: "/etc/config", Type: "bind", Source: "/run/veil/volumes/c1-3", Options: []string{"rbind", "ro"}},
				{Destination: "/etc/hosts", Type: "bind", Source: "/run/veil/volumes/c1-0/hosts", Options: []string{"rbind"}},
			}
		})}, ""},
		{"bind climbing out of the guest volumes denied", shareOnly, methodCreateContainer, &api.CreateContainerRequest{ContainerId: "c1", Rootfs: rootfs, Spec: specJSON(t, func(s *specs.Spec) {
			s.Mounts = []specs.Mount{{Destination: "/x", Type: "bind", Source: "/run/veil/volumes/../attest", Options: []string{"rbind"}}}
		})}, "allow_host_mounts"},
		{"bind of the volume root itself denied", shareOnly, methodCreateContainer, &api.CreateContainerRequest{ContainerId: "c1", Rootfs: rootfs, Spec: specJSON(t, func(s *specs.Spec) {
			s.Mounts = []specs.Mount{{Destination: "/x", Type: "none", Source: "/run/veil/volumes", Options: []string{"bind"}}}
		})}, "allow_host_mounts"},
		{"bind of another guest path denied", shareOnly, methodCreateContainer, &api.CreateContainerRequest{ContainerId: "c1", Rootfs: rootfs, Spec: specJSON(t, func(s *specs.Spec) {
			s.Mounts = []specs.Mount{{Destination: "/x", Type: "bind", Source: "/etc", Options: []string{"rbind"}}}
		})}, "allow_host_mounts"},
		{"bind storage of a guest volume", shareOnly, methodCreateContainer, &api.CreateContainerRequest{ContainerId: "c1", Rootfs: rootfs, Storages: []*api.Storage{{Driver: "bind", Source: "/run/veil/volumes/v", MountPoint: "/run/m"}}, Spec: specJSON(t, nil)}, ""},
		{"bind storage of a guest path denied", shareOnly, methodCreateContainer, &api.CreateContainerRequest{ContainerId: "c1", Rootfs: rootfs, Storages: []*api.Storage{{Driver: "bind", Source: "/", MountPoint: "/run/m"}}, Spec: specJSON(t, nil)}, "allow_host_mounts"},
		{"debug console denied", Default(), MethodDebugConsole, nil, "allow_debug_console"},
		{"debug console allowed", Policy{AllowDebugConsole: true}, MethodDebugConsole, nil, ""},
		{"volume copies allowed by default", Default(), methodCopyFile, &api.CopyFileRequest{Volume: "v", Path: "hosts"}, ""},
		{"volume copies denied", Policy{DenyVolumeCopies: true}, methodCopyFile, &api.CopyFileRequest{Volume: "v", Path: "hosts"}, "deny_volume_copies"},
		{"volume removals denied", Policy{DenyVolumeCopies: true}, methodRemovePath, &api.RemovePathRequest{Volume: "v", Path: "x"}, "deny_volume_copies"},
		{"spec that does not parse", all, methodCreateContainer, &api.CreateContainerRequest{ContainerId: "c1", Spec: []byte("{")}, "spec"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := tt.p.Check(tt.method, tt.req)
			if tt.wantRule == "" {
				if d != nil {
					t.Fatalf("denied: %v", d)
				}
				return
			}
			if d == nil || d.Rule != tt.wantRule {
				t.Fatalf("denial %v, want rule %s", d, tt.wantRule)
			}
			if !strings.Contains(d.Error(), "rule "+tt.wantRule) || !strings.Contains(d.Error(), tt.method) {
				t.Fatalf("denial %q does not name the rule and method", d)
			}
		})
	}
}

// call runs the interceptor as ttrpc does: the method unmarshals into its
// request and records whether the handler body ran.
func call(e *Enforcer, method string, req any) (ran bool, err error) {
	unmarshal := func(v any) error {
		// As a real unmarshal would: the request's bytes into v.
		raw, err := proto.Marshal(req.(proto.Message))
		if err != nil {
			return err
		}
		return proto.Unmarshal(raw, v.(proto.Message))
	}
	m := func(ctx context.Context, unmarshal func(any) error) (any, error) {
		var v any
		switch req.(type) {
		case *api.ExecProcessRequest:
			v = &api.ExecProcessRequest{}
		case *api.CreateSandboxRequest:
			v = &api.CreateSandboxRequest{}
		case *api.SetInitDataRequest:
			v = &api.SetInitDataRequest{}
		case *api.ReadStreamRequest:
			v = &api.ReadStreamRequest{}
		default:
			v = &api.CheckRequest{}
		}
		if err := unmarshal(v); err != nil {
			return nil, err
		}
		ran = true
		return v, nil
	}
	_, err = e.Intercept(context.Background(), unmarshal, &ttrpc.UnaryServerInfo{FullMethod: method}, m)
	return ran, err
}

// TestDebugConsole is the console server's Allowed hook: open for an
// ordinary pod, refused with the rule named in a confidential one until its
// policy allows it, and refused again once the agent is locked down.
func TestDebugConsole(t *testing.T) {
	if err := NewEnforcer(false).DebugConsole(); err != nil {
		t.Fatalf("ordinary pod: %v", err)
	}
	e := NewEnforcer(true)
	var d *Denial
	if err := e.DebugConsole(); !errors.As(err, &d) || d.Rule != "init-data" {
		t.Fatalf("before init-data: %v", err)
	}
	e.SetPolicy(Default())
	if err := e.DebugConsole(); !errors.As(err, &d) || d.Rule != "allow_debug_console" || !strings.Contains(err.Error(), "debug console") {
		t.Fatalf("default policy: %v", err)
	}
	e.SetPolicy(Policy{AllowDebugConsole: true})
	if err := e.DebugConsole(); err != nil {
		t.Fatalf("allowed by policy: %v", err)
	}
	e.Lock("init-data digest mismatch")
	if err := e.DebugConsole(); !errors.As(err, &d) || d.Rule != "lockdown" {
		t.Fatalf("locked down: %v", err)
	}
}

func TestInterceptor(t *testing.T) {
	const check = "/veil.agent.v1.Sandbox/Check"
	exec := &api.ExecProcessRequest{ContainerId: "c1", ExecId: "e1"}
	sandbox := &api.CreateSandboxRequest{SandboxId: "p", Storages: []*api.Storage{{Driver: "9p", Source: "veilshare"}}}
	type step struct {
		method   string
		req      any
		wantDeny string // substring of the denial; "" allowed
	}
	tests := []struct {
		name  string
		e     func() *Enforcer
		steps []step
	}{
		{"ordinary pod: nothing checked", func() *Enforcer { return NewEnforcer(false) }, []step{
			{methodExec, exec, ""}, {methodCreateSandbox, sandbox, ""},
		}},
		{"confidential before init-data", func() *Enforcer { return NewEnforcer(true) }, []step{
			{check, &api.CheckRequest{}, ""},
			{MethodSetInitData, &api.SetInitDataRequest{}, ""},
			{methodCreateSandbox, sandbox, "rule init-data"},
			{methodExec, exec, "call Attestation.SetInitData first"},
		}},
		{"default policy", func() *Enforcer { e := NewEnforcer(true); e.SetPolicy(Default()); return e }, []step{
			{methodExec, exec, "ExecProcess denied by the confidential agent policy (rule allow_exec)"},
			{methodCreateSandbox, sandbox, "rule allow_host_share"},
			{methodReadStdout, &api.ReadStreamRequest{}, "rule allow_read_output"},
		}},
		{"permissive policy", func() *Enforcer {
			e := NewEnforcer(true)
			e.SetPolicy(Policy{AllowExec: true, AllowHostShare: true})
			return e
		}, []step{{methodExec, exec, ""}, {methodCreateSandbox, sandbox, ""}}},
		{"locked down", func() *Enforcer {
			e := NewEnforcer(true)
			e.SetPolicy(Policy{AllowExec: true})
			e.Lock("init-data digest mismatch")
			e.Lock("second reason")
			return e
		}, []step{
			{check, &api.CheckRequest{}, ""},
			{"/veil.agent.v1.Sandbox/Shutdown", &api.CheckRequest{}, ""},
			{methodExec, exec, "locked down: init-data digest mismatch"},
			{MethodSetInitData, &api.SetInitDataRequest{}, "rule lockdown"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := tt.e()
			for _, s := range tt.steps {
				ran, err := call(e, s.method, s.req)
				if s.wantDeny == "" {
					if err != nil || !ran {
						t.Fatalf("%s: ran %v, err %v", s.method, ran, err)
					}
					continue
				}
				if ran {
					t.Fatalf("%s: the handler ran despite the denial", s.method)
				}
				if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), s.wantDeny) {
					t.Fatalf("%s: %v (code %s), want PermissionDenied with %q", s.method, err, status.Code(err), s.wantDeny)
				}
				if !errors.Is(errgrpc.ToNative(err), errdefs.ErrPermissionDenied) {
					t.Fatalf("%s: %v does not convert back to ErrPermissionDenied", s.method, err)
				}
			}
		})
	}
}
