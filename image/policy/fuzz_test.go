package policy

import (
	"context"
	"errors"
	"testing"

	sgsign "github.com/sigstore/sigstore-go/pkg/sign"
	"google.golang.org/protobuf/encoding/protojson"
)

// FuzzBundle feeds registry-supplied bundle documents to the policy: it
// never panics, a refusal always wraps ErrRejected, and a bundle is
// accepted only when the signature verifies over a statement for the
// image (the signer's key is the policy's, so only valid documents pass).
func FuzzBundle(f *testing.F) {
	kp, err := sgsign.NewEphemeralKeypair(nil)
	if err != nil {
		f.Fatal(err)
	}
	pubPEM, err := kp.GetPublicKeyPem()
	if err != nil {
		f.Fatal(err)
	}
	digest := "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
	st := []byte(`{"_type": "https://in-toto.io/Statement/v1", "subject": [{"digest": {"sha256": "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"}}], "predicateType": "https://sigstore.dev/cosign/sign/v1", "predicate": {}}`)
	pb, err := sgsign.Bundle(&sgsign.DSSEData{Data: st, PayloadType: payloadTypeInToto}, kp, sgsign.BundleOptions{})
	if err != nil {
		f.Fatal(err)
	}
	good, err := protojson.Marshal(pb)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json"}`))
	f.Add([]byte(`{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json", "verificationMaterial": {"publicKey": {"hint": "x"}}, "messageSignature": {"messageDigest": {"algorithm": "SHA2_256", "digest": "LCa0a2j/xo/5m0U8HTBBNBNCLXBkg7+g+YpeiGJm564="}, "signature": "MEUCIQ=="}}`))
	p, err := Parse([]byte(`{"default": [{"type": "sigstoreSigned", "keyData": ` + keyDataJSON(pubPEM) + `}]}`))
	if err != nil {
		f.Fatal(err)
	}
	ref := mustRef(f, "reg.io/ns/app@"+digest)
	f.Fuzz(func(t *testing.T, doc []byte) {
		img := Image{Ref: ref, Digest: digest, Bundles: func(context.Context) ([]Bundle, error) {
			return []Bundle{{Source: "sha256:fuzz", JSON: doc}}, nil
		}}
		err := p.Check(context.Background(), img, nil)
		if err != nil && !errors.Is(err, ErrRejected) {
			t.Fatalf("refusal does not wrap ErrRejected: %v", err)
		}
	})
}
