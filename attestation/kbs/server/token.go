package server

import (
	"crypto/ecdsa"
	"fmt"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/veil-runtime/veil/attestation/kbs"
	"github.com/veil-runtime/veil/attestation/verify"
)

// Issuer is the iss claim of veil-kbs tokens.
const Issuer = "veil-kbs"

// TokenClaims are the claims of an attestation token.
type TokenClaims struct {
	jwt.Claims
	Tee kbs.Tee `json:"tee"`
	// Insecure repeats the sample warning for tokens earned with sample
	// evidence, so no consumer can miss it.
	Insecure       string        `json:"insecure,omitempty"`
	Evidence       verify.Claims `json:"evidence"`
	TeePubKey      kbs.TeePubKey `json:"tee-pubkey"`
	InitDataDigest string        `json:"init_data_digest,omitempty"`
}

type tokens struct {
	key *ecdsa.PrivateKey
	sig jose.Signer
}

func newTokens(key *ecdsa.PrivateKey) (*tokens, error) {
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return nil, fmt.Errorf("creating token signer: %w", err)
	}
	return &tokens{key: key, sig: sig}, nil
}

func (t *tokens) issue(g *grant, now time.Time) (string, error) {
	c := TokenClaims{
		Claims: jwt.Claims{
			Issuer:   Issuer,
			IssuedAt: jwt.NewNumericDate(now),
			Expiry:   jwt.NewNumericDate(g.expires),
		},
		Tee:            g.claims.Tee,
		Insecure:       g.claims.Insecure,
		Evidence:       g.claims,
		TeePubKey:      g.teePubKey,
		InitDataDigest: g.initDataDigest,
	}
	s, err := jwt.Signed(t.sig).Claims(c).Serialize()
	if err != nil {
		return "", fmt.Errorf("signing token: %w", err)
	}
	return s, nil
}

// check verifies a token this broker issued and returns its grant.
func (t *tokens) check(raw string, now time.Time) (*grant, error) {
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		return nil, fmt.Errorf("parsing token: %w", err)
	}
	var c TokenClaims
	if err := tok.Claims(&t.key.PublicKey, &c); err != nil {
		return nil, fmt.Errorf("verifying token: %w", err)
	}
	if err := c.Claims.ValidateWithLeeway(jwt.Expected{Issuer: Issuer, Time: now}, 0); err != nil {
		return nil, fmt.Errorf("validating token: %w", err)
	}
	return &grant{claims: c.Evidence, teePubKey: c.TeePubKey, initDataDigest: c.InitDataDigest, expires: c.Expiry.Time()}, nil
}
