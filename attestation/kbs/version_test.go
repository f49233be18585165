package kbs

import (
	"strings"
	"testing"
)

func TestCheckProtocolVersion(t *testing.T) {
	for _, v := range []string{"0.4.0", "0.4.7", "0.3.0", "0.3.2", "0.4.0+build.5"} {
		if err := CheckProtocolVersion(v); err != nil {
			t.Errorf("CheckProtocolVersion(%q) = %v, want accepted", v, err)
		}
	}
	refused := map[string]string{
		"0.2.0":      "before 0.3",
		"0.1.0":      "another JWE layout",
		"0.5.0":      "newer than this broker",
		"1.0.0":      "newer than this broker",
		"0.4.0-rc.1": "pre-release",
		"0.4":        "not a MAJOR.MINOR.PATCH",
		"0.04.0":     "not a MAJOR.MINOR.PATCH",
		"":           "not a MAJOR.MINOR.PATCH",
		"v0.4.0":     "not a MAJOR.MINOR.PATCH",
	}
	for v, why := range refused {
		err := CheckProtocolVersion(v)
		if err == nil || !strings.Contains(err.Error(), why) || !strings.Contains(err.Error(), `version: expected 0.4.0 or another version from 0.3.0 up to 0.4.x, seen "`+v+`"`) {
			t.Errorf("CheckProtocolVersion(%q) = %v, want refusal naming the range and %q", v, err, why)
		}
	}
}

func TestDecodeAttestationVersions(t *testing.T) {
	const ev = `"tee-evidence":{"primary_evidence":{"quote":"AA=="},"additional_evidence":""}`
	const key = `{"kty":"EC","crv":"P-256","alg":"ECDH-ES+A256KW","x":"eA","y":"eQ"}`
	// 0.4: runtime-data carries the nonce the guest saw.
	a, err := DecodeAttestation([]byte(`{"runtime-data":{"nonce":"guest","tee-pubkey":`+key+`},`+ev+`,"init-data":{"format":"toml","body":"x"}}`), "session")
	if err != nil || a.RuntimeData.Nonce != "guest" || a.RuntimeData.TeePubKey.X != "eA" || a.InitData == nil {
		t.Fatalf("0.4 message: %+v, %v", a, err)
	}
	// 0.3: the key at the top level, the nonce is the session's.
	a, err = DecodeAttestation([]byte(`{"tee-pubkey":`+key+`,`+ev+`}`), "session")
	if err != nil || a.RuntimeData.Nonce != "session" || a.RuntimeData.TeePubKey.Y != "eQ" || string(a.TeeEvidence.PrimaryEvidence) != `{"quote":"AA=="}` || a.InitData != nil {
		t.Fatalf("0.3 message: %+v, %v", a, err)
	}
	for body, want := range map[string]string{
		`{"runtime-data":{"nonce":"n","tee-pubkey":` + key + `},"tee-pubkey":` + key + `,` + ev + `}`: "seen both",
		`{` + ev + `}`: "seen neither",
		`[1]`:          "cannot unmarshal",
	} {
		if _, err := DecodeAttestation([]byte(body), "s"); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("DecodeAttestation(%s) = %v, want %q", body, err, want)
		}
	}
}
