package service

import (
	"context"
	"encoding/hex"
	"fmt"

	"github.com/containerd/errdefs"

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
