package kbs

import (
	"encoding/json"

	"github.com/veil-runtime/veil/guest-agent/api/wire"
)

// ProtocolVersion is the RCAR protocol version veil speaks; it is the
// version Trustee's KBS accepts.
const ProtocolVersion = "0.4.0"

// SessionCookie is the cookie that carries the RCAR session between
// /auth, /attest and /resource.
const SessionCookie = "kbs-session-id"

// Paths of the protocol endpoints.
const (
	PathPrefix   = "/kbs/v0"
	PathAuth     = PathPrefix + "/auth"
	PathAttest   = PathPrefix + "/attest"
	PathResource = PathPrefix + "/resource/"
)

// Keys inside the extra-params objects that negotiate the hash algorithm
// used to bind runtime data into the hardware report.
const (
	ExtraSupportedHashAlgorithms = "supported-hash-algorithms"
	ExtraSelectedHashAlgorithm   = "selected-hash-algorithm"
)

// Tee names a kind of trusted execution environment, as spelled on the
// wire (kbs_types' lowercase Tee enum).
type Tee string

// TEEs veil produces or accepts evidence for: the confidential TEE names
// of guest-agent/api/wire, which the protocol spells the same way.
const (
	TeeSNP    = Tee(wire.TEESNP)
	TeeTDX    = Tee(wire.TEETDX)
	TeeSample = Tee(wire.TEESample)
)

// Tees lists the TEEs veil produces or accepts evidence for.
func Tees() []Tee { return []Tee{TeeSNP, TeeTDX, TeeSample} }

// Request opens an RCAR handshake (POST /kbs/v0/auth).
type Request struct {
	Version     string          `json:"version"`
	Tee         Tee             `json:"tee"`
	ExtraParams json.RawMessage `json:"extra-params"`
}

// Challenge answers a Request: a fresh nonce the evidence must bind.
type Challenge struct {
	Nonce       string          `json:"nonce"`
	ExtraParams json.RawMessage `json:"extra-params"`
}

// RuntimeData is what the guest binds into its hardware report: the
// broker's nonce and the public half of the TEE key resources are
// encrypted to.
type RuntimeData struct {
	Nonce     string    `json:"nonce"`
	TeePubKey TeePubKey `json:"tee-pubkey"`
}

// CompositeEvidence carries the primary TEE evidence and, as a JSON
// string, evidence of additional devices (empty when there are none).
type CompositeEvidence struct {
	PrimaryEvidence    json.RawMessage `json:"primary_evidence"`
	AdditionalEvidence string          `json:"additional_evidence"`
}

// InitData is the init-data document the guest was launched with.
type InitData struct {
	Format string `json:"format"`
	Body   string `json:"body"`
}

// Attestation is the body of POST /kbs/v0/attest.
type Attestation struct {
	InitData    *InitData         `json:"init-data,omitempty"`
	RuntimeData RuntimeData       `json:"runtime-data"`
	TeeEvidence CompositeEvidence `json:"tee-evidence"`
}

// AttestationResult is the body of a successful /attest response.
type AttestationResult struct {
	Token string `json:"token"`
}

// Response is a resource sealed to the TEE key: the flattened JSON
// serialization of a JWE (RFC 7516 section 7.2.2), as kbs_types names it.
type Response struct {
	Protected    string `json:"protected"`
	EncryptedKey string `json:"encrypted_key"`
	AAD          string `json:"aad,omitempty"`
	IV           string `json:"iv"`
	Ciphertext   string `json:"ciphertext"`
	Tag          string `json:"tag"`
}

// ErrorInformation is the body of every error response.
type ErrorInformation struct {
	Type   string `json:"type"`
	Detail string `json:"detail"`
}

// Error types, in the URI form Trustee uses.
const (
	errorTypeBase           = "https://github.com/confidential-containers/kbs/errors/"
	ErrorAttestationFailed  = errorTypeBase + "AttestationFailed"
	ErrorInvalidRequest     = errorTypeBase + "InvalidRequest"
	ErrorUnauthenticated    = errorTypeBase + "Unauthenticated"
	ErrorPolicyDeny         = errorTypeBase + "PolicyDeny"
	ErrorResourceNotFound   = errorTypeBase + "ResourceNotFound"
	ErrorInternal           = errorTypeBase + "InternalError"
	ErrorVersionUnsupported = errorTypeBase + "ProtocolVersion"
)
