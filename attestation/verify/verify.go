// Package verify checks TEE evidence on the broker side and turns it into
// Claims: the SEV-SNP report signature chain (VCEK or VLEK, from the
// report's certificate table or a configured cache, up to pinned AMD
// roots), the TDX quote (PCK chain up to the pinned Intel root, with
// collateral from configured files), and sample evidence, whose claims are
// marked insecure. Whether the claims are acceptable is package policy's
// decision.
package verify

import (
	"context"
	"encoding/json"

	"github.com/veil-runtime/veil/attestation/kbs"
)

// Claims are what verified evidence says about the guest. Byte values are
// lowercase hex.
type Claims struct {
	Tee kbs.Tee `json:"tee"`
	// Insecure is set (to evidence.SampleWarning) for sample evidence.
	Insecure string `json:"insecure,omitempty"`
	// Measurement is SNP MEASUREMENT or TDX MRTD; empty for sample.
	Measurement string `json:"measurement,omitempty"`
	// RTMRs are TDX RTMR0..3.
	RTMRs []string `json:"rtmrs,omitempty"`
	// ReportData is the 64 bytes the guest bound.
	ReportData string `json:"report_data"`
	// HostData is SNP HOSTDATA, TDX MRCONFIGID or the sample's init-data.
	HostData string `json:"host_data,omitempty"`
	// Debug is true when the host may read guest memory.
	Debug bool `json:"debug"`
	// Migration is true when the guest may be migrated (SNP MIGRATE_MA,
	// TDX MIGRATABLE).
	Migration bool `json:"migration"`
	// VMPL is the SNP VM privilege level of the report; -1 elsewhere.
	VMPL int `json:"vmpl"`
	// SNPTCB is the SNP reported TCB.
	SNPTCB *SNPTCB `json:"snp_tcb,omitempty"`
	// TeeTCBSVN is the TDX TEE_TCB_SVN.
	TeeTCBSVN string `json:"tee_tcb_svn,omitempty"`
	// SVN is the sample evidence's version.
	SVN string `json:"svn,omitempty"`
}

// SNPTCB is an SNP TCB version split into its security patch levels.
type SNPTCB struct {
	BootLoader uint8 `json:"bootloader"`
	TEE        uint8 `json:"tee"`
	SNP        uint8 `json:"snp"`
	Microcode  uint8 `json:"microcode"`
}

// Verifier checks one kind of evidence.
type Verifier interface {
	Verify(ctx context.Context, evidence json.RawMessage) (Claims, error)
}
