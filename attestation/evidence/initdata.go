package evidence

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"

	"github.com/veil-runtime/veil/attestation/initdata"
)

// CheckInitData compares the init-data document the guest received with
// the digest bound into its own TEE at launch. The agent calls it before
// trusting anything in the document and refuses to start on an error: a
// host that swaps the document cannot also change the hardware report.
// A guest launched without init-data (bound value all zero) must receive
// none.
func CheckInitData(ctx context.Context, a Attester, doc []byte) error {
	bound, err := a.BoundInitData(ctx)
	if err != nil {
		return fmt.Errorf("reading the init-data digest bound at launch: %w", err)
	}
	field := boundField(a)
	if len(doc) == 0 {
		if len(bytes.Trim(bound, "\x00")) != 0 {
			return fmt.Errorf("init-data: %s is %x, but the guest received no document", field, bound)
		}
		return nil
	}
	d := initdata.Digest(doc)
	size := len(bound)
	if size < len(d) {
		size = len(d)
	}
	want, err := initdata.Pad(d[:], size)
	if err != nil {
		return err
	}
	got, err := initdata.Pad(bound, size)
	if err != nil {
		return err
	}
	if !bytes.Equal(want, got) {
		return fmt.Errorf("init-data: %s is %s, the document received hashes to %s: the host changed the document",
			field, hex.EncodeToString(bound), hex.EncodeToString(d[:]))
	}
	return nil
}

func boundField(a Attester) string {
	switch a.(type) {
	case *SNP:
		return "SNP HOSTDATA"
	case *TDX:
		return "TDX MRCONFIGID"
	default:
		return string(a.Tee()) + " bound init-data"
	}
}
