package service

import (
	"context"
	"encoding/hex"
	"fmt"

	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/veil-runtime/veil/guest-agent/api"
)

// attestationAPI serves the Attestation service from the agent's
// confidential state (guest-agent/attest). Without that state (tests, or
// an agent built without it) every call is FailedPrecondition.
type attestationAPI struct{ s *Service }

func (a *attestationAPI) SetInitData(ctx context.Context, r *api.SetInitDataRequest) (*api.SetInitDataResponse, error) {
	st := a.s.cfg.Attest
	if st == nil {
		return nil, rpcErr(fmt.Errorf("set init-data: the agent has no attestation state: %w", errdefs.ErrFailedPrecondition))
	}
	d, err := st.SetInitData(ctx, r.GetDocument())
	if err != nil {
		return nil, rpcErr(fmt.Errorf("set init-data: %w: %w", err, errdefs.ErrPermissionDenied))
	}
	return &api.SetInitDataResponse{Digest: hex.EncodeToString(d[:]), Tee: st.TEE()}, nil
}

func (a *attestationAPI) Attest(ctx context.Context, _ *api.AttestRequest) (*api.AttestResponse, error) {
	st := a.s.cfg.Attest
	if st == nil {
		return nil, rpcErr(fmt.Errorf("attest: the agent has no attestation state: %w", errdefs.ErrFailedPrecondition))
	}
	res, err := st.Attest(ctx)
	if err != nil {
		return nil, rpcErr(fmt.Errorf("attest: %w: %w", err, errdefs.ErrFailedPrecondition))
	}
	return &api.AttestResponse{Tee: st.TEE(), Broker: res.Broker, TokenClaims: res.Claims}, nil
}

// DecisionLog serves the agent policy's decision log (empty for an
// ordinary pod, whose requests are not checked).
func (a *attestationAPI) DecisionLog(ctx context.Context, _ *api.DecisionLogRequest) (*api.DecisionLogResponse, error) {
	st := a.s.cfg.Attest
	if st == nil {
		return &api.DecisionLogResponse{}, nil
	}
	entries, dropped := st.Enforcer().Decisions().Entries()
	resp := &api.DecisionLogResponse{Dropped: dropped}
	for _, d := range entries {
		resp.Decisions = append(resp.Decisions, &api.Decision{
			Time: timestamppb.New(d.Time), Method: d.Method, ContainerId: d.Container,
			Allowed: d.Allowed, Rule: d.Rule, Why: d.Why,
		})
	}
	return resp, nil
}
