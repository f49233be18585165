package shim

import (
	"encoding/json"
	"fmt"
	"path"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/veil-runtime/veil/guest-agent/api"
	"github.com/veil-runtime/veil/guest-agent/policy"
)

// GuestCreateRequest is the CreateContainer request the shim sends a
// confidential pod's agent for container cid whose spec containerd wrote
// (a bundle's config.json, crictl inspect's runtimeSpec), with the image
// pulled in the guest: the guest spec (createInGuest's guestSpec), its
// volumes bound from guest copies or guest memory (confidentialMounts;
// host paths kept as shares, for the agent's policy to judge), the
// rootfs the guest-pulled image. `veil policy check` decides it as the
// agent would.
func GuestCreateRequest(cid string, spec *specs.Spec) (*api.CreateContainerRequest, error) {
	gspec, binds := guestSpec(cid, spec, nil)
	if _, _, err := confidentialMounts(cid, spec, gspec, binds, true, ""); err != nil {
		return nil, err
	}
	b, err := json.Marshal(gspec)
	if err != nil {
		return nil, fmt.Errorf("encoding the guest spec of %s: %w", cid, err)
	}
	return &api.CreateContainerRequest{
		ContainerId: cid,
		Spec:        b,
		Rootfs:      &api.Storage{Driver: "bind", Source: path.Join(policy.GuestImageRoot, cid, "rootfs")},
	}, nil
}
