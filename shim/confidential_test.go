package shim

import (
	"context"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/veil-runtime/veil/attestation/initdata"
	"github.com/veil-runtime/veil/guest-agent/api"
	"github.com/veil-runtime/veil/hypervisor"
	"github.com/veil-runtime/veil/shim/config"
)

const podInitData = "version = \"0.1.0\"\nalgorithm = \"sha256\"\n\n[broker]\nurl = \"http://10.88.0.1:8080\"\n"
const cocoInitData = "algorithm = \"sha256\"\nversion = \"0.1.0\"\n\n[data]\n\"aa.toml\" = \"[token_configs.kbs]\\nurl = 'http://10.88.0.1:8080'\\n\"\n"
const handlerInitData = "version = \"0.1.0\"\nalgorithm = \"sha256\"\n\n[broker]\nurl = \"https://kbs.example\"\n"

func writeDoc(t *testing.T, doc string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "initdata.toml")
	if err := os.WriteFile(p, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestResolveConfidential(t *testing.T) {
	dir := t.TempDir()
	hdoc := filepath.Join(dir, "initdata.toml")
	if err := os.WriteFile(hdoc, []byte(handlerInitData), 0o644); err != nil {
		t.Fatal(err)
	}
	ann, err := initdata.EncodeAnnotation([]byte(podInitData))
	if err != nil {
		t.Fatal(err)
	}
	badDoc, _ := initdata.EncodeAnnotation([]byte("version = \"0.1.0\"\nalgorithm = \"md5\"\n"))
	annHTTPS, err := initdata.EncodeAnnotation([]byte(handlerInitData))
	if err != nil {
		t.Fatal(err)
	}
	// CoCo documents as Kata's cc_init_data carries them (gzip, base64).
	cocoAnn, _ := initdata.EncodeAnnotation([]byte(cocoInitData))
	cocoRego, _ := initdata.EncodeAnnotation([]byte("version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n\"policy.rego\" = \"package agent_policy\"\n"))
	sample := config.Confidential{TEE: "sample", AllowAnnotationInitData: true, InitData: hdoc}
	tests := []struct {
		name     string
		c        config.Confidential
		ann      map[string]string
		wantNil  bool
		wantDoc  string
		wantArgs []string
		wantErr  string
	}{
		{name: "not confidential", c: config.Confidential{TEE: "none"}, ann: map[string]string{initdata.Annotation: ann}, wantNil: true},
		{name: "annotation wins", c: sample, ann: map[string]string{initdata.Annotation: ann}, wantDoc: podInitData,
			wantArgs: []string{"veil.tee=sample", "veil.initdata_digest=" + hexDigest(podInitData)}},
		{name: "handler default", c: sample, wantDoc: handlerInitData,
			wantArgs: []string{"veil.tee=sample", "veil.initdata_digest=" + hexDigest(handlerInitData)}},
		{name: "no init-data at all", c: config.Confidential{TEE: "sample"}, wantArgs: []string{"veil.tee=sample"}},
		{name: "snp binds in hardware, not on the cmdline", c: config.Confidential{TEE: "snp", Firmware: "/fw", AllowAnnotationInitData: true}, ann: map[string]string{initdata.Annotation: annHTTPS},
			wantDoc: handlerInitData, wantArgs: []string{"veil.tee=snp"}},
		{name: "snp refuses a plain http broker", c: config.Confidential{TEE: "snp", Firmware: "/fw", AllowAnnotationInitData: true}, ann: map[string]string{initdata.Annotation: ann},
			wantErr: `annotation io.veil.initdata: init-data broker.url "http://10.88.0.1:8080": expected https for a snp guest`},
		{name: "tdx refuses a plain http broker in the handler's document", c: config.Confidential{TEE: "tdx", Firmware: "/fw", InitData: writeDoc(t, podInitData)},
			wantErr: "expected https for a tdx guest"},
		{name: "annotation not allowed", c: config.Confidential{TEE: "sample", InitData: hdoc}, ann: map[string]string{initdata.Annotation: ann},
			wantErr: "allow_annotation_initdata = false"},
		{name: "annotation not base64", c: sample, ann: map[string]string{initdata.Annotation: "!!"}, wantErr: "io.veil.initdata base64"},
		{name: "annotation invalid document", c: sample, ann: map[string]string{initdata.Annotation: badDoc}, wantErr: "annotation io.veil.initdata: init-data algorithm"},
		{name: "annotation too large", c: sample, ann: map[string]string{initdata.Annotation: strings.Repeat("A", initdata.MaxAnnotationSize+4)}, wantErr: "the limit is"},
		{name: "coco annotation", c: sample, ann: map[string]string{initdata.CoCoAnnotation: cocoAnn}, wantDoc: cocoInitData,
			wantArgs: []string{"veil.tee=sample", "veil.initdata_digest=" + hexDigest(cocoInitData)}},
		{name: "coco rego policy refused", c: sample, ann: map[string]string{initdata.CoCoAnnotation: cocoRego},
			wantErr: `pod annotation io.katacontainers.config.hypervisor.cc_init_data: init-data data."policy.rego": a Kata agent policy in Rego is not supported`},
		{name: "coco annotation not allowed", c: config.Confidential{TEE: "sample"}, ann: map[string]string{initdata.CoCoAnnotation: cocoAnn},
			wantErr: "pod annotation io.katacontainers.config.hypervisor.cc_init_data: this handler does not accept init-data from pods"},
		{name: "both annotations", c: sample, ann: map[string]string{initdata.Annotation: ann, initdata.CoCoAnnotation: cocoAnn},
			wantErr: "expected one init-data document, seen both"},
		{name: "coco annotation not base64", c: sample, ann: map[string]string{initdata.CoCoAnnotation: "!!"}, wantErr: "io.katacontainers.config.hypervisor.cc_init_data base64"},
		{name: "handler file gone", c: config.Confidential{TEE: "sample", InitData: filepath.Join(dir, "gone.toml")}, wantErr: "confidential.initdata"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := resolveConfidential(tt.c, tt.ann)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			cfg := config.Config{Confidential: tt.c}
			if tt.wantNil {
				if p != nil || cfg.GuestKernelArgs(p.digest()) != nil || cfg.VM(p.digest(), 1, 256).TEE.Kind != "" {
					t.Fatalf("non-confidential pod got %+v", p)
				}
				return
			}
			if string(p.doc) != tt.wantDoc {
				t.Errorf("doc = %q, want %q", p.doc, tt.wantDoc)
			}
			if got := cfg.GuestKernelArgs(p.digest()); !slices.Equal(got, tt.wantArgs) {
				t.Errorf("kernel args = %q, want %q", got, tt.wantArgs)
			}
			tc := cfg.VM(p.digest(), 1, 256).TEE
			if tc.Kind != tt.c.Kind() || hex.EncodeToString(tc.InitDataDigest) != hexDigestOrEmpty(tt.wantDoc) {
				t.Errorf("tee config = %+v", tc)
			}
		})
	}
}

func hexDigest(doc string) string {
	d := initdata.Digest([]byte(doc))
	return hex.EncodeToString(d[:])
}

func hexDigestOrEmpty(doc string) string {
	if doc == "" {
		return ""
	}
	return hexDigest(doc)
}

// fakeAttestation answers SetInitData as a guest agent would, or refuses.
type fakeAttestation struct {
	api.AttestationService
	tee    string
	refuse error
	got    [][]byte
}

func (f *fakeAttestation) SetInitData(_ context.Context, r *api.SetInitDataRequest) (*api.SetInitDataResponse, error) {
	f.got = append(f.got, r.Document)
	if f.refuse != nil {
		return nil, f.refuse
	}
	d := initdata.Digest(r.Document)
	return &api.SetInitDataResponse{Digest: hex.EncodeToString(d[:]), Tee: f.tee}, nil
}

func TestSetInitData(t *testing.T) {
	p := &confidentialPod{tee: hypervisor.TEESample, doc: []byte(podInitData), source: "annotation"}
	a := &fakeAttestation{tee: "sample"}
	if err := p.setInitData(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	if len(a.got) != 1 || string(a.got[0]) != podInitData {
		t.Fatalf("agent got %q", a.got)
	}
	// The agent's refusal fails the pod with the agent's reason.
	refusing := &fakeAttestation{tee: "sample", refuse: errors.New("init-data: sample bound init-data is 00, the document received hashes to ff: the host changed the document")}
	if err := p.setInitData(context.Background(), refusing); err == nil || !strings.Contains(err.Error(), "the host changed the document") {
		t.Fatalf("refusal: %v", err)
	}
	// An agent in another TEE than launched is an error.
	if err := p.setInitData(context.Background(), &fakeAttestation{tee: "none"}); err == nil || !strings.Contains(err.Error(), `TEE "none"`) {
		t.Fatalf("wrong tee: %v", err)
	}
	// A non-confidential pod calls nothing.
	var none *confidentialPod
	if err := none.setInitData(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
}

func TestGuestShareDir(t *testing.T) {
	doc := func(policy string) *confidentialPod {
		return &confidentialPod{tee: "sample", doc: []byte("version = \"0.1.0\"\nalgorithm = \"sha256\"\n\n[agent]\npolicy = '''\n" + policy + "'''\n")}
	}
	no := false
	for _, tc := range []struct {
		name string
		c    config.Confidential
		p    *confidentialPod
		want string
	}{
		{"veil shares", config.Confidential{TEE: "none"}, nil, "/s"},
		{"guest pull, default policy: nothing shared", config.Confidential{TEE: "sample"}, doc(""), ""},
		{"guest pull, no init-data: nothing shared", config.Confidential{TEE: "sample"}, &confidentialPod{tee: "sample"}, ""},
		{"guest pull, allow_host_mounts: shared", config.Confidential{TEE: "sample"}, doc("allow_host_mounts = true\n"), "/s"},
		{"host rootfs (guest_pull = false): shared", config.Confidential{TEE: "sample", GuestPull: &no}, doc(""), "/s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := guestShareDir("/s", tc.c, tc.p); got != tc.want {
				t.Errorf("guestShareDir = %q, want %q", got, tc.want)
			}
		})
	}
}
