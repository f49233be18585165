package initdata

import "encoding/base64"

// QEMUHostData is the value of QEMU's sev-snp-guest "host-data" property
// for a document: standard base64 of the 32-byte HOSTDATA.
func QEMUHostData(doc []byte) string {
	h := SNPHostData(doc)
	return base64.StdEncoding.EncodeToString(h[:])
}

// QEMUMRConfigID is the value of QEMU's tdx-guest "mrconfigid" property
// for a document: standard base64 of the 48-byte MRCONFIGID (the digest
// zero padded).
func QEMUMRConfigID(doc []byte) string {
	m := TDXMRConfigID(doc)
	return base64.StdEncoding.EncodeToString(m[:])
}
