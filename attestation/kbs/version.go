package kbs

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Protocol versions a broker accepts in a Request: 0.3.x and 0.4.x
// (semantic versions, no pre-release). Trustee's KBS accepts exactly
// ProtocolVersion and guest-components sends it (kbs_protocol
// KBS_PROTOCOL_VERSION). The versions differ in the Attestation message:
//   - 0.4 (Trustee, June 2025 on): runtime-data {nonce, tee-pubkey} and an
//     optional init-data next to tee-evidence;
//   - 0.3: tee-pubkey at the top level, no runtime-data (the nonce is the
//     session's), no init-data; tee-evidence already the composite
//     {primary_evidence, additional_evidence} whose report data binds the
//     same canonical runtime data.
//
// Older versions are refused: before 0.3 the evidence was not composite,
// and 0.1 clients expect the JWE tag appended to the ciphertext (Trustee
// fixed that for 0.2).
const (
	MinProtocolVersion = "0.3.0"
	MaxProtocolMinor   = 4
)

// CheckProtocolVersion accepts the versions a broker speaks and refuses
// others naming the accepted range.
func CheckProtocolVersion(v string) error {
	refuse := func(why string) error {
		return fmt.Errorf("version: expected %s or another version from %s up to 0.%d.x, seen %q%s", ProtocolVersion, MinProtocolVersion, MaxProtocolMinor, v, why)
	}
	core, _, _ := strings.Cut(v, "+") // build metadata does not order
	if strings.Contains(core, "-") {
		return refuse(": pre-release versions are not accepted")
	}
	parts := strings.Split(core, ".")
	if len(parts) != 3 {
		return refuse(": not a MAJOR.MINOR.PATCH version")
	}
	var n [3]int
	for i, p := range parts {
		x, err := strconv.Atoi(p)
		if err != nil || x < 0 || p == "" || (len(p) > 1 && p[0] == '0') {
			return refuse(": not a MAJOR.MINOR.PATCH version")
		}
		n[i] = x
	}
	switch {
	case n[0] != 0 || n[1] > MaxProtocolMinor:
		return refuse(": newer than this broker")
	case n[1] < 3:
		return refuse(": older clients send evidence this broker cannot bind (before 0.3) or expect another JWE layout (0.1)")
	}
	return nil
}

// legacyAttestation is the 0.3 Attestation message next to the 0.4 one.
type legacyAttestation struct {
	Attestation
	RuntimeData *RuntimeData `json:"runtime-data"`
	TeePubKey   *TeePubKey   `json:"tee-pubkey"`
}

// DecodeAttestation reads an Attestation of protocol 0.4 or 0.3. A 0.3
// message carries the TEE key at the top level and no runtime data: the
// runtime data is then the session's nonce and that key, which the
// evidence must bind exactly as in 0.4.
func DecodeAttestation(body []byte, sessionNonce string) (Attestation, error) {
	var la legacyAttestation
	if err := json.Unmarshal(body, &la); err != nil {
		return Attestation{}, err
	}
	att := la.Attestation
	switch {
	case la.RuntimeData != nil && la.TeePubKey != nil:
		return Attestation{}, fmt.Errorf("attestation: expected runtime-data (0.4) or tee-pubkey (0.3), seen both")
	case la.RuntimeData != nil:
		att.RuntimeData = *la.RuntimeData
	case la.TeePubKey != nil:
		att.RuntimeData = RuntimeData{Nonce: sessionNonce, TeePubKey: *la.TeePubKey}
	default:
		return Attestation{}, fmt.Errorf("attestation: expected runtime-data with nonce and tee-pubkey, seen neither runtime-data nor tee-pubkey")
	}
	return att, nil
}
