package sign_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"math/big"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/verify"
	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/veil-runtime/veil/image"
	"github.com/veil-runtime/veil/image/policy"
	"github.com/veil-runtime/veil/image/sign"
)

// startRegistryReferrers is startRegistry with or without the OCI 1.1
// referrers API (without it, bundles are found through the referrers tag
// schema, sha256-<hex>).
func startRegistryReferrers(t *testing.T, api bool) (string, http.RoundTripper) {
	t.Helper()
	srv := httptest.NewUnstartedServer(registry.New(registry.Logger(log.New(io.Discard, "", 0)), registry.WithReferrersSupport(api)))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "https://"), srv.Client().Transport
}

func keyPair(t *testing.T, curve elliptic.Curve) (crypto.Signer, []byte) {
	t.Helper()
	k, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return k, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// pullWith runs the guest's puller under policy doc.
func pullWith(t *testing.T, rt http.RoundTripper, doc map[string]any, ref string) error {
	t.Helper()
	raw, _ := json.Marshal(doc)
	pol, err := policy.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p, err := image.New(image.Config{CacheDir: filepath.Join(dir, "cache"), Policy: pol, Transport: rt})
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Pull(t.Context(), ref, filepath.Join(dir, "rootfs"))
	return err
}

// editBundle rewrites a bundle's JSON through fn.
func editBundle(t *testing.T, b []byte, fn func(map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	fn(m)
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// selfSigned is a certificate for key, standing in for a Fulcio one.
func selfSigned(t *testing.T, key crypto.Signer) []byte {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ci@example.com"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// TestBundleVerifies signs images the way cosign v3 does by default (a
// Sigstore bundle with a DSSE in-toto statement, attached as an OCI
// referrer), with sigstore-go's signer and a key pair made here, and pulls
// them through the guest's puller and policy, on a registry with the
// referrers API and on one without (the referrers tag schema). A good
// bundle passes; a bundle for another digest, by another key, with a
// tampered signature, of another predicate, signed keyless, or missing,
// is refused naming why.
func TestBundleVerifies(t *testing.T) {
	for _, api := range []bool{true, false} {
		t.Run(map[bool]string{true: "referrers API", false: "referrers tag schema"}[api], func(t *testing.T) {
			host, rt := startRegistryReferrers(t, api)
			opts := remote.WithTransport(rt)
			key, pub := keyPair(t, elliptic.P256())
			_, otherPub := keyPair(t, elliptic.P256())
			keyPolicy := func(pub []byte) map[string]any {
				return map[string]any{"default": []any{map[string]any{"type": "sigstoreSigned", "keyData": pub}}}
			}

			// An image for each case, so that each has only its bundle.
			img := func(repo string) (name.Reference, name.Digest, v1.Descriptor) {
				ref, err := name.ParseReference(host + "/" + repo + ":1")
				if err != nil {
					t.Fatal(err)
				}
				pushRandom(t, ref, rt)
				desc, err := remote.Get(ref, opts)
				if err != nil {
					t.Fatal(err)
				}
				return ref, ref.Context().Digest(desc.Digest.String()), desc.Descriptor
			}
			attach := func(d name.Digest, desc v1.Descriptor, b []byte) []byte {
				if _, err := sign.Attach(d, desc, b, opts); err != nil {
					t.Fatal(err)
				}
				return b
			}
			statementFor := func(h v1.Hash) []byte {
				st, err := sign.Statement(h)
				if err != nil {
					t.Fatal(err)
				}
				return st
			}
			bundleOf := func(st []byte, k crypto.Signer) []byte {
				b, err := sign.NewBundle(st, k)
				if err != nil {
					t.Fatal(err)
				}
				return b
			}

			// Good: SignBundle, pulled by tag and by digest.
			good, goodDigest, _ := img("app/good")
			res, err := sign.SignBundle(good, key, opts)
			if err != nil {
				t.Fatal(err)
			}
			if res.Digest.String() != goodDigest.DigestStr() {
				t.Fatalf("signed %s, want %s", res.Digest, goodDigest.DigestStr())
			}
			if err := pullWith(t, rt, keyPolicy(pub), good.String()); err != nil {
				t.Fatalf("good bundle refused: %v", err)
			}
			if err := sigstoreGoVerify(t, res.Bundle, pub, res.Digest.String()); err != nil {
				t.Fatalf("sigstore-go refuses the good bundle: %v", err)
			}
			if err := pullWith(t, rt, keyPolicy(pub), goodDigest.String()); err != nil {
				t.Fatalf("good bundle, pulled by digest, refused: %v", err)
			}
			// A P-384 key signs with SHA-384, as cosign does.
			p384, p384Pub := keyPair(t, elliptic.P384())
			p384Ref, _, _ := img("app/p384")
			p384Res, err := sign.SignBundle(p384Ref, p384, opts)
			if err != nil {
				t.Fatal(err)
			}
			if err := pullWith(t, rt, keyPolicy(p384Pub), p384Ref.String()); err != nil {
				t.Fatalf("P-384 bundle refused: %v", err)
			}
			if err := sigstoreGoVerify(t, p384Res.Bundle, p384Pub, p384Res.Digest.String()); err != nil {
				t.Fatalf("sigstore-go refuses the P-384 bundle: %v", err)
			}

			otherRef, otherDigest, _ := img("app/other")
			wrongDigest, wd, wdDesc := img("app/wrong-digest")
			wdBundle := attach(wd, wdDesc, bundleOf(statementFor(mustHash(t, otherDigest.DigestStr())), key))

			wrongKey, wk, wkDesc := img("app/wrong-key")
			otherKey, _ := keyPair(t, elliptic.P256())
			wkBundle := attach(wk, wkDesc, bundleOf(statementFor(mustHash(t, wk.DigestStr())), otherKey))

			tampered, tp, tpDesc := img("app/tampered")
			tpBundle := attach(tp, tpDesc, editBundle(t, bundleOf(statementFor(mustHash(t, tp.DigestStr())), key), func(m map[string]any) {
				sig := m["dsseEnvelope"].(map[string]any)["signatures"].([]any)[0].(map[string]any)
				raw, _ := base64.StdEncoding.DecodeString(sig["sig"].(string))
				raw[len(raw)/2] ^= 1
				sig["sig"] = base64.StdEncoding.EncodeToString(raw)
			}))

			tamperedPayload, tpp, tppDesc := img("app/tampered-payload")
			tppBundle := attach(tpp, tppDesc, editBundle(t, bundleOf(statementFor(mustHash(t, tpp.DigestStr())), key), func(m map[string]any) {
				// The statement re-pointed at this image after signing one for another.
				env := m["dsseEnvelope"].(map[string]any)
				env["payload"] = base64.StdEncoding.EncodeToString(statementFor(mustHash(t, otherDigest.DigestStr())))
			}))

			provenance, pv, pvDesc := img("app/provenance")
			st := editBundle(t, statementFor(mustHash(t, pv.DigestStr())), func(m map[string]any) { m["predicateType"] = "https://slsa.dev/provenance/v1" })
			pvBundle := attach(pv, pvDesc, bundleOf(st, key))

			keyless, kl, klDesc := img("app/keyless")
			klBundle := attach(kl, klDesc, editBundle(t, bundleOf(statementFor(mustHash(t, kl.DigestStr())), key), func(m map[string]any) {
				m["verificationMaterial"] = map[string]any{"certificate": map[string]any{"rawBytes": base64.StdEncoding.EncodeToString(selfSigned(t, key))}}
			}))

			identity, id, idDesc := img("app/identity")
			idBundle := attach(id, idDesc, bundleOf(statementFor(mustHash(t, id.DigestStr())), key))

			// sigstore-go is the reference: its verifier (key, no log,
			// artifact digest) must agree with the guest's on each
			// bundle, except where the guest adds a rule of its own
			// (cosign's predicate, signedIdentity).
			for _, tc := range []struct {
				name   string
				ref    name.Reference
				pub    []byte
				doc    map[string]any
				want   string
				bundle []byte // judged by sigstore-go too
				sgOK   bool   // sigstore-go's verdict
			}{
				{"missing", otherRef, pub, nil, "no sigstore signature found for " + otherDigest.DigestStr() + " (no Sigstore bundle among its OCI referrers", nil, false},
				{"another digest", wrongDigest, pub, nil, "signed statement is for " + otherDigest.DigestStr() + ", the image is " + wd.DigestStr(), wdBundle, false},
				{"wrong key", wrongKey, pub, nil, "DSSE signature does not verify with the policy's key", wkBundle, false},
				{"policy names another key", good, otherPub, nil, "DSSE signature does not verify with the policy's key", res.Bundle, false},
				{"tampered signature", tampered, pub, nil, "DSSE signature does not verify with the policy's key", tpBundle, false},
				{"tampered payload", tamperedPayload, pub, nil, "DSSE signature does not verify with the policy's key", tppBundle, false},
				{"provenance, not a signature", provenance, pub, nil, `in-toto predicate type is "https://slsa.dev/provenance/v1", want cosign's signature`, pvBundle, true},
				{"keyless", keyless, pub, nil, "signed keyless (a Fulcio certificate, no public key)", klBundle, false},
				{"signedIdentity", identity, pub, map[string]any{"default": []any{map[string]any{"type": "sigstoreSigned", "keyData": pub, "signedIdentity": map[string]any{"type": "matchRepository"}}}}, "the bundle names no image reference, only the digest, so signedIdentity matchRepository cannot be checked", idBundle, true},
			} {
				if tc.bundle != nil {
					if err := sigstoreGoVerify(t, tc.bundle, tc.pub, mustDigest(t, tc.ref, rt)); (err == nil) != tc.sgOK {
						t.Errorf("%s: sigstore-go says %v, want ok=%v", tc.name, err, tc.sgOK)
					}
				}
				doc := tc.doc
				if doc == nil {
					doc = keyPolicy(tc.pub)
				}
				err := pullWith(t, rt, doc, tc.ref.String())
				if !errors.Is(err, policy.ErrRejected) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.ref.String()) {
					t.Errorf("%s: %v\nwant a rejection naming %s and %q", tc.name, err, tc.ref, tc.want)
				} else {
					t.Logf("%s: %v", tc.name, err)
				}
			}
		})
	}
}

// TestLegacyAndBundleTogether: an image with a legacy .sig signature by
// one key and a bundle by another passes a policy for either key.
func TestLegacyAndBundleTogether(t *testing.T) {
	host, rt := startRegistryReferrers(t, true)
	ref, _ := name.ParseReference(host + "/app/both:1")
	pushRandom(t, ref, rt)
	legacyPriv, legacyPub, _ := sign.Keygen()
	lk, _ := sign.ParsePrivateKey(legacyPriv)
	if _, err := sign.Sign(ref, lk, remote.WithTransport(rt)); err != nil {
		t.Fatal(err)
	}
	bk, bundlePub := keyPair(t, elliptic.P256())
	if _, err := sign.SignBundle(ref, bk, remote.WithTransport(rt)); err != nil {
		t.Fatal(err)
	}
	for name, pub := range map[string][]byte{"legacy key": legacyPub, "bundle key": bundlePub} {
		if err := pull(t, rt, pub, ref.String()); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	_, other := keyPair(t, elliptic.P256())
	err := pull(t, rt, other, ref.String())
	if err == nil || !strings.Contains(err.Error(), "signature 0 (tag sha256-") || !strings.Contains(err.Error(), "bundle sha256:") {
		t.Errorf("another key: %v, want both the signature and the bundle named", err)
	}
}

// sigstoreGoVerify verifies a bundle with sigstore-go's verifier for a
// key-signed bundle without a log: trusted material holding only pubPEM,
// no observer timestamps, the artifact digest.
func sigstoreGoVerify(t *testing.T, bundleJSON, pubPEM []byte, digest string) error {
	t.Helper()
	var b bundle.Bundle
	if err := b.UnmarshalJSON(bundleJSON); err != nil {
		return err
	}
	blk, _ := pem.Decode(pubPEM)
	pub, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	v, err := signature.LoadDefaultVerifier(pub)
	if err != nil {
		t.Fatal(err)
	}
	tm := root.NewTrustedPublicKeyMaterial(func(string) (root.TimeConstrainedVerifier, error) {
		return root.NewExpiringKey(v, time.Time{}, time.Time{}), nil
	})
	verifier, err := verify.NewVerifier(tm, verify.WithNoObserverTimestamps())
	if err != nil {
		t.Fatal(err)
	}
	h := mustHash(t, digest)
	raw, _ := hex.DecodeString(h.Hex)
	_, err = verifier.Verify(&b, verify.NewPolicy(verify.WithArtifactDigest("sha256", raw), verify.WithKey()))
	return err
}

func mustDigest(t *testing.T, ref name.Reference, rt http.RoundTripper) string {
	t.Helper()
	d, err := remote.Head(ref, remote.WithTransport(rt))
	if err != nil {
		t.Fatal(err)
	}
	return d.Digest.String()
}

func mustHash(t *testing.T, s string) v1.Hash {
	t.Helper()
	h, err := v1.NewHash(s)
	if err != nil {
		t.Fatal(err)
	}
	return h
}
