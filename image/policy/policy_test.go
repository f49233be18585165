package policy

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	sgsign "github.com/sigstore/sigstore-go/pkg/sign"
	"google.golang.org/protobuf/encoding/protojson"
)

func mustRef(t testing.TB, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestScopes(t *testing.T) {
	got := Scopes(mustRef(t, "reg.example.com/ns/app:1.0"))
	want := []string{"reg.example.com/ns/app:1.0", "reg.example.com/ns/app", "reg.example.com/ns", "reg.example.com", "*.example.com", "*.com"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Scopes = %q, want %q", got, want)
	}
	got = Scopes(mustRef(t, "busybox"))
	want = []string{"docker.io/library/busybox:latest", "docker.io/library/busybox", "docker.io/library", "docker.io", "*.io"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Scopes(busybox) = %q, want %q", got, want)
	}
	got = Scopes(mustRef(t, "127.0.0.1:5000/app@sha256:"+strings.Repeat("a", 64)))
	want = []string{"127.0.0.1:5000/app@sha256:" + strings.Repeat("a", 64), "127.0.0.1:5000/app", "127.0.0.1:5000"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Scopes(port) = %q, want %q", got, want)
	}
}

func TestForMostSpecificScope(t *testing.T) {
	p, err := Parse([]byte(`{
		"default": [{"type": "reject"}],
		"transports": {"docker": {
			"": [{"type": "insecureAcceptAnything"}],
			"reg.example.com": [{"type": "reject"}],
			"reg.example.com/ns/app": [{"type": "sigstoreSigned", "keyPath": "kbs:///default/cosign/key"}],
			"reg.example.com/ns/app:dev": [{"type": "insecureAcceptAnything"}],
			"*.internal.example.com": [{"type": "reject"}]
		}}}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ ref, scope, typ string }{
		{"reg.example.com/ns/app:1.0", "reg.example.com/ns/app", TypeSigstore},
		{"reg.example.com/ns/app:dev", "reg.example.com/ns/app:dev", TypeAccept},
		{"reg.example.com/other:1", "reg.example.com", TypeReject},
		{"a.internal.example.com/x:1", "*.internal.example.com", TypeReject},
		{"quay.io/x:1", "", TypeAccept},
	} {
		scope, reqs := p.For(mustRef(t, tc.ref))
		if scope != tc.scope || reqs[0].Type != tc.typ {
			t.Errorf("For(%s) = %q %s, want %q %s", tc.ref, scope, reqs[0].Type, tc.scope, tc.typ)
		}
	}
	p2, _ := Parse([]byte(`{"default": [{"type": "reject"}]}`))
	if scope, reqs := p2.For(mustRef(t, "x/y")); scope != "default" || reqs[0].Type != TypeReject {
		t.Errorf("global default not used: %q %v", scope, reqs)
	}
}

func TestParseErrors(t *testing.T) {
	for doc, want := range map[string]string{
		`{}`:                                `"default" must list`,
		`{"default": [{"type": "accept"}]}`: `unknown requirement type "accept"`,
		`{"default": [{"type": "reject"}], "extra": 1}`:                                                          `unknown field "extra"`,
		`{"default": [{"type": "sigstoreSigned"}]}`:                                                              `exactly one of keyPath`,
		`{"default": [{"type": "sigstoreSigned", "keyPath": "k", "fulcio": {}}]}`:                                `fulcio/rekor verification (keyless signatures, transparency-log checks) is not supported in the guest`,
		`{"default": [{"type": "reject"}], "transports": {"docker": {"r.io": []}}}`:                              `transports.docker["r.io"] lists no requirement`,
		`{"default": [{"type": "sigstoreSigned", "keyPath": "k", "signedIdentity": {"type": "remapIdentity"}}]}`: `signedIdentity type "remapIdentity" is not supported`,
	} {
		_, err := Parse([]byte(doc))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%s) = %v, want error containing %q", doc, err, want)
		}
	}
}

func TestMatchIdentity(t *testing.T) {
	dig := "reg.io/ns/app@sha256:" + strings.Repeat("b", 64)
	for _, tc := range []struct {
		id     *Identity
		ref    string
		signed string
		ok     bool
	}{
		{nil, dig, "reg.io/ns/app", true},
		{nil, dig, "reg.io/ns/other", false},
		{nil, "reg.io/ns/app:1", "reg.io/ns/app:1", true},
		{nil, "reg.io/ns/app:1", "reg.io/ns/app", false},
		{&Identity{Type: MatchRepository}, "reg.io/ns/app:1", "reg.io/ns/app", true},
		{&Identity{Type: MatchRepository}, "reg.io/ns/app:1", "evil.io/ns/app", false},
		{&Identity{Type: MatchExact}, "reg.io/ns/app:1", "reg.io/ns/app:2", false},
		{&Identity{Type: ExactReference, DockerReference: "reg.io/ns/app:prod"}, "mirror.io/ns/app:1", "reg.io/ns/app:prod", true},
		{&Identity{Type: ExactRepository, DockerRepository: "reg.io/ns/app"}, "mirror.io/ns/app:1", "reg.io/ns/app", true},
		{&Identity{Type: ExactRepository, DockerRepository: "reg.io/ns/app"}, "mirror.io/ns/app:1", "mirror.io/ns/app", false},
		{&Identity{Type: MatchRepository}, "busybox:1", "index.docker.io/library/busybox", true},
	} {
		err := MatchIdentity(tc.id, mustRef(t, tc.ref), tc.signed)
		if (err == nil) != tc.ok {
			t.Errorf("MatchIdentity(%v, %s, %s) = %v, want ok=%v", tc.id, tc.ref, tc.signed, err, tc.ok)
		}
	}
}

type keys map[string][]byte

func (k keys) Key(_ context.Context, uri string) ([]byte, error) {
	if b, ok := k[uri]; ok {
		return b, nil
	}
	return nil, fmt.Errorf("resource %s denied by the broker", uri)
}

func pemPub(t *testing.T, pub any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func payloadFor(repo, digest string) []byte {
	var p Payload
	p.Critical.Identity.DockerReference = repo
	p.Critical.Image.DockerManifestDigest = digest
	p.Critical.Type = payloadType
	b, _ := json.Marshal(p)
	return b
}

func TestCheckSigstore(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	edPub, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	digest := "sha256:" + strings.Repeat("c", 64)
	ref := mustRef(t, "reg.io/ns/app:1")
	signEC := func(k *ecdsa.PrivateKey, payload []byte) Signature {
		h := sha256.Sum256(payload)
		sig, err := ecdsa.SignASN1(rand.Reader, k, h[:])
		if err != nil {
			t.Fatal(err)
		}
		return Signature{Payload: payload, Signature: sig}
	}
	good := payloadFor("reg.io/ns/app", digest)
	fetcher := keys{"kbs:///default/cosign/ec": pemPub(t, &ec.PublicKey), "kbs:///default/cosign/ed": pemPub(t, edPub)}
	doc := func(key string) *Policy {
		p, err := Parse([]byte(`{"default": [{"type": "sigstoreSigned", "keyPath": "` + key + `", "signedIdentity": {"type": "matchRepository"}}]}`))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name string
		key  string
		sigs []Signature
		want string // "" = accepted
	}{
		{"ecdsa signed", "kbs:///default/cosign/ec", []Signature{signEC(ec, good)}, ""},
		{"ed25519 signed", "kbs:///default/cosign/ed", []Signature{{Payload: good, Signature: ed25519.Sign(edPriv, good)}}, ""},
		{"one of two valid", "kbs:///default/cosign/ec", []Signature{signEC(other, good), signEC(ec, good)}, ""},
		{"unsigned", "kbs:///default/cosign/ec", nil, "no sigstore signature found"},
		{"other key", "kbs:///default/cosign/ec", []Signature{signEC(other, good)}, "not signed by the policy's key"},
		{"other digest", "kbs:///default/cosign/ec", []Signature{signEC(ec, payloadFor("reg.io/ns/app", "sha256:"+strings.Repeat("d", 64)))}, "signature is for manifest"},
		{"other repository", "kbs:///default/cosign/ec", []Signature{signEC(ec, payloadFor("reg.io/ns/evil", digest))}, "not in repository"},
		{"tampered payload", "kbs:///default/cosign/ec", []Signature{func() Signature {
			s := signEC(ec, good)
			s.Payload = append([]byte(nil), good...)
			s.Payload[5] ^= 1
			return s
		}()}, "not signed by the policy's key"},
		{"key denied", "kbs:///default/cosign/missing", []Signature{signEC(ec, good)}, "denied by the broker"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := Image{Ref: ref, Digest: digest, Signatures: func(context.Context) ([]Signature, error) { return tc.sigs, nil }}
			err := doc(tc.key).Check(context.Background(), img, fetcher)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Check = %v, want accepted", err)
				}
				return
			}
			if !errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Check = %v, want rejection containing %q", err, tc.want)
			}
		})
	}
}

func TestCheckRejectAndSignedBy(t *testing.T) {
	for doc, want := range map[string]string{
		`{"default": [{"type": "insecureAcceptAnything"}], "transports": {"docker": {"reg.io/ns": [{"type": "reject"}]}}}`: `transports.docker["reg.io/ns"][0] reject rejects it`,
		`{"default": [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/k.gpg"}]}`:                                   `GPG signatures (signedBy) are not supported`,
		`{"default": [{"type": "insecureAcceptAnything"}, {"type": "reject"}]}`:                                            `default[1] reject rejects it`,
	} {
		p, err := Parse([]byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		err = p.Check(context.Background(), Image{Ref: mustRef(t, "reg.io/ns/app:1"), Digest: "sha256:" + strings.Repeat("e", 64)}, nil)
		if !errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: Check = %v, want %q", doc, err, want)
		}
	}
	p, _ := Parse([]byte(`{"default": [{"type": "insecureAcceptAnything"}]}`))
	if err := p.Check(context.Background(), Image{Ref: mustRef(t, "reg.io/ns/app:1")}, nil); err != nil {
		t.Errorf("insecureAcceptAnything: %v", err)
	}
}

// TestRequireSigned: with decryption keys, the scopes an image falls into
// without being named must require a signature (or reject); named scopes
// may accept unsigned images explicitly.
func TestRequireSigned(t *testing.T) {
	for _, tc := range []struct {
		name, doc, want string // want "" = allowed
	}{
		{"default accepts", `{"default": [{"type": "insecureAcceptAnything"}]}`, `default accepts images without a signature (insecureAcceptAnything)`},
		{"default signed", `{"default": [{"type": "sigstoreSigned", "keyPath": "kbs:///k"}]}`, ""},
		{"default rejects, named scope accepts", `{"default": [{"type": "reject"}], "transports": {"docker": {"reg.io/ns/public": [{"type": "insecureAcceptAnything"}]}}}`, ""},
		{"transport default accepts", `{"default": [{"type": "reject"}], "transports": {"docker": {"": [{"type": "insecureAcceptAnything"}]}}}`, `transports.docker[""] accepts images without a signature`},
		{"transport default signed, global default unused", `{"default": [{"type": "insecureAcceptAnything"}], "transports": {"docker": {"": [{"type": "sigstoreSigned", "keyData": "eA=="}]}}}`, ""},
		{"accept then signed", `{"default": [{"type": "insecureAcceptAnything"}, {"type": "sigstoreSigned", "keyPath": "kbs:///k"}]}`, ""},
	} {
		p, err := Parse([]byte(tc.doc))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		err = p.RequireSigned()
		if tc.want == "" {
			if err != nil {
				t.Errorf("%s: %v, want allowed", tc.name, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "[image] keys") {
			t.Errorf("%s: %v, want %q naming [image] keys", tc.name, err, tc.want)
		}
	}
}

// TestBundleForms: bundles made by sigstore-go's signer with an ephemeral
// key, checked by the guest's verifier directly: a message signature over
// the manifest (the artifact's digest is the image digest) and a DSSE
// statement pass; the shapes a Sigstore bundle may not have are refused
// naming what is wrong.
func TestBundleForms(t *testing.T) {
	kp, err := sgsign.NewEphemeralKeypair(nil)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM, err := kp.GetPublicKeyPem()
	if err != nil {
		t.Fatal(err)
	}
	manifest := []byte(`{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json"}`)
	sum := sha256.Sum256(manifest)
	digest := fmt.Sprintf("sha256:%x", sum)
	ref := mustRef(t, "reg.io/ns/app:1")
	mk := func(c sgsign.Content) []byte {
		pb, err := sgsign.Bundle(c, kp, sgsign.BundleOptions{})
		if err != nil {
			t.Fatal(err)
		}
		b, err := protojson.Marshal(pb)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	stmt := func(digestHex, predicate, typ string) []byte {
		b, _ := json.Marshal(map[string]any{"_type": typ, "subject": []any{map[string]any{"digest": map[string]string{"sha256": digestHex}}}, "predicateType": predicate, "predicate": map[string]any{}})
		return b
	}
	edit := func(b []byte, fn func(map[string]any)) []byte {
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		fn(m)
		out, _ := json.Marshal(m)
		return out
	}
	hexd := digest[len("sha256:"):]
	dsse := mk(&sgsign.DSSEData{Data: stmt(hexd, PredicateCosignSign, statementV1), PayloadType: payloadTypeInToto})
	p, err := Parse([]byte(`{"default": [{"type": "sigstoreSigned", "keyData": ` + keyDataJSON(pubPEM) + `}]}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		bundle []byte
		want   string // "" = accepted
	}{
		{"message signature over the manifest", mk(&sgsign.PlainData{Data: manifest}), ""},
		{"message signature over another manifest", mk(&sgsign.PlainData{Data: append(manifest, ' ')}), "message signature is over SHA2_256:"},
		{"DSSE statement", dsse, ""},
		{"DSSE statement v0.1", mk(&sgsign.DSSEData{Data: stmt(hexd, PredicateCosignSign, statementV01), PayloadType: payloadTypeInToto}), ""},
		{"not an in-toto statement", mk(&sgsign.DSSEData{Data: stmt(hexd, PredicateCosignSign, "x"), PayloadType: payloadTypeInToto}), `not an in-toto statement (_type "x")`},
		{"other payload type", mk(&sgsign.DSSEData{Data: stmt(hexd, PredicateCosignSign, statementV1), PayloadType: "text/plain"}), `DSSE payload type is "text/plain"`},
		{"two signatures", edit(dsse, func(m map[string]any) {
			env := m["dsseEnvelope"].(map[string]any)
			sigs := env["signatures"].([]any)
			env["signatures"] = append(sigs, sigs[0])
		}), "DSSE envelope has 2 signatures"},
		{"old media type spelling", edit(dsse, func(m map[string]any) { m["mediaType"] = "application/vnd.dev.sigstore.bundle+json;version=0.2" }), ""},
		{"unknown media type", edit(dsse, func(m map[string]any) { m["mediaType"] = "application/json" }), `bundle media type "application/json" is not a Sigstore bundle`},
		{"no content", edit(dsse, func(m map[string]any) { delete(m, "dsseEnvelope") }), "neither a DSSE envelope nor a message signature"},
		{"not JSON", []byte("{"), "parsing bundle"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := Image{Ref: ref, Digest: digest, Bundles: func(context.Context) ([]Bundle, error) {
				return []Bundle{{Source: "sha256:referrer", JSON: tc.bundle}}, nil
			}}
			err := p.Check(context.Background(), img, nil)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Check = %v, want accepted", err)
				}
				return
			}
			if !errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "bundle sha256:referrer") {
				t.Fatalf("Check = %v, want a rejection naming the bundle and %q", err, tc.want)
			}
		})
	}
}

// keyDataJSON is pem as policy keyData (base64 in JSON).
func keyDataJSON(pem string) string { b, _ := json.Marshal([]byte(pem)); return string(b) }

// TestCosignV3Bundle: a bundle the real cosign v3.1.3 made with `cosign
// sign --key` (testdata/cosign-v3.1.3) passes for its digest and key, and
// is refused for another digest and under another key.
func TestCosignV3Bundle(t *testing.T) {
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join("testdata", "cosign-v3.1.3", name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	bundle, pub, digest := read("bundle.json"), read("cosign.pub"), strings.TrimSpace(string(read("digest")))
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	check := func(pub []byte, digest string) error {
		p, err := Parse([]byte(`{"default": [{"type": "sigstoreSigned", "keyData": ` + keyDataJSON(string(pub)) + `}]}`))
		if err != nil {
			t.Fatal(err)
		}
		img := Image{Ref: mustRef(t, "reg.io/cosigned/app@"+digest), Digest: digest, Bundles: func(context.Context) ([]Bundle, error) {
			return []Bundle{{Source: "sha256:cosign-referrer", JSON: bundle}}, nil
		}}
		return p.Check(context.Background(), img, nil)
	}
	if err := check(pub, digest); err != nil {
		t.Fatalf("cosign v3.1.3 bundle refused: %v", err)
	}
	otherDigest := "sha256:" + strings.Repeat("0", 64)
	if err := check(pub, otherDigest); !errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), "signed statement is for "+digest) {
		t.Errorf("for another digest: %v", err)
	}
	if err := check(pemPub(t, &other.PublicKey), digest); !errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), "DSSE signature does not verify with the policy's key") {
		t.Errorf("under another key: %v", err)
	}
}
