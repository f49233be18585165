package initdata

import (
	"crypto/sha256"
	"crypto/sha512"
	"fmt"

	"github.com/pelletier/go-toml/v2"
)

// Size of the launch fields the digest goes into.
const (
	SNPHostDataSize   = 32
	TDXMRConfigIDSize = 48
)

// Digest is the SHA-256 of the document's exact bytes.
func Digest(doc []byte) [32]byte {
	return sha256.Sum256(doc)
}

// SNPHostData is the value of SEV-SNP HOSTDATA for a document.
func SNPHostData(doc []byte) [SNPHostDataSize]byte {
	return Digest(doc)
}

// TDXMRConfigID is the value of TDX MRCONFIGID for a document: the digest
// zero padded to 48 bytes.
func TDXMRConfigID(doc []byte) [TDXMRConfigIDSize]byte {
	var out [TDXMRConfigIDSize]byte
	d := Digest(doc)
	copy(out[:], d[:])
	return out
}

// Pad places a digest into a launch field of size bytes, zero padded.
func Pad(digest []byte, size int) ([]byte, error) {
	if len(digest) > size {
		return nil, fmt.Errorf("init-data digest is %d bytes, the field holds %d", len(digest), size)
	}
	out := make([]byte, size)
	copy(out, digest)
	return out, nil
}

// BrokerDigest is the digest a broker computes for a document it received
// from a guest. veil documents use SHA-256; documents from Trustee-style
// guests may name sha384 or sha512 in their algorithm key, and the broker
// follows that key as Trustee does.
func BrokerDigest(doc []byte) ([]byte, error) {
	var head struct {
		Algorithm string `toml:"algorithm"`
	}
	if err := toml.Unmarshal(doc, &head); err != nil {
		return nil, fmt.Errorf("parsing init-data toml: %w", err)
	}
	switch head.Algorithm {
	case "", "sha256":
		d := sha256.Sum256(doc)
		return d[:], nil
	case "sha384":
		d := sha512.Sum384(doc)
		return d[:], nil
	case "sha512":
		d := sha512.Sum512(doc)
		return d[:], nil
	}
	return nil, fmt.Errorf("init-data algorithm %q: want sha256, sha384 or sha512", head.Algorithm)
}
