package admin

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/veil-runtime/veil/attestation/kbs"
	"github.com/veil-runtime/veil/attestation/kbs/server"
	"github.com/veil-runtime/veil/attestation/policy"
)

func TestAddReference(t *testing.T) {
	h48 := strings.Repeat("ab", 48)
	tests := []struct {
		field, value string
		check        func(policy.Attestation) bool
		wantErr      string
	}{
		{"snp.measurement", strings.ToUpper(h48), func(p policy.Attestation) bool { return p.SNP.Measurements[0] == h48 }, ""},
		{"tdx.mrtd", h48, func(p policy.Attestation) bool { return p.TDX.MRTDs[0] == h48 }, ""},
		{"tdx.rtmr2", h48, func(p policy.Attestation) bool { return p.TDX.RTMRs[2][0] == h48 }, ""},
		{"init-data", strings.Repeat("01", 32), func(p policy.Attestation) bool { return len(p.InitDataDigests) == 1 }, ""},
		{"snp.measurement", "abcd", nil, "want 48"},
		{"snp.measurement", "xyz", nil, "not hex"},
		{"sgx.mrenclave", h48, nil, "reference field"},
	}
	for _, tt := range tests {
		var p policy.Attestation
		err := AddReference(&p, tt.field, tt.value)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("AddReference(%s, %s) error = %v, want %q", tt.field, tt.value, err, tt.wantErr)
			}
			continue
		}
		if err != nil || !tt.check(p) {
			t.Errorf("AddReference(%s) = %+v, %v", tt.field, p, err)
		}
		// Adding twice keeps one copy.
		if err := AddReference(&p, tt.field, tt.value); err != nil {
			t.Fatal(err)
		}
		if tt.field == "snp.measurement" && len(p.SNP.Measurements) != 1 {
			t.Errorf("duplicate reference value added")
		}
	}
}

func TestClientAgainstServer(t *testing.T) {
	store, err := server.OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tok, err := server.AdminToken(store.AdminTokenPath())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Config{Store: store, AdminToken: tok, Dev: true})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Admin())
	defer ts.Close()
	ctx := context.Background()
	c := &Client{URL: ts.URL, Token: tok}
	p, err := c.AttestationPolicy(ctx)
	if err != nil || p.SNP != nil {
		t.Fatalf("empty policy = %+v, %v", p, err)
	}
	if err := AddReference(&p, "snp.measurement", strings.Repeat("00", 48)); err != nil {
		t.Fatal(err)
	}
	if err := c.SetAttestationPolicy(ctx, p); err != nil {
		t.Fatal(err)
	}
	if got, _ := store.AttestationPolicy(); got.SNP == nil || len(got.SNP.Measurements) != 1 {
		t.Fatalf("stored policy = %+v", got)
	}
	rp := policy.Resources{Rules: []policy.ResourceRule{{Resource: "default/key/*", Tees: []kbs.Tee{kbs.TeeSNP}}}}
	if err := c.SetResourcePolicy(ctx, rp); err != nil {
		t.Fatal(err)
	}
	if got, err := c.ResourcePolicy(ctx); err != nil || len(got.Rules) != 1 {
		t.Fatalf("resource policy = %+v, %v", got, err)
	}
	if err := c.SetResource(ctx, "default/key/k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := c.SetResource(ctx, "../x/y", []byte("v")); err == nil {
		t.Fatal("path traversal accepted")
	}
	bad := &Client{URL: ts.URL, Token: "wrong-token-wrong-token"}
	if err := bad.SetResource(ctx, "default/key/k", []byte("evil")); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("wrong token: %v", err)
	}
	if got, _ := store.Resource("default/key/k"); string(got) != "v" {
		t.Fatalf("resource = %q", got)
	}
	// The admin token and the token key persist.
	tok2, err := server.AdminToken(store.AdminTokenPath())
	if err != nil || tok2 != tok {
		t.Fatalf("admin token changed: %v", err)
	}
	k1, err := store.TokenKey()
	if err != nil {
		t.Fatal(err)
	}
	k2, err := store.TokenKey()
	if err != nil || !k1.Equal(k2) {
		t.Fatalf("token key not persisted: %v", err)
	}
}
