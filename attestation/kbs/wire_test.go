package kbs

import (
	"encoding/json"
	"reflect"
	"sort"
	"testing"
)

func keys(t *testing.T, v any) []string {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestWireNames pins the JSON member names to those of Trustee's
// kbs_types, so veil interoperates with Trustee brokers and guests.
func TestWireNames(t *testing.T) {
	tests := []struct {
		v    any
		want []string
	}{
		{Request{Version: "0.4.0", Tee: TeeSNP, ExtraParams: json.RawMessage(`""`)}, []string{"extra-params", "tee", "version"}},
		{Challenge{Nonce: "n", ExtraParams: json.RawMessage(`""`)}, []string{"extra-params", "nonce"}},
		{Attestation{InitData: &InitData{}, TeeEvidence: CompositeEvidence{PrimaryEvidence: json.RawMessage(`{}`)}}, []string{"init-data", "runtime-data", "tee-evidence"}},
		{Attestation{TeeEvidence: CompositeEvidence{PrimaryEvidence: json.RawMessage(`{}`)}}.RuntimeData, []string{"nonce", "tee-pubkey"}},
		{CompositeEvidence{PrimaryEvidence: json.RawMessage(`{}`)}, []string{"additional_evidence", "primary_evidence"}},
		{InitData{}, []string{"body", "format"}},
		{Response{}, []string{"ciphertext", "encrypted_key", "iv", "protected", "tag"}},
		{ErrorInformation{}, []string{"detail", "type"}},
		{AttestationResult{}, []string{"token"}},
		{TeePubKey{Kty: "EC", Alg: "ECDH-ES+A256KW", Crv: "P-256", X: "x", Y: "y"}, []string{"alg", "crv", "kty", "x", "y"}},
	}
	for _, tt := range tests {
		if got := keys(t, tt.v); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%T members = %v, want %v", tt.v, got, tt.want)
		}
	}
	// A Trustee guest's attestation decodes.
	const trustee = `{"runtime-data":{"nonce":"n","tee-pubkey":{"kty":"EC","crv":"P-256","alg":"ECDH-ES+A256KW","x":"eA","y":"eQ"}},
		"tee-evidence":{"primary_evidence":{"quote":"AA=="},"additional_evidence":""},"init-data":{"format":"toml","body":"x = 1"}}`
	var a Attestation
	if err := json.Unmarshal([]byte(trustee), &a); err != nil {
		t.Fatal(err)
	}
	if a.RuntimeData.TeePubKey.Crv != "P-256" || a.InitData.Format != "toml" || string(a.TeeEvidence.PrimaryEvidence) != `{"quote":"AA=="}` {
		t.Fatalf("decoded %+v", a)
	}
	if SessionCookie != "kbs-session-id" || PathAuth != "/kbs/v0/auth" || PathAttest != "/kbs/v0/attest" || PathResource != "/kbs/v0/resource/" {
		t.Fatal("protocol constants changed")
	}
}
