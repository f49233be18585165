package service

import (
	"context"
	"testing"

	"github.com/veil-runtime/veil/guest-agent/api"
	"github.com/veil-runtime/veil/guest-agent/attest"
	"github.com/veil-runtime/veil/guest-agent/policy"
)

// TestDecisionLog serves the enforcer's decisions: a denial with its
// rule, method, container and time; nothing without confidential state.
func TestDecisionLog(t *testing.T) {
	empty, err := (&attestationAPI{s: New(Config{})}).DecisionLog(context.Background(), &api.DecisionLogRequest{})
	if err != nil || len(empty.GetDecisions()) != 0 {
		t.Fatalf("without attestation state: %v, %v", empty, err)
	}
	st, err := attest.New(attest.Config{Params: map[string]string{attest.TEEParam: attest.Sample}})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Enforcer().Decide(policy.MethodWriteStdin, &api.WriteStdinRequest{ContainerId: "c1"}); err == nil {
		t.Fatal("stdin before init-data allowed")
	}
	resp, err := (&attestationAPI{s: New(Config{Attest: st})}).DecisionLog(context.Background(), &api.DecisionLogRequest{})
	if err != nil || len(resp.GetDecisions()) != 1 {
		t.Fatalf("DecisionLog = %v, %v", resp, err)
	}
	d := resp.GetDecisions()[0]
	if d.GetAllowed() || d.GetRule() != "init-data" || d.GetMethod() != policy.MethodWriteStdin || d.GetContainerId() != "c1" || d.GetTime().AsTime().IsZero() || d.GetWhy() == "" {
		t.Fatalf("decision %v", d)
	}
}
