package verify

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	tdxabi "github.com/google/go-tdx-guest/abi"
	"github.com/google/go-tdx-guest/pcs"
	tdxpb "github.com/google/go-tdx-guest/proto/tdx"
	tdxverify "github.com/google/go-tdx-guest/verify"

	"github.com/veil-runtime/veil/attestation/evidence"
	"github.com/veil-runtime/veil/attestation/kbs"
)

// TD attribute bits (TDX module ABI, TDATTRIBUTES).
const (
	tdAttrDebug      = 1 << 0
	tdAttrMigratable = 1 << 29
)

// TDX verifies TDX evidence.
type TDX struct {
	// Roots pins the Intel SGX root CA; nil means the root embedded in
	// go-tdx-guest.
	Roots *x509.CertPool
	// Collateral answers PCS requests (TCB info, QE identity, CRLs) from
	// files; nil skips the collateral checks. The broker never fetches
	// from Intel.
	Collateral *Collateral
	// Now is the time certificates and collateral are checked against.
	Now func() time.Time
}

var _ Verifier = (*TDX)(nil)

// Verify implements Verifier.
func (t *TDX) Verify(_ context.Context, raw json.RawMessage) (Claims, error) {
	var ev evidence.TDXEvidence
	if err := json.Unmarshal(raw, &ev); err != nil {
		return Claims{}, fmt.Errorf("decoding tdx evidence: %w", err)
	}
	quote, err := base64.StdEncoding.DecodeString(ev.Quote)
	if err != nil {
		return Claims{}, fmt.Errorf("decoding tdx evidence quote: %w", err)
	}
	q, err := tdxabi.QuoteToProto(quote)
	if err != nil {
		return Claims{}, fmt.Errorf("parsing tdx quote: %w", err)
	}
	v4, ok := q.(*tdxpb.QuoteV4)
	if !ok {
		return Claims{}, fmt.Errorf("parsing tdx quote: unsupported quote type %T", q)
	}
	now := time.Now()
	if t.Now != nil {
		now = t.Now()
	}
	opts := &tdxverify.Options{TrustedRoots: t.Roots, Now: now}
	if t.Collateral != nil {
		opts.GetCollateral = true
		opts.CheckRevocations = true
		opts.Getter = t.Collateral
	}
	if err := tdxverify.TdxQuote(v4, opts); err != nil {
		return Claims{}, fmt.Errorf("verifying tdx quote signature, certificate chain and collateral: %w", err)
	}
	return tdxClaims(v4.GetTdQuoteBody()), nil
}

func tdxClaims(b *tdxpb.TDQuoteBody) Claims {
	var attrs uint64
	for i, v := range b.GetTdAttributes() {
		if i < 8 {
			attrs |= uint64(v) << (8 * i)
		}
	}
	c := Claims{
		Tee:         kbs.TeeTDX,
		Measurement: hex.EncodeToString(b.GetMrTd()),
		ReportData:  hex.EncodeToString(b.GetReportData()),
		HostData:    hex.EncodeToString(b.GetMrConfigId()),
		Debug:       attrs&tdAttrDebug != 0,
		Migration:   attrs&tdAttrMigratable != 0,
		VMPL:        -1,
		TeeTCBSVN:   hex.EncodeToString(b.GetTeeTcbSvn()),
	}
	for _, r := range b.GetRtmrs() {
		c.RTMRs = append(c.RTMRs, hex.EncodeToString(r))
	}
	return c
}

// Collateral serves recorded Intel PCS responses from a file: a JSON
// object mapping each PCS URL to {"header": {name: [values]}, "body":
// base64}. Unknown URLs are an error, so a missing file shows up as a
// rejection that names the URL.
type Collateral struct {
	Responses map[string]CollateralResponse
}

// CollateralResponse is one recorded PCS response.
type CollateralResponse struct {
	Header map[string][]string `json:"header"`
	Body   []byte              `json:"body"`
}

// LoadCollateral reads a collateral file.
func LoadCollateral(path string) (*Collateral, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading tdx collateral: %w", err)
	}
	var c Collateral
	if err := json.Unmarshal(raw, &c.Responses); err != nil {
		return nil, fmt.Errorf("decoding tdx collateral %s: %w", path, err)
	}
	return &c, nil
}

// Complete checks that the file holds every kind of collateral a TDX
// quote is checked against: TCB info, QE identity, the PCK CRL and the
// Intel root CA CRL; the error names the missing ones.
func (c *Collateral) Complete() error {
	kinds := []struct {
		name string
		has  func(string) bool
	}{
		{"TCB info (" + pcs.TcbInfoURL("<fmspc>") + ")", func(u string) bool { return strings.HasPrefix(u, pcs.TcbInfoURL("")) }},
		{"QE identity (" + pcs.QeIdentityURL() + ")", func(u string) bool { return u == pcs.QeIdentityURL() }},
		{"PCK CRL (" + pcs.PckCrlURL("<ca>") + ")", func(u string) bool {
			return strings.HasPrefix(u, strings.SplitN(pcs.PckCrlURL(""), "?", 2)[0])
		}},
		{"root CA CRL (https://certificates.trustedservices.intel.com/IntelSGXRootCA.der)", func(u string) bool {
			return strings.HasPrefix(u, "https://certificates.trustedservices.intel.com/")
		}},
	}
	var missing []string
	for _, k := range kinds {
		found := false
		for u := range c.Responses {
			if k.has(u) {
				found = true
				break
			}
		}
		if !found {
			missing = append(missing, k.name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("tdx collateral: expected TCB info, QE identity, PCK CRL and root CA CRL, missing %s", strings.Join(missing, ", "))
	}
	return nil
}

// Get implements go-tdx-guest's trust.HTTPSGetter.
func (c *Collateral) Get(url string) (map[string][]string, []byte, error) {
	r, ok := c.Responses[url]
	if !ok {
		return nil, nil, fmt.Errorf("tdx collateral: no recorded response for %s", url)
	}
	return r.Header, r.Body, nil
}

// ChecksCollateral reports whether quotes are checked against collateral
// (TCB info, QE identity, CRLs); a production broker requires it.
func (t *TDX) ChecksCollateral() bool { return t.Collateral != nil }
