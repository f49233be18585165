package attest

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/veil-runtime/veil/attestation/evidence"
	"github.com/veil-runtime/veil/attestation/initdata"
	"github.com/veil-runtime/veil/attestation/kbs"
	"github.com/veil-runtime/veil/attestation/kbs/server"
	"github.com/veil-runtime/veil/attestation/policy"
	"github.com/veil-runtime/veil/guest-agent/api"
)

func doc(broker, agentPolicy string) []byte {
	s := "version = \"0.1.0\"\nalgorithm = \"sha256\"\n"
	if broker != "" {
		s += "\n[broker]\nurl = \"" + broker + "\"\n"
	}
	if agentPolicy != "" {
		s += "\n[agent]\npolicy = '''\n" + agentPolicy + "'''\n"
	}
	return []byte(s)
}

func sampleParams(d []byte) map[string]string {
	sum := initdata.Digest(d)
	return map[string]string{TEEParam: Sample, InitDataDigestParam: hex.EncodeToString(sum[:])}
}

func TestNew(t *testing.T) {
	tests := []struct {
		name       string
		cfg        Config
		wantTEE    string
		wantConf   bool
		wantLocked string
		wantErr    string
	}{
		{name: "ordinary pod", cfg: Config{Params: map[string]string{}}, wantTEE: None},
		{name: "explicit none", cfg: Config{Params: map[string]string{TEEParam: "none"}}, wantTEE: None},
		{name: "sample", cfg: Config{Params: sampleParams([]byte("x"))}, wantTEE: Sample, wantConf: true},
		{name: "sample without init-data", cfg: Config{Params: map[string]string{TEEParam: Sample}}, wantTEE: Sample, wantConf: true},
		{name: "sample with a bad digest", cfg: Config{Params: map[string]string{TEEParam: Sample, InitDataDigestParam: "abc"}}, wantErr: "veil.initdata_digest"},
		{name: "unknown tee", cfg: Config{Params: map[string]string{TEEParam: "sgx"}}, wantErr: `veil.tee="sgx"`},
		{name: "snp without hardware locks down", cfg: Config{Params: map[string]string{TEEParam: SNP},
			Detect: func() (evidence.Attester, error) { return nil, errors.New("no TEE found") }},
			wantTEE: SNP, wantConf: true, wantLocked: "launched as snp, but: no TEE found"},
		{name: "tdx without its device locks down", cfg: Config{Params: map[string]string{TEEParam: TDX},
			Detect: func() (evidence.Attester, error) { return nil, errors.New("no /dev/tdx_guest") }},
			wantTEE: TDX, wantConf: true, wantLocked: "launched as tdx, but: no /dev/tdx_guest"},
		{name: "snp launch, another tee found", cfg: Config{Params: map[string]string{TEEParam: SNP},
			Detect: func() (evidence.Attester, error) { return evidence.NewSample(nil, slog.New(slog.DiscardHandler)), nil }},
			wantTEE: SNP, wantConf: true, wantLocked: "the guest runs in sample"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(tt.cfg)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.TEE() != tt.wantTEE || s.Enforcer().Confidential() != tt.wantConf {
				t.Fatalf("tee %s confidential %v", s.TEE(), s.Enforcer().Confidential())
			}
			if got := s.Enforcer().Locked(); !strings.Contains(got, tt.wantLocked) || (tt.wantLocked == "" && got != "") {
				t.Fatalf("locked %q, want %q", got, tt.wantLocked)
			}
		})
	}
}

func TestSetInitData(t *testing.T) {
	good := doc("http://127.0.0.1:1", "allow_exec = true\nallow_host_share = true\n")
	swapped := doc("http://evil.example:1", "allow_exec = true\nallow_host_share = true\nallow_read_output = true\n")

	t.Run("matching document installs its policy", func(t *testing.T) {
		s, _ := New(Config{Params: sampleParams(good)})
		d, err := s.SetInitData(context.Background(), good)
		if err != nil || d != initdata.Digest(good) {
			t.Fatalf("SetInitData = %x, %v", d, err)
		}
		share := &api.CreateSandboxRequest{Storages: []*api.Storage{{Driver: "9p", Source: "veilshare"}}}
		if err := s.Enforcer().Decide("/veil.agent.v1.Sandbox/CreateSandbox", share); err != nil {
			t.Fatalf("host share denied under a policy that allows it: %v", err)
		}
		if err := s.Enforcer().Decide("/veil.agent.v1.Process/ReadStdout", nil); err == nil {
			t.Fatal("output reading allowed; the policy does not allow it")
		}
		if _, err := s.SetInitData(context.Background(), good); err == nil || !strings.Contains(err.Error(), "already set") {
			t.Fatalf("second SetInitData: %v", err)
		}
	})
	t.Run("swapped document is refused and locks the agent", func(t *testing.T) {
		s, _ := New(Config{Params: sampleParams(good)})
		_, err := s.SetInitData(context.Background(), swapped)
		if err == nil || !strings.Contains(err.Error(), "the host changed the document") {
			t.Fatalf("SetInitData(swapped) = %v", err)
		}
		if err := s.Enforcer().Decide("/veil.agent.v1.Sandbox/CreateSandbox", nil); err == nil || !strings.Contains(err.Error(), "locked down") {
			t.Fatalf("after the refusal CreateSandbox: %v", err)
		}
		if _, err := s.SetInitData(context.Background(), good); err == nil || !strings.Contains(err.Error(), "locked down") {
			t.Fatalf("retry with the right document after lockdown: %v", err)
		}
	})
	t.Run("document where none was bound", func(t *testing.T) {
		s, _ := New(Config{Params: map[string]string{TEEParam: Sample}})
		if _, err := s.SetInitData(context.Background(), good); err == nil || !strings.Contains(err.Error(), "the host changed the document") {
			t.Fatalf("SetInitData = %v", err)
		}
	})
	t.Run("no document, none bound: default policy", func(t *testing.T) {
		s, _ := New(Config{Params: map[string]string{TEEParam: Sample}})
		if _, err := s.SetInitData(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
		if err := s.Enforcer().Decide("/veil.agent.v1.Process/ExecProcess", nil); err == nil || !strings.Contains(err.Error(), "allow_exec") {
			t.Fatalf("exec under the default policy: %v", err)
		}
	})
	t.Run("bad agent policy locks", func(t *testing.T) {
		bad := doc("", "allow_all = true\n")
		s, _ := New(Config{Params: sampleParams(bad)})
		if _, err := s.SetInitData(context.Background(), bad); err == nil || !strings.Contains(err.Error(), "unknown rules allow_all") {
			t.Fatalf("SetInitData = %v", err)
		}
		if s.Enforcer().Locked() == "" {
			t.Fatal("not locked")
		}
	})
	t.Run("hardware guest refuses a plain http broker", func(t *testing.T) {
		d := initdata.Digest(good)
		s, err := New(Config{Params: map[string]string{TEEParam: SNP},
			Detect: func() (evidence.Attester, error) { return boundAttester{tee: kbs.TeeSNP, bound: d[:]}, nil }})
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.SetInitData(context.Background(), good)
		if err == nil || !strings.Contains(err.Error(), `init-data broker.url "http://127.0.0.1:1": expected https for a snp guest`) {
			t.Fatalf("SetInitData = %v", err)
		}
		if s.Enforcer().Locked() == "" {
			t.Fatal("not locked")
		}
		tls := doc("https://127.0.0.1:1", "")
		d = initdata.Digest(tls)
		s, _ = New(Config{Params: map[string]string{TEEParam: SNP},
			Detect: func() (evidence.Attester, error) { return boundAttester{tee: kbs.TeeSNP, bound: d[:]}, nil }})
		if _, err := s.SetInitData(context.Background(), tls); err != nil {
			t.Fatalf("SetInitData with an https broker: %v", err)
		}
	})
	t.Run("ordinary pod accepts anything", func(t *testing.T) {
		s, _ := New(Config{Params: map[string]string{}})
		if _, err := s.SetInitData(context.Background(), swapped); err != nil {
			t.Fatal(err)
		}
	})
}

// boundAttester is a hardware attester whose launch bound a given
// init-data digest; it produces no evidence.
type boundAttester struct {
	evidence.Attester
	tee   kbs.Tee
	bound []byte
}

func (b boundAttester) Tee() kbs.Tee                                  { return b.tee }
func (b boundAttester) BoundInitData(context.Context) ([]byte, error) { return b.bound, nil }

// TestAttestToVeilKBS runs the agent's Attest against a real in-process
// veil-kbs in dev mode (sample evidence is accepted only there).
func TestAttestToVeilKBS(t *testing.T) {
	store, err := server.OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := store.SetAttestationPolicy(policy.Attestation{Sample: &policy.Sample{}, RequireInitData: true}); err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Config{Store: store, Dev: true})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	defer ts.Close()

	d := doc(ts.URL, "")
	s, _ := New(Config{Params: sampleParams(d)})
	if _, err := s.Attest(context.Background()); err == nil || !strings.Contains(err.Error(), "SetInitData first") {
		t.Fatalf("Attest before init-data: %v", err)
	}
	if _, err := s.SetInitData(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	res, err := s.Attest(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := json.Unmarshal(res.Claims, &claims); err != nil {
		t.Fatal(err)
	}
	sum := initdata.Digest(d)
	if res.Broker != ts.URL || claims["tee"] != string(kbs.TeeSample) || claims["init_data_digest"] != hex.EncodeToString(sum[:]) {
		t.Fatalf("attestation %s claims %v", res.Broker, claims)
	}
	if _, ok := claims["insecure"]; !ok {
		t.Fatalf("sample claims without the insecure marker: %v", claims)
	}
}

// TestResourceFromVeilKBS fetches broker resources the way the Image
// service does (layer keys, registry credentials): from a real in-process
// veil-kbs in dev mode, attesting on first use, only what the broker's
// resource policy grants.
func TestResourceFromVeilKBS(t *testing.T) {
	store, err := server.OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := store.SetAttestationPolicy(policy.Attestation{Sample: &policy.Sample{}, RequireInitData: true}); err != nil {
		t.Fatal(err)
	}
	if err := store.SetResourcePolicy(policy.Resources{Rules: []policy.ResourceRule{{Resource: "default/image-key/*", Tees: []kbs.Tee{kbs.TeeSample}}}}); err != nil {
		t.Fatal(err)
	}
	if err := store.SetResource("default/image-key/app", []byte("private key")); err != nil {
		t.Fatal(err)
	}
	if err := store.SetResource("default/credentials/registry", []byte("secret")); err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Config{Store: store, Dev: true})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	defer ts.Close()

	d := []byte(string(doc(ts.URL, "")) + `
[image]
policy = '{"default": [{"type": "insecureAcceptAnything"}]}'
keys = ["kbs:///default/image-key/app"]
registry_auth = "kbs:///default/credentials/registry"

[image.mirrors]
"docker.io" = ["mirror.example:5000"]
`)
	s, _ := New(Config{Params: sampleParams(d)})
	ctx := context.Background()
	if _, err := s.Resource(ctx, "kbs:///default/image-key/app"); err == nil || !strings.Contains(err.Error(), "SetInitData first") {
		t.Fatalf("Resource before init-data: %v", err)
	}
	if s.ImagePolicy() != "" || s.ImageKeys() != nil {
		t.Fatal("image settings before init-data")
	}
	if _, err := s.SetInitData(ctx, d); err != nil {
		t.Fatal(err)
	}
	if got := s.ImagePolicy(); !strings.Contains(got, "insecureAcceptAnything") {
		t.Fatalf("ImagePolicy = %q", got)
	}
	if got := s.ImageKeys(); len(got) != 1 || got[0] != "kbs:///default/image-key/app" {
		t.Fatalf("ImageKeys = %q", got)
	}
	auth, mirrors, _ := s.ImageRegistry()
	if auth != "kbs:///default/credentials/registry" || mirrors["docker.io"][0] != "mirror.example:5000" {
		t.Fatalf("ImageRegistry = %q %v", auth, mirrors)
	}

	key, err := s.Resource(ctx, "kbs:///default/image-key/app")
	if err != nil || string(key) != "private key" {
		t.Fatalf("Resource = %q, %v", key, err)
	}
	// Not granted by the resource policy: the broker's refusal is the error.
	if _, err := s.Resource(ctx, "kbs:///default/credentials/registry"); err == nil || !strings.Contains(err.Error(), "broker refused resource default/credentials/registry") {
		t.Fatalf("Resource(denied) = %v", err)
	}
	if _, err := s.Resource(ctx, "kbs://evil.example:1/default/image-key/app"); err == nil || !strings.Contains(err.Error(), `names broker "evil.example:1"`) {
		t.Fatalf("Resource(other broker) = %v", err)
	}
}

func TestResourceWithoutBroker(t *testing.T) {
	ctx := context.Background()
	plain, _ := New(Config{Params: map[string]string{}})
	if _, err := plain.Resource(ctx, "kbs:///a/b/c"); err == nil || !strings.Contains(err.Error(), "no TEE to attest") {
		t.Fatalf("ordinary pod Resource = %v", err)
	}
	s, _ := New(Config{Params: map[string]string{TEEParam: Sample}})
	if _, err := s.SetInitData(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Resource(ctx, "kbs:///a/b/c"); err == nil || !strings.Contains(err.Error(), "no init-data, so no broker") {
		t.Fatalf("Resource without init-data = %v", err)
	}
}
