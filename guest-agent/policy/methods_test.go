package policy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/veil-runtime/veil/guest-agent/api"
)

// apiMethods are the full ttrpc names of every method the generated agent
// API declares.
func apiMethods(t *testing.T) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	svcs := api.File_agent_proto.Services()
	for i := range svcs.Len() {
		sd := svcs.Get(i)
		ms := sd.Methods()
		for j := range ms.Len() {
			out[fmt.Sprintf("/%s/%s", sd.FullName(), ms.Get(j).Name())] = true
		}
	}
	want := []protoreflect.Name{"Sandbox", "Container", "Process", "Network", "Volume", "Attestation", "Image", "PortForward"}
	for _, n := range want {
		if svcs.ByName(n) == nil {
			t.Fatalf("the agent API has no service %s", n)
		}
	}
	return out
}

// TestMethodTableCoversTheAPI is the deny-by-default guard: every method of
// the agent API has an entry, and every entry names a method, so a new RPC
// cannot be served without a decision (it would be refused as
// unknown-method).
func TestMethodTableCoversTheAPI(t *testing.T) {
	declared := apiMethods(t)
	for m := range declared {
		e, ok := methods[m]
		if !ok {
			t.Errorf("%s has no entry in the policy's method table (methods.go): decide it as a hostile host would use it", m)
			continue
		}
		if e.why == "" {
			t.Errorf("%s: the entry does not say why", m)
		}
		if (e.kind == rule || e.kind == checked) && e.name == "" {
			t.Errorf("%s: a rule or check without a name", m)
		}
	}
	for m := range methods {
		if !declared[m] {
			t.Errorf("the method table has an entry for %s, which the agent API does not declare", m)
		}
	}
	// Every named rule is one the policy knows.
	for m, e := range methods {
		if e.kind == rule && !strings.Contains(strings.Join(knownKeys(), " "), e.name) {
			t.Errorf("%s: rule %s is not a policy key", m, e.name)
		}
	}
}

// TestUnknownMethodRefused: a method missing from the table is refused
// through the interceptor, in every state after init-data.
func TestUnknownMethodRefused(t *testing.T) {
	e := NewEnforcer(true)
	e.SetPolicy(Policy{AllowExec: true, AllowUnboundContainers: true, AllowHostShare: true})
	ran, err := call(e, "/veil.agent.v1.Sandbox/Exploit", &api.CheckRequest{})
	if ran || status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "rule unknown-method") {
		t.Fatalf("unknown method: ran %v, %v", ran, err)
	}
	if AlwaysAllowed("/veil.agent.v1.Sandbox/Exploit") {
		t.Fatal("an unknown method is always allowed")
	}
}

// fakeHandler is a ttrpc method that unmarshals into req's type and
// returns err.
func fakeHandler(req any, err error) ttrpc.Method {
	return func(ctx context.Context, unmarshal func(any) error) (any, error) {
		v := emptyLike(req)
		if uerr := unmarshal(v); uerr != nil {
			return nil, uerr
		}
		return v, err
	}
}

// TestEnforcerState: a pull the policy admitted and that succeeded binds
// the container ID to its image (a second pull for it is refused; a failed
// one is not remembered), a container created as "app" may exec app's
// commands, and every decision lands in the log.
func TestEnforcerState(t *testing.T) {
	e := NewEnforcer(true)
	e.SetPolicy(boundPolicy())
	intercept := func(method string, req any, handlerErr error) error {
		_, err := e.Intercept(context.Background(), protoUnmarshal(req), &ttrpc.UnaryServerInfo{FullMethod: method}, fakeHandler(req, handlerErr))
		return err
	}
	pull := &api.PullImageRequest{Image: appImage, ContainerId: "c1"}
	if err := intercept(MethodPullImage, pull, errors.New("registry down")); err == nil || status.Code(err) == codes.PermissionDenied {
		t.Fatalf("failed pull: %v", err)
	}
	if _, ok := e.StateSnapshot().Pulled["c1"]; ok {
		t.Fatal("a failed pull was remembered")
	}
	if err := intercept(MethodPullImage, pull, nil); err != nil {
		t.Fatalf("pull of the bound image: %v", err)
	}
	if err := intercept(MethodPullImage, &api.PullImageRequest{Image: appImage, ContainerId: "c1"}, nil); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "pulled once") {
		t.Fatalf("second pull for c1: %v", err)
	}
	exec := &api.ExecProcessRequest{ContainerId: "c1", ExecId: "e1", Process: []byte(`{"args":["/bin/cat","/tmp/ready"],"cwd":"/","user":{"uid":1000,"gid":1000}}`)}
	if err := intercept(MethodExecProcess, exec, nil); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "rule allow_exec") {
		t.Fatalf("exec before the container exists: %v", err)
	}
	if err := intercept(MethodCreateContainer, createReq(t, criSpec()), nil); err != nil {
		t.Fatalf("the bound container: %v", err)
	}
	if got := e.StateSnapshot().Created["c1"]; got != "app" {
		t.Fatalf("c1 created as %q, want app", got)
	}
	if err := intercept(MethodExecProcess, exec, nil); err != nil {
		t.Fatalf("exec of a bound command: %v", err)
	}
	s := criSpec()
	s.Process.Args = []string{"/bin/sh"}
	r := createReq(t, s)
	if err := intercept(MethodCreateContainer, r, nil); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "rule containers[app].args") {
		t.Fatalf("changed args: %v", err)
	}
	// Removed (NotFound: the shim's cleanup of a pull whose create
	// failed), the ID may be pulled again.
	if err := intercept(MethodRemoveContainer, &api.RemoveContainerRequest{ContainerId: "c1"}, errgrpc.ToGRPC(fmt.Errorf("container c1: %w", errdefs.ErrNotFound))); status.Code(err) != codes.NotFound {
		t.Fatalf("RemoveContainer: %v", err)
	}
	if st := e.StateSnapshot(); len(st.Pulled)+len(st.Created) != 0 {
		t.Fatalf("state after RemoveContainer: %+v", st)
	}
	if err := intercept(MethodPullImage, pull, nil); err != nil {
		t.Fatalf("pull after RemoveContainer: %v", err)
	}
	got, dropped := e.Decisions().Entries()
	if dropped != 0 {
		t.Fatalf("dropped %d", dropped)
	}
	var summary []string
	for _, d := range got {
		if d.Time.IsZero() {
			t.Errorf("decision %+v without a time", d)
		}
		summary = append(summary, fmt.Sprintf("%s %s %v %s", d.Method[strings.LastIndex(d.Method, "/")+1:], d.Container, d.Allowed, d.Rule))
	}
	want := []string{
		"PullImage c1 true ", "PullImage c1 true ", "PullImage c1 false image",
		"ExecProcess c1 false allow_exec", "CreateContainer c1 true ", "ExecProcess c1 true ",
		"CreateContainer c1 false containers[app].args", "PullImage c1 true ",
	}
	if strings.Join(summary, "\n") != strings.Join(want, "\n") {
		t.Fatalf("decision log:\n%s\nwant:\n%s", strings.Join(summary, "\n"), strings.Join(want, "\n"))
	}
}

// TestConcurrentPullsOfOneContainer: while a pull for c1 is in flight a
// second one is refused, so one container never gets two images.
func TestConcurrentPullsOfOneContainer(t *testing.T) {
	e := NewEnforcer(true)
	e.SetPolicy(boundPolicy())
	pull := &api.PullImageRequest{Image: appImage, ContainerId: "c1"}
	inFlight, release := make(chan struct{}), make(chan struct{})
	first := make(chan error, 1)
	go func() {
		slow := func(ctx context.Context, unmarshal func(any) error) (any, error) {
			var v api.PullImageRequest
			if err := unmarshal(&v); err != nil {
				return nil, err
			}
			close(inFlight)
			<-release
			return &v, nil
		}
		_, err := e.Intercept(context.Background(), protoUnmarshal(pull), &ttrpc.UnaryServerInfo{FullMethod: MethodPullImage}, slow)
		first <- err
	}()
	<-inFlight
	_, err := e.Intercept(context.Background(), protoUnmarshal(pull), &ttrpc.UnaryServerInfo{FullMethod: MethodPullImage}, fakeHandler(pull, nil))
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "in flight") {
		t.Fatalf("second pull while the first is in flight: %v", err)
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatalf("first pull: %v", err)
	}
}

func TestDecisionLogRing(t *testing.T) {
	l := NewDecisionLog(3)
	for i := range 5 {
		l.Add(Decision{Method: fmt.Sprint(i)})
	}
	got, dropped := l.Entries()
	if dropped != 2 || len(got) != 3 || got[0].Method != "2" || got[2].Method != "4" {
		t.Fatalf("entries %+v, dropped %d", got, dropped)
	}
	// The frequent allowed calls are not logged; denials always are.
	e := NewEnforcer(true)
	e.SetPolicy(Policy{AllowReadOutput: true})
	for range 10 {
		_ = e.Decide(MethodReadStdout, &api.ReadStreamRequest{ContainerId: "c1"})
	}
	_ = e.Decide(MethodWriteStdin, &api.WriteStdinRequest{ContainerId: "c1"})
	got, _ = e.Decisions().Entries()
	if len(got) != 1 || got[0].Rule != "allow_write_stdin" || got[0].Container != "c1" || got[0].Allowed {
		t.Fatalf("decisions %+v", got)
	}
	// An ordinary pod decides nothing and logs nothing.
	o := NewEnforcer(false)
	_ = o.Decide(MethodWriteStdin, &api.WriteStdinRequest{})
	if got, _ := o.Decisions().Entries(); len(got) != 0 {
		t.Fatalf("ordinary pod logged %+v", got)
	}
}
