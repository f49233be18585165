// Package evidence produces TEE evidence inside the guest: an AMD SEV-SNP
// attestation report (through go-sev-guest: configfs-tsm first, then
// /dev/sev-guest), an Intel TDX quote (through go-tdx-guest over
// configfs-tsm), or software "sample" evidence for the veil-dev handler,
// which proves nothing and says so everywhere it appears.
//
// Every kind binds 64 bytes of report data chosen by the caller (the hash
// of the broker's runtime data, see package kbs) and can report the
// init-data digest the host bound into the TEE at launch.
package evidence

import (
	"context"
	"encoding/json"

	"github.com/veil-runtime/veil/attestation/kbs"
)

// Attester produces evidence for one TEE.
type Attester interface {
	// Tee names the kind of evidence, as the key broker protocol spells it.
	Tee() kbs.Tee
	// Evidence returns the primary evidence (the JSON the broker's verifier
	// for Tee reads) with reportData bound into it.
	Evidence(ctx context.Context, reportData [64]byte) (json.RawMessage, error)
	// BoundInitData returns the init-data digest bound into the TEE at
	// launch: SNP HOSTDATA (32 bytes), TDX MRCONFIGID (48 bytes), or the
	// digest the sample attester was configured with.
	BoundInitData(ctx context.Context) ([]byte, error)
}
