package shim

import (
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// ConfidentialGuestSpec is the spec the shim sends a confidential pod's
// agent in CreateContainer for container cid whose spec containerd wrote
// (a bundle's config.json, crictl inspect's runtimeSpec): the guest spec
// (createInGuest's guestSpec) with its volumes bound from guest copies or
// guest memory (confidentialMounts; host paths kept as shares, for the
// agent's policy to judge). `veil policy check` decides it as the agent
// would.
func ConfidentialGuestSpec(cid string, spec *specs.Spec) (*specs.Spec, error) {
	gspec, binds := guestSpec(cid, spec, nil)
	if _, _, err := confidentialMounts(cid, spec, gspec, binds, true, ""); err != nil {
		return nil, err
	}
	return gspec, nil
}
