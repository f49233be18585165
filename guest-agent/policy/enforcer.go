package policy

import (
	"context"
	"fmt"
	"sync"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/ttrpc"
)

// Enforcer holds the agent's policy state and checks every request.
type Enforcer struct {
	confidential bool

	mu     sync.Mutex
	policy *Policy // nil until init-data is accepted
	locked string  // why the agent is locked down; "" when it is not
}

// NewEnforcer returns the enforcer of an agent; with confidential false it
// allows everything.
func NewEnforcer(confidential bool) *Enforcer {
	return &Enforcer{confidential: confidential}
}

// Confidential reports whether requests are checked.
func (e *Enforcer) Confidential() bool { return e.confidential }

// SetPolicy installs the accepted init-data's policy: requests beyond
// SetInitData are served from now on, as the policy allows.
func (e *Enforcer) SetPolicy(p Policy) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.policy = &p
}

// Lock refuses every request but Check, GuestDetails, Version and
// Shutdown from now on, for reason. The first reason stays.
func (e *Enforcer) Lock(reason string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.locked == "" {
		e.locked = reason
	}
}

// Locked returns why the agent is locked down ("" when it is not).
func (e *Enforcer) Locked() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.locked
}

// Decide is the policy decision for one request, req being its
// unmarshalled message.
func (e *Enforcer) Decide(method string, req any) error {
	if !e.confidential || AlwaysAllowed(method) {
		return nil
	}
	e.mu.Lock()
	locked, p := e.locked, e.policy
	e.mu.Unlock()
	if locked != "" {
		return &Denial{Rule: "lockdown", Method: method, Why: "the agent is locked down: " + locked}
	}
	if method == MethodSetInitData {
		return nil
	}
	if p == nil {
		return &Denial{Rule: "init-data", Method: method, Why: "no init-data accepted yet: call Attestation.SetInitData first"}
	}
	if d := p.Check(method, req); d != nil {
		return d
	}
	return nil
}

// DebugConsole decides one debug console session (console.Server's
// Allowed hook): an ordinary pod allows it; a confidential pod only when
// its accepted policy has allow_debug_console, never before init-data is
// accepted or when locked down. The refusal is a *Denial naming the rule.
func (e *Enforcer) DebugConsole() error {
	if err := e.Decide(MethodDebugConsole, nil); err != nil {
		return err
	}
	return nil
}

// Intercept is the ttrpc unary server interceptor: it checks the request
// once the handler has unmarshalled it, before the handler acts, and
// answers a denial with PermissionDenied.
func (e *Enforcer) Intercept(ctx context.Context, unmarshal ttrpc.Unmarshaler, info *ttrpc.UnaryServerInfo, method ttrpc.Method) (any, error) {
	if !e.confidential {
		return method(ctx, unmarshal)
	}
	checked := func(v any) error {
		if err := unmarshal(v); err != nil {
			return err
		}
		if err := e.Decide(info.FullMethod, v); err != nil {
			return errgrpc.ToGRPC(fmt.Errorf("%w: %w", err, errdefs.ErrPermissionDenied))
		}
		return nil
	}
	return method(ctx, checked)
}
