package policy

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"sync"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/ttrpc"

	"github.com/veil-runtime/veil/guest-agent/api"
)

// Enforcer holds the agent's policy state and checks every request.
type Enforcer struct {
	confidential bool
	log          *slog.Logger
	decisions    *DecisionLog

	mu     sync.Mutex
	policy *Policy // nil until init-data is accepted
	locked string  // why the agent is locked down; "" when it is not
	state  State
	// pulling are the PullImage calls in flight, by container ID.
	pulling map[string]string
}

// NewEnforcer returns the enforcer of an agent; with confidential false it
// allows everything.
func NewEnforcer(confidential bool) *Enforcer {
	return &Enforcer{
		confidential: confidential,
		log:          slog.New(slog.DiscardHandler),
		decisions:    NewDecisionLog(DecisionLogSize),
		state:        State{Pulled: map[string]string{}, Created: map[string]string{}},
		pulling:      map[string]string{},
	}
}

// SetLog sets where denials are logged (discarded by default).
func (e *Enforcer) SetLog(l *slog.Logger) {
	if l != nil {
		e.log = l
	}
}

// Decisions is the enforcer's decision log.
func (e *Enforcer) Decisions() *DecisionLog { return e.decisions }

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
// unmarshalled message. A confidential agent records it in the decision
// log (denials always, allowed calls of the checked methods) and logs a
// denial.
func (e *Enforcer) Decide(method string, req any) error {
	if !e.confidential {
		return nil
	}
	d := e.decide(method, req)
	e.record(method, req, d)
	if d != nil {
		return d
	}
	return nil
}

func (e *Enforcer) decide(method string, req any) *Denial {
	if AlwaysAllowed(method) {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.locked != "" {
		return &Denial{Rule: "lockdown", Method: method, Why: "the agent is locked down: " + e.locked}
	}
	if method == MethodSetInitData {
		return nil
	}
	if e.policy == nil {
		return &Denial{Rule: "init-data", Method: method, Why: "no init-data accepted yet: call Attestation.SetInitData first"}
	}
	d := e.policy.CheckState(method, req, e.state)
	if r, ok := req.(*api.PullImageRequest); ok && d == nil && method == MethodPullImage {
		// One pull per container ID, also while the first is in flight.
		if prev, busy := e.pulling[r.GetContainerId()]; busy {
			return &Denial{Rule: "image", Method: method, Why: fmt.Sprintf("container %s: a pull of %s is in flight: a container's image is pulled once", r.GetContainerId(), prev)}
		}
		e.pulling[r.GetContainerId()] = r.GetImage()
	}
	return d
}

// record keeps a decision in the log and logs a denial.
func (e *Enforcer) record(method string, req any, d *Denial) {
	ent, known := methods[method]
	if d == nil && !(known && ent.logAllowed) {
		return
	}
	cid := ""
	if r, ok := req.(interface{ GetContainerId() string }); ok {
		cid = r.GetContainerId()
	}
	dec := Decision{Method: method, Container: cid, Allowed: d == nil}
	if d != nil {
		dec.Rule, dec.Why = d.Rule, d.Why
		e.log.Warn("policy denial", "method", method, "container", cid, "rule", d.Rule, "why", d.Why)
	}
	e.decisions.Add(dec)
}

// done tells the enforcer how a request it allowed ended: a PullImage that
// succeeded binds the container ID to the image it fetched, a
// CreateContainer to the binding it was created as, a RemoveContainer
// unbinds it.
func (e *Enforcer) done(method string, req any, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	switch r := req.(type) {
	case *api.PullImageRequest:
		if method == MethodPullImage {
			delete(e.pulling, r.GetContainerId())
			if err == nil {
				e.state.Pulled[r.GetContainerId()] = r.GetImage()
			}
		}
	case *api.CreateContainerRequest:
		if method == MethodCreateContainer && err == nil {
			e.state.Created[r.GetContainerId()] = containerName(r.GetSpec())
		}
	case *api.RemoveContainerRequest:
		// The container and its guest-pulled rootfs are gone (also on
		// NotFound: the shim's cleanup after a pull whose create failed),
		// so the ID may be pulled and created again, under the same rules.
		if method == MethodRemoveContainer && (err == nil || errdefs.IsNotFound(errgrpc.ToNative(err))) {
			delete(e.state.Pulled, r.GetContainerId())
			delete(e.state.Created, r.GetContainerId())
		}
	}
}

// StateSnapshot returns a copy of the state decisions depend on.
func (e *Enforcer) StateSnapshot() State {
	e.mu.Lock()
	defer e.mu.Unlock()
	return State{Pulled: maps.Clone(e.state.Pulled), Created: maps.Clone(e.state.Created)}
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
// answers a denial with PermissionDenied. A request that succeeded is
// remembered where later decisions depend on it (done).
func (e *Enforcer) Intercept(ctx context.Context, unmarshal ttrpc.Unmarshaler, info *ttrpc.UnaryServerInfo, method ttrpc.Method) (any, error) {
	if !e.confidential {
		return method(ctx, unmarshal)
	}
	var req any
	checked := func(v any) error {
		if err := unmarshal(v); err != nil {
			return err
		}
		if err := e.Decide(info.FullMethod, v); err != nil {
			return errgrpc.ToGRPC(fmt.Errorf("%w: %w", err, errdefs.ErrPermissionDenied))
		}
		req = v
		return nil
	}
	resp, err := method(ctx, checked)
	if req != nil {
		e.done(info.FullMethod, req, err)
	}
	return resp, err
}
