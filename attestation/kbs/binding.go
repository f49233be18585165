package kbs

import (
	"crypto/sha256"
	"crypto/sha512"
	"encoding/json"
	"fmt"
	"hash"
	"strings"
)

// HashAlgorithm names the hash that binds runtime data into the report.
type HashAlgorithm string

// Hash algorithms of the protocol; SHA-384 is Trustee's default and the
// one veil-kbs selects.
const (
	SHA256 HashAlgorithm = "sha256"
	SHA384 HashAlgorithm = "sha384"
	SHA512 HashAlgorithm = "sha512"

	DefaultHashAlgorithm = SHA384
)

// ParseHashAlgorithm accepts a hash name in any case.
func ParseHashAlgorithm(s string) (HashAlgorithm, error) {
	switch h := HashAlgorithm(strings.ToLower(s)); h {
	case SHA256, SHA384, SHA512:
		return h, nil
	}
	return "", fmt.Errorf("hash algorithm %q: want sha256, sha384 or sha512", s)
}

func (h HashAlgorithm) new() hash.Hash {
	switch h {
	case SHA256:
		return sha256.New()
	case SHA512:
		return sha512.New()
	default:
		return sha512.New384()
	}
}

// Sum hashes data with h.
func (h HashAlgorithm) Sum(data []byte) []byte {
	d := h.new()
	d.Write(data)
	return d.Sum(nil)
}

// primaryRuntimeData is what the primary attester's report data is the
// hash of: Trustee adds the (string) additional evidence to the runtime
// data before hashing, so a device's evidence is bound too.
type primaryRuntimeData struct {
	AdditionalEvidence string    `json:"additional-evidence"`
	Nonce              string    `json:"nonce"`
	TeePubKey          TeePubKey `json:"tee-pubkey"`
}

// RuntimeDataDigest is the hash of the canonical JSON of
// {"additional-evidence", "nonce", "tee-pubkey"}: exactly what a Trustee
// guest puts into its hardware report and what a Trustee broker expects.
func RuntimeDataDigest(rd RuntimeData, additionalEvidence string, alg HashAlgorithm) ([]byte, error) {
	doc, err := CanonicalJSON(primaryRuntimeData{
		AdditionalEvidence: additionalEvidence,
		Nonce:              rd.Nonce,
		TeePubKey:          rd.TeePubKey,
	})
	if err != nil {
		return nil, fmt.Errorf("canonicalizing runtime-data: %w", err)
	}
	return alg.Sum(doc), nil
}

// ReportData places a digest into the 64-byte report-data field of a
// hardware report, zero padded (SNP REPORT_DATA and TDX REPORTDATA are both
// 64 bytes).
func ReportData(digest []byte) ([64]byte, error) {
	var out [64]byte
	if len(digest) > len(out) {
		return out, fmt.Errorf("report data: digest is %d bytes, the field holds 64", len(digest))
	}
	copy(out[:], digest)
	return out, nil
}

// ExpectedReportData is RuntimeDataDigest placed into report data.
func ExpectedReportData(rd RuntimeData, additionalEvidence string, alg HashAlgorithm) ([64]byte, error) {
	d, err := RuntimeDataDigest(rd, additionalEvidence, alg)
	if err != nil {
		return [64]byte{}, err
	}
	return ReportData(d)
}

// SelectedHashAlgorithm reads the hash a broker selected from a
// challenge's extra-params, defaulting to SHA-384 like Trustee's guests.
func SelectedHashAlgorithm(extra json.RawMessage) (HashAlgorithm, error) {
	var params map[string]any
	if len(extra) == 0 || json.Unmarshal(extra, &params) != nil {
		// Trustee sends "" when it has nothing to say.
		return DefaultHashAlgorithm, nil
	}
	v, ok := params[ExtraSelectedHashAlgorithm]
	if !ok {
		return DefaultHashAlgorithm, nil
	}
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("challenge extra-params %s: want a string, got %v", ExtraSelectedHashAlgorithm, v)
	}
	return ParseHashAlgorithm(s)
}
