package policy

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/ttrpc"
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
	if err != nil || !reflect.DeepEqual(p, Default()) {
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
	if _, err := Parse("allow_everything = true"); err == nil || !strings.Contains(err.Error(), "allow_unbound_containers, containers") {
		t.Fatalf("the known rules are not listed from the struct tags: %v", err)
	}
	for doc, want := range map[string]string{
		"[[containers]]\nargs = [\"x\"]":                                                             "containers[0]: no name",
		"[[containers]]\nname = \"a\"\n[[containers]]\nname = \"a\"":                                 "containers[a]: the name is used twice",
		"[[containers]]\nname = \"a\"\nseccomp = \"Off\"":                                            "want RuntimeDefault or Unconfined",
		"[[containers]]\nname = \"a\"\n[[containers.mounts]]\ndestination = \"/x\"\nkind = \"bind\"": "kind \"bind\"",
		"[[containers]]\nname = \"a\"\n[[containers.mounts]]\ndestination = \"x\"\nkind = \"copy\"":  "not an absolute path",
		"[[containers]]\nname = \"a\"\n[[containers.env_patterns]]\nname = \"(\"\nvalue = \"\"":      "containers[a].env_patterns",
	} {
		if _, err := Parse(doc); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %v, want an error with %q", doc, err, want)
		}
	}
	// An empty capability list drops every capability; no list means
	// containerd's defaults.
	p, err = Parse("[[containers]]\nname = \"a\"\ncapabilities = []\n[[containers]]\nname = \"b\"")
	if err != nil || p.Containers[0].Capabilities == nil || p.Containers[1].Capabilities != nil {
		t.Fatalf("capabilities = [] and none: %+v, %v", p.Containers, err)
	}
}

// call runs the interceptor as ttrpc does: the method unmarshals into its
// request and records whether the handler body ran.
func call(e *Enforcer, method string, req any) (ran bool, err error) {
	unmarshal := protoUnmarshal(req)
	m := func(ctx context.Context, unmarshal func(any) error) (any, error) {
		v := emptyLike(req)
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
			{MethodExecProcess, exec, ""}, {MethodCreateSandbox, sandbox, ""},
		}},
		{"confidential before init-data", func() *Enforcer { return NewEnforcer(true) }, []step{
			{check, &api.CheckRequest{}, ""},
			{MethodSetInitData, &api.SetInitDataRequest{}, ""},
			{MethodCreateSandbox, sandbox, "rule init-data"},
			{MethodExecProcess, exec, "call Attestation.SetInitData first"},
		}},
		{"default policy", func() *Enforcer { e := NewEnforcer(true); e.SetPolicy(Default()); return e }, []step{
			{MethodExecProcess, exec, "ExecProcess denied by the confidential agent policy (rule allow_exec)"},
			{MethodCreateSandbox, sandbox, "rule allow_host_share"},
			{MethodReadStdout, &api.ReadStreamRequest{}, "rule allow_read_output"},
		}},
		{"permissive policy", func() *Enforcer {
			e := NewEnforcer(true)
			e.SetPolicy(Policy{AllowExec: true, AllowHostShare: true})
			return e
		}, []step{
			{MethodCreateSandbox, sandbox, ""},
			// allow_exec still needs a container the policy admitted.
			{MethodExecProcess, exec, "rule exec"},
			{"/veil.agent.v1.Sandbox/Exploit", &api.CheckRequest{}, "rule unknown-method"},
		}},
		{"locked down", func() *Enforcer {
			e := NewEnforcer(true)
			e.SetPolicy(Policy{AllowExec: true})
			e.Lock("init-data digest mismatch")
			e.Lock("second reason")
			return e
		}, []step{
			{check, &api.CheckRequest{}, ""},
			{"/veil.agent.v1.Sandbox/Shutdown", &api.CheckRequest{}, ""},
			{MethodExecProcess, exec, "locked down: init-data digest mismatch"},
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

// protoUnmarshal unmarshals as ttrpc would: the request's bytes into v.
// emptyLike returns a new, empty message of req's type, as a ttrpc handler
// has for its request before unmarshalling.
func emptyLike(req any) any { return req.(proto.Message).ProtoReflect().New().Interface() }

func protoUnmarshal(req any) func(any) error {
	return func(v any) error {
		raw, err := proto.Marshal(req.(proto.Message))
		if err != nil {
			return err
		}
		return proto.Unmarshal(raw, v.(proto.Message))
	}
}
