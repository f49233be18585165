package shim

import (
	"fmt"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/veil-runtime/veil/guest-agent/api"
	"github.com/veil-runtime/veil/hypervisor"
	"github.com/veil-runtime/veil/shim/config"
)

// podVMHost is what the shim settled on the host for one pod before its
// VM is configured.
type podVMHost struct {
	// ID names the VM (the pod's ID); StateDir is its state directory.
	ID       string
	StateDir string
	// SharedDir is the pod's shared directory on the host; podVM decides
	// whether the VM gets it.
	SharedDir string
	// HostCPUs caps the vCPUs when hypervisor.max_vcpus is 0.
	HostCPUs int
	// Transport is the agent transport chosen on this host (not auto),
	// VsockCID the guest CID allocated for vsock.
	Transport hypervisor.Transport
	VsockCID  uint32
	// NICs are the pod network's taps.
	NICs []hypervisor.NIC
}

// podVM is the pod VM's configuration, decided from the handler's config,
// the pod's spec (its CRI sizing annotations: vmSize), its confidential
// init-data (nil for veil: the digest bound at launch, and whether the VM
// gets the shared directory at all: guestShareDir) and what the host
// settled. It is the handler's config.Config.VM, which `veil measure`
// computes too, plus what belongs to one pod: ID, directories, transport,
// NICs and hotplug slots. The console's line forwarding is the caller's.
func podVM(cfg config.Config, spec *specs.Spec, conf *confidentialPod, host podVMHost) hypervisor.Config {
	vcpus, mem := vmSize(cfg.Hypervisor, cfg.PinnedVCPUs(), spec.Annotations, host.HostCPUs)
	vm := cfg.VM(conf.digest(), vcpus, mem)
	vm.ID, vm.StateDir = host.ID, host.StateDir
	vm.SharedDir = guestShareDir(host.SharedDir, cfg.Confidential, conf)
	vm.Transport, vm.VsockCID = host.Transport, host.VsockCID
	vm.NICs = host.NICs
	vm.BlockSlots = podBlockSlots(cfg)
	return vm
}

// shareStorage is the CreateSandbox storage that mounts the pod's shared
// directory at guestSharedDir, the way the driver exports it
// (hypervisor.Hypervisor.Shares); nil when the VM gets no shared directory
// (sharedDir ""). The guest agent mounts shares over 9p only: another kind
// is an error naming it, as is a driver that does not export the directory.
func shareStorage(shares []hypervisor.Share, sharedDir string) (*api.Storage, error) {
	if sharedDir == "" {
		return nil, nil
	}
	for _, sh := range shares {
		if sh.HostPath != sharedDir {
			continue
		}
		if sh.Kind != hypervisor.Share9P {
			return nil, fmt.Errorf("sharing %s with the guest: the hypervisor driver exports it over %s, the guest agent mounts shares over %s only", sharedDir, sh.Kind, hypervisor.Share9P)
		}
		return &api.Storage{
			Driver:     "9p",
			Source:     sh.Tag,
			MountPoint: guestSharedDir,
			Fstype:     sh.FSType,
			Options:    sh.Options,
		}, nil
	}
	return nil, fmt.Errorf("sharing %s with the guest: the hypervisor driver does not export it", sharedDir)
}
