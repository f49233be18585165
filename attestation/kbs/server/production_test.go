package server_test

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/veil-runtime/veil/attestation/evidence"
	"github.com/veil-runtime/veil/attestation/internal/snptest"
	"github.com/veil-runtime/veil/attestation/kbs"
	"github.com/veil-runtime/veil/attestation/kbs/admin"
	"github.com/veil-runtime/veil/attestation/kbs/server"
	"github.com/veil-runtime/veil/attestation/policy"
	"github.com/veil-runtime/veil/attestation/verify"
)

func (e *env) adminClient() *admin.Client {
	return &admin.Client{URL: e.admin.URL, Token: adminToken, HTTP: e.admin.Client()}
}

// fitPolicy is an attestation and resource policy a production broker
// serves: SNP and TDX pinned, init-data required and pinned.
func fitPolicy() (policy.Attestation, policy.Resources) {
	m := hex.EncodeToString(measurement[:])
	a := policy.Attestation{
		SNP: &policy.SNP{Measurements: []string{m}, MinTCB: &verify.SNPTCB{BootLoader: 1, SNP: 1, Microcode: 1}},
		TDX: &policy.TDX{MRTDs: []string{strings.Repeat("11", 48)}, RTMRs: [4][]string{1: {strings.Repeat("22", 48)}, 2: {strings.Repeat("33", 48)}},
			MinTeeTCBSVN: "03000000000000000000000000000000"},
		RequireInitData: true,
		InitDataDigests: []string{hexDigest(initDoc)},
	}
	r := policy.Resources{Rules: []policy.ResourceRule{{Resource: "default/key/*", Tees: []kbs.Tee{kbs.TeeSNP, kbs.TeeTDX}, Measurements: []string{m}}}}
	return a, r
}

// TestProductionRefusals: a broker not in dev mode refuses, at policy set
// (admin API), every policy a production broker must not serve, one
// refusal per missing piece, each naming it; a dev broker takes the same
// policy.
func TestProductionRefusals(t *testing.T) {
	tests := []struct {
		name string
		// attestation or resource policy change; the other is fitPolicy's
		att      func(*policy.Attestation)
		res      func(*policy.Resources)
		noCollat bool
		want     string
	}{
		{name: "sample section", att: func(a *policy.Attestation) { a.Sample = &policy.Sample{} },
			want: "sample: expected no sample section (software evidence is accepted only by a broker started with --dev)"},
		{name: "sample resource rule", res: func(r *policy.Resources) {
			r.Rules = append(r.Rules, policy.ResourceRule{Resource: "dev/key/*", Tees: []kbs.Tee{kbs.TeeSample}})
		}, want: "resource rule dev/key/* tees: expected snp or tdx only"},
		{name: "snp measurement not pinned", att: func(a *policy.Attestation) { a.SNP.Measurements = nil },
			want: "snp.measurements: expected at least one launch measurement"},
		{name: "snp minimum tcb missing", att: func(a *policy.Attestation) { a.SNP.MinTCB = nil },
			want: "snp.min_tcb: expected the lowest reported TCB accepted"},
		{name: "tdx mrtd not pinned", att: func(a *policy.Attestation) { a.TDX.MRTDs = nil },
			want: "tdx.mrtds: expected at least one MRTD"},
		{name: "tdx rtmr1 not pinned", att: func(a *policy.Attestation) { a.TDX.RTMRs[1] = nil },
			want: "tdx.rtmrs[1]: expected at least one RTMR1 value"},
		{name: "tdx rtmr2 not pinned", att: func(a *policy.Attestation) { a.TDX.RTMRs[2] = nil },
			want: "tdx.rtmrs[2]: expected at least one RTMR2 value"},
		{name: "tdx minimum tcb missing", att: func(a *policy.Attestation) { a.TDX.MinTeeTCBSVN = "" },
			want: "tdx.min_tee_tcb_svn: expected the lowest TEE_TCB_SVN accepted"},
		{name: "tdx without collateral", noCollat: true,
			want: "tdx collateral: expected the broker started with --tdx-collateral (QE identity, TCB info, CRLs), seen none"},
		{name: "init-data not required", att: func(a *policy.Attestation) { a.RequireInitData = false },
			want: "require_init_data: expected true, seen false"},
		{name: "init-data not pinned", att: func(a *policy.Attestation) { a.InitDataDigests = nil },
			want: "resource rule default/key/* init_data_digests: expected pinned init-data digests"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, dev := range []bool{false, true} {
				e := newEnv(t, envOpts{dev: dev, collateral: !tt.noCollat})
				c := e.adminClient()
				ctx := context.Background()
				// Start from an empty store: a fresh broker accepts nothing.
				must(t, e.store.SetAttestationPolicy(policy.Attestation{}))
				must(t, e.store.SetResourcePolicy(policy.Resources{}))
				a, r := fitPolicy()
				if tt.att != nil {
					tt.att(&a)
				}
				if tt.res != nil {
					tt.res(&r)
				}
				// Resource policy first, then the attestation policy: the
				// refusal comes from whichever completes the unfit pair.
				errR := c.SetResourcePolicy(ctx, r)
				errA := c.SetAttestationPolicy(ctx, a)
				if dev {
					if errR != nil || errA != nil {
						t.Fatalf("dev broker refused: %v, %v", errR, errA)
					}
					continue
				}
				err := errA
				if tt.res != nil {
					err = errR
				}
				if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "400") {
					t.Fatalf("policy set = %v\nwant a 400 naming %q", err, tt.want)
				}
				if tt.res == nil {
					if got, _ := e.store.AttestationPolicy(); got.SNP != nil {
						t.Fatalf("refused policy was stored: %+v", got)
					}
				}
				if err := e.srv(t).CheckStore(); err != nil {
					t.Fatalf("store left unfit after a refusal: %v", err)
				}
			}
		})
	}
	t.Run("fit policy accepted", func(t *testing.T) {
		e := newEnv(t, envOpts{collateral: true})
		must(t, e.store.SetAttestationPolicy(policy.Attestation{}))
		a, r := fitPolicy()
		must(t, e.adminClient().SetResourcePolicy(context.Background(), r))
		must(t, e.adminClient().SetAttestationPolicy(context.Background(), a))
	})
}

// srv builds a second server over e's store, with e's options (not in dev
// mode), for CheckStore.
func (e *env) srv(t *testing.T) *server.Server {
	t.Helper()
	s, err := server.New(server.Config{Store: e.store, Verifiers: map[kbs.Tee]verify.Verifier{kbs.TeeTDX: &verify.TDX{Collateral: &verify.Collateral{}}}})
	must(t, err)
	return s
}

// TestCheckStoreAtStart: serve refuses a store whose policy a production
// broker must not serve (here the sample section every test env has),
// naming the store and the piece, unless in dev mode.
func TestCheckStoreAtStart(t *testing.T) {
	e := newEnv(t, envOpts{})
	for _, dev := range []bool{false, true} {
		s, err := server.New(server.Config{Store: e.store, Dev: dev})
		must(t, err)
		err = s.CheckStore()
		if dev != (err == nil) {
			t.Fatalf("dev=%v: CheckStore = %v", dev, err)
		}
		if !dev && (!strings.Contains(err.Error(), e.store.Dir()) || !strings.Contains(err.Error(), "sample: expected no sample section") ||
			!strings.Contains(err.Error(), "snp.min_tcb") || !strings.Contains(err.Error(), "require_init_data")) {
			t.Fatalf("CheckStore = %v", err)
		}
	}
	empty, err := server.OpenStore(t.TempDir())
	must(t, err)
	s, err := server.New(server.Config{Store: empty})
	must(t, err)
	if err := s.CheckStore(); err != nil {
		t.Fatalf("empty store refused: %v", err)
	}
}

// TestListenerSeparation: the public handler serves no admin path and no
// metrics whatever the token; the admin handler serves no protocol path.
func TestListenerSeparation(t *testing.T) {
	e := newEnv(t, envOpts{})
	get := func(ts *httptest.Server, method, path string) (int, string) {
		req, _ := http.NewRequest(method, ts.URL+path, strings.NewReader("{}"))
		req.Header.Set("Authorization", "Bearer "+adminToken)
		resp, err := ts.Client().Do(req)
		must(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, p := range []string{server.AdminPathAttestationPolicy, server.AdminPathResources, server.AdminPathResource + snpResource, server.AdminPathEvidence, server.PathMetrics} {
		if code, body := get(e.ts, "GET", p); code != http.StatusNotFound {
			t.Errorf("public GET %s = %d %s, want 404", p, code, body)
		}
	}
	if code, _ := get(e.ts, "PUT", server.AdminPathAttestationPolicy); code == http.StatusNoContent || code == http.StatusBadRequest {
		t.Errorf("public PUT of the attestation policy reached the admin API: %d", code)
	}
	if code, body := get(e.admin, "GET", server.AdminPathResources); code != http.StatusOK || !strings.Contains(body, snpResource) {
		t.Errorf("admin GET resources = %d %s", code, body)
	}
	if code, _ := get(e.admin, "POST", kbs.PathAuth); code != http.StatusNotFound && code != http.StatusMethodNotAllowed {
		t.Errorf("admin listener served %s: %d", kbs.PathAuth, code)
	}
	for _, ts := range []*httptest.Server{e.ts, e.admin} {
		code, body := get(ts, "GET", server.PathHealth)
		var h server.Health
		if code != http.StatusOK || json.Unmarshal([]byte(body), &h) != nil || h.Status != "ok" {
			t.Errorf("health = %d %s", code, body)
		}
	}
}

// TestSessionLimitPerClient: one client opening sessions in a loop hits
// its own limit (429 naming it) while another client still gets a
// challenge; its sessions free up when their nonces expire.
func TestSessionLimitPerClient(t *testing.T) {
	e := newEnv(t, envOpts{perClient: 3})
	srv, err := server.New(server.Config{Store: e.store, MaxSessionsPerClient: 3, Now: e.clock.Now, Verifiers: map[kbs.Tee]verify.Verifier{kbs.TeeSNP: &verify.SNP{}}})
	must(t, err)
	auth := func(remote string) *httptest.ResponseRecorder {
		body, _ := json.Marshal(kbs.Request{Version: kbs.ProtocolVersion, Tee: kbs.TeeSNP, ExtraParams: json.RawMessage(`""`)})
		req := httptest.NewRequest("POST", kbs.PathAuth, strings.NewReader(string(body)))
		req.RemoteAddr = remote
		w := httptest.NewRecorder()
		srv.ServeHTTP(w, req)
		return w
	}
	for i := range 3 {
		// Other source ports are the same client.
		if w := auth("10.0.0.1:" + string(rune('1'+i)) + "000"); w.Code != http.StatusOK {
			t.Fatalf("session %d: %d %s", i, w.Code, w.Body)
		}
	}
	w := auth("10.0.0.1:5000")
	if w.Code != http.StatusTooManyRequests || !strings.Contains(w.Body.String(), "sessions from 10.0.0.1: expected at most 3 open at once") || w.Header().Get("Retry-After") == "" {
		t.Fatalf("4th session = %d %s, want 429 naming the per-client limit", w.Code, w.Body)
	}
	if w := auth("10.0.0.2:1000"); w.Code != http.StatusOK {
		t.Fatalf("another client locked out: %d %s", w.Code, w.Body)
	}
	// IPv6 clients count by /64.
	for i := range 3 {
		if w := auth("[2001:db8::" + string(rune('1'+i)) + "]:1000"); w.Code != http.StatusOK {
			t.Fatalf("v6 session %d: %d", i, w.Code)
		}
	}
	if w := auth("[2001:db8::99]:1000"); w.Code != http.StatusTooManyRequests || !strings.Contains(w.Body.String(), "2001:db8::/64") {
		t.Fatalf("v6 4th session in the same /64 = %d %s", w.Code, w.Body)
	}
	e.clock.Add(6 * time.Minute)
	if w := auth("10.0.0.1:6000"); w.Code != http.StatusOK {
		t.Fatalf("after the nonces expired: %d %s", w.Code, w.Body)
	}
	// Through the real protocol too: the test env's limit applies to the
	// loopback client.
	r := e.raw(t)
	for range 3 {
		r.auth()
	}
	resp, body := r.do("POST", kbs.PathAuth, kbs.Request{Version: kbs.ProtocolVersion, Tee: kbs.TeeSNP}, nil) //nolint:bodyclose // raw.do read and closed it
	if resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(string(body), "per-client limit") {
		t.Fatalf("4th loopback session = %d %s", resp.StatusCode, body)
	}
}

// TestOperatorVerbs: list, get and delete resources; list and remove
// reference values.
func TestOperatorVerbs(t *testing.T) {
	e := newEnv(t, envOpts{dev: true})
	c := e.adminClient()
	ctx := context.Background()
	list, err := c.Resources(ctx)
	if err != nil || strings.Join(list, ",") != snpResource+","+devResource {
		t.Fatalf("Resources = %v, %v", list, err)
	}
	got, err := c.Resource(ctx, snpResource)
	if err != nil || string(got) != secret {
		t.Fatalf("Resource = %q, %v", got, err)
	}
	must(t, c.DeleteResource(ctx, snpResource))
	if _, err := e.store.Resource(snpResource); err == nil {
		t.Fatal("deleted resource still stored")
	}
	if err := c.DeleteResource(ctx, snpResource); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("deleting a missing resource = %v, want 404", err)
	}
	if _, err := c.Resource(ctx, "default/key/.."); err == nil {
		t.Fatal("bad path read")
	}
	if list, _ := c.Resources(ctx); strings.Join(list, ",") != devResource {
		t.Fatalf("Resources after delete = %v", list)
	}
	p, err := c.AttestationPolicy(ctx)
	must(t, err)
	other := strings.Repeat("ef", 48)
	must(t, admin.AddReference(&p, "snp.measurement", other))
	must(t, admin.AddReference(&p, "tdx.rtmr2", other))
	refs := admin.References(p)
	if len(refs) != 3 || refs[0].Field != "snp.measurement" || refs[2] != (admin.Reference{Field: "tdx.rtmr2", Value: other}) {
		t.Fatalf("References = %v", refs)
	}
	must(t, admin.RemoveReference(&p, "snp.measurement", hex.EncodeToString(measurement[:])))
	if err := admin.RemoveReference(&p, "snp.measurement", strings.Repeat("00", 48)); err == nil || !strings.Contains(err.Error(), "is not one of") {
		t.Fatalf("removing an absent value = %v", err)
	}
	if err := admin.RemoveReference(&p, "tdx.rtmr9", other); err == nil {
		t.Fatal("rtmr9 accepted")
	}
	must(t, c.SetAttestationPolicy(ctx, p))
	got2, _ := e.store.AttestationPolicy()
	if strings.Join(got2.SNP.Measurements, ",") != other {
		t.Fatalf("stored measurements = %v", got2.SNP.Measurements)
	}
}

// TestMetrics: the admin listener's /metrics counts outcomes by reason.
func TestMetrics(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx := context.Background()
	good := e.client(t, evidence.NewSNP(e.snpQuoteProvider(nil), e.log), initDoc)
	if _, err := good.Resource(ctx, snpResource); err != nil {
		t.Fatal(err)
	}
	bad := e.client(t, evidence.NewSNP(e.snpQuoteProvider(func(r *snptest.Report) { r.VMPL = 1 }), e.log), initDoc)
	if _, err := bad.Resource(ctx, snpResource); err == nil {
		t.Fatal("vmpl 1 accepted")
	}
	if _, err := good.Resource(ctx, devResource); err == nil {
		t.Fatal("snp read the dev resource")
	}
	resp, err := e.admin.Client().Get(e.admin.URL + server.PathMetrics)
	must(t, err)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{
		`veil_kbs_auth_total{outcome="ok",tee="snp"} 2`,
		`veil_kbs_attest_total{outcome="ok",tee="snp"} 1`,
		`veil_kbs_attest_total{outcome="policy",tee="snp"} 1`,
		`veil_kbs_attest_violations_total{field="snp.vmpl",tee="snp"} 1`,
		`veil_kbs_resource_total{outcome="ok",tee="snp"} 1`,
		`veil_kbs_resource_total{outcome="policy_deny",tee="snp"} 1`,
		`veil_kbs_sessions 2`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics miss %q", want)
		}
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", body)
	}
}

// TestExplain: the broker records a rejected attestation; explain replays
// it against the policy of now, check by check with expected and seen,
// and after the operator adds the reference value it passes and names
// the resources it would read.
func TestExplain(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx := context.Background()
	other := [48]byte{0xee}
	a := evidence.NewSNP(e.snpQuoteProvider(func(r *snptest.Report) { r.Measurement = other }), e.log)
	if _, err := e.client(t, a, initDoc).Resource(ctx, snpResource); err == nil {
		t.Fatal("unknown measurement accepted")
	}
	c := e.adminClient()
	list, err := c.Evidence(ctx)
	if err != nil || len(list) != 1 || list[0].Client != "127.0.0.1" || list[0].Outcome != "policy" || list[0].Attestation != nil {
		t.Fatalf("Evidence = %+v, %v", list, err)
	}
	rec, err := c.RecordedEvidence(ctx, "127.0.0.1")
	if err != nil || rec.Tee != kbs.TeeSNP || len(rec.Attestation) == 0 {
		t.Fatalf("RecordedEvidence = %+v, %v", rec, err)
	}
	ex, err := c.Explain(ctx, rec)
	must(t, err)
	if ex.Accepted || !strings.Contains(ex.Recorded, "snp.measurement") {
		t.Fatalf("explanation = %+v", ex)
	}
	seen := map[string]policy.Check{}
	for _, ch := range ex.Checks {
		seen[ch.Field] = ch
	}
	m := seen["snp.measurement"]
	if m.OK || m.Seen != hex.EncodeToString(other[:]) || !strings.Contains(m.Expected, hex.EncodeToString(measurement[:])) {
		t.Fatalf("measurement check = %+v", m)
	}
	for _, f := range []string{"runtime-data.nonce", "tee-evidence", "report_data", "snp.host_data", "snp.vmpl", "snp.reported_tcb.microcode"} {
		if ch, ok := seen[f]; !ok || !ch.OK {
			t.Errorf("check %s = %+v, %v; want passed", f, ch, ok)
		}
	}
	p, _ := e.store.AttestationPolicy()
	must(t, admin.AddReference(&p, "snp.measurement", hex.EncodeToString(other[:])))
	must(t, e.store.SetAttestationPolicy(p))
	ex, err = c.Explain(ctx, rec)
	must(t, err)
	if !ex.Accepted || len(ex.Resources) != 2 {
		t.Fatalf("explanation after adding the reference = %+v", ex)
	}
	for _, r := range ex.Resources {
		// The resource rule still pins the old measurement.
		if r.Allowed || !strings.Contains(r.Reason, "measurement") && !strings.Contains(r.Reason, "tee") {
			t.Errorf("resource decision %+v", r)
		}
	}
	// A file of someone else's making: no recorded nonce, bound to its own.
	rec.Nonce, rec.Outcome, rec.Detail, rec.Client = "", "", "", ""
	ex, err = c.Explain(ctx, rec)
	if err != nil || !ex.Accepted {
		t.Fatalf("explain of a file = %+v, %v", ex, err)
	}
	if _, err := c.RecordedEvidence(ctx, "10.9.9.9"); err == nil || !strings.Contains(err.Error(), "no attestation recorded from 10.9.9.9") {
		t.Fatalf("unknown client = %v", err)
	}
}
