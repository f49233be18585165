package wire_test

import (
	"slices"
	"testing"

	"github.com/veil-runtime/veil/attestation/kbs"
	"github.com/veil-runtime/veil/guest-agent/api/wire"
	"github.com/veil-runtime/veil/guest-agent/attest"
	"github.com/veil-runtime/veil/hypervisor"
)

// TestTEESetsAgree pins the three places that name TEEs (the hypervisor's
// launch config, the key broker protocol and the agent's attest package)
// to the one set here: a TEE added on one side only fails this test.
func TestTEESetsAgree(t *testing.T) {
	var confidential []string
	for _, tee := range wire.TEEs() {
		if !hypervisor.ValidTEE(tee) {
			t.Errorf("hypervisor.ValidTEE(%q) = false, want true", tee)
		}
		if tee.Confidential() {
			confidential = append(confidential, string(tee))
		}
	}
	var brokered []string
	for _, tee := range kbs.Tees() {
		brokered = append(brokered, string(tee))
	}
	slices.Sort(confidential)
	slices.Sort(brokered)
	if !slices.Equal(confidential, brokered) {
		t.Errorf("kbs.Tees() = %v, want the confidential wire TEEs %v", brokered, confidential)
	}
	agent := []string{attest.None, attest.Sample, attest.SNP, attest.TDX}
	var all []string
	for _, tee := range wire.TEEs() {
		all = append(all, string(tee))
	}
	if !slices.Equal(agent, all) {
		t.Errorf("attest TEE names = %v, want %v", agent, all)
	}
	if hypervisor.ValidTEE("cca") {
		t.Error(`hypervisor.ValidTEE("cca") = true for a TEE wire does not name`)
	}
}

// TestHardware pins which TEEs need hardware: the agent loads TEE drivers
// and the shim checks the host for exactly these.
func TestHardware(t *testing.T) {
	for _, tee := range wire.TEEs() {
		want := tee == wire.TEESNP || tee == wire.TEETDX
		if tee.Hardware() != want {
			t.Errorf("%q.Hardware() = %v, want %v", tee, tee.Hardware(), want)
		}
	}
}
