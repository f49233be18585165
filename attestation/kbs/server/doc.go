// Package server is veil-kbs: the broker side of the RCAR key broker
// protocol (package kbs), an admin API, and the directory store behind
// them.
//
// A guest asks for a challenge (POST /kbs/v0/auth), sends evidence bound to
// that challenge's nonce and to its TEE key (POST /kbs/v0/attest), and,
// once the evidence verifies (package verify) and satisfies the
// attestation policy (package policy), reads resources the resource policy
// grants it (GET /kbs/v0/resource/<repo>/<type>/<tag>), each sealed to its
// TEE key as a JWE. Nonces are single use and expire. Sample (software)
// evidence is refused unless the server runs in dev mode. Every rejection
// names the field, the expected and the seen value, both in the log and in
// the error the guest receives. Secrets, tokens and session ids are never
// logged.
package server
