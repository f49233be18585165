// Package kbs owns the wire format of the key broker protocol veil speaks:
// the Request-Challenge-Attestation-Response (RCAR) flow of Confidential
// Containers' Trustee (protocol version 0.4.0), with Trustee's JSON field
// names, the binding of runtime data into a hardware report (canonical JSON,
// SHA-384 by default, zero padded to 64 bytes) and the JWE envelope a
// resource travels in. The client and server live in subpackages.
package kbs
