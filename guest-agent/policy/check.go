package policy

import (
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/veil-runtime/veil/guest-agent/api"
)

// Denial is a request the policy refuses.
type Denial struct {
	// Rule is the policy key that would allow it ("init-data" before the
	// document is accepted, "lockdown" after a refusal).
	Rule string
	// Method is the ttrpc method ("/veil.agent.v1.Process/ExecProcess").
	Method string
	// Why says what in the request the rule forbids.
	Why string
}

func (d *Denial) Error() string {
	return fmt.Sprintf("%s denied by the confidential agent policy (rule %s): %s", d.Method, d.Rule, d.Why)
}

// Full method names the policy knows.
const (
	methodCreateSandbox   = "/veil.agent.v1.Sandbox/CreateSandbox"
	methodCreateContainer = "/veil.agent.v1.Container/CreateContainer"
	methodExec            = "/veil.agent.v1.Process/ExecProcess"
	methodReadStdout      = "/veil.agent.v1.Process/ReadStdout"
	methodReadStderr      = "/veil.agent.v1.Process/ReadStderr"
	methodWriteStdin      = "/veil.agent.v1.Process/WriteStdin"
	methodCopyFile        = "/veil.agent.v1.Volume/CopyFile"
	methodRemovePath      = "/veil.agent.v1.Volume/RemovePath"
	// MethodSetInitData is the one request served before init-data.
	MethodSetInitData = "/veil.agent.v1.Attestation/SetInitData"
	// MethodDebugConsole names a debug console session in denials: it is
	// not an RPC but a connection to the console port.
	MethodDebugConsole = "debug-console"
)

// GuestVolumeRoot is the guest's volume directory (guest-agent/volume's
// DefaultRoot): what is below it lives in guest memory, written only
// through the Volume service's path-confined copies.
const GuestVolumeRoot = "/run/veil/volumes"

// GuestImageRoot is where the Image service unpacks guest-pulled images
// (<root>/<container_id>/rootfs): verified against the init-data's image
// policy, in guest memory.
const GuestImageRoot = "/run/veil/images"

// guestVolume reports whether a bind source is inside GuestVolumeRoot.
// Symlinks there are relative and never climb (guest-agent/volume), so a
// path below the root stays below it when the kernel follows it.
func guestVolume(src string) bool {
	if !path.IsAbs(src) || slices.Contains(strings.Split(src, "/"), "..") {
		return false
	}
	return strings.HasPrefix(path.Clean(src), GuestVolumeRoot+"/")
}

// alwaysAllowed are served in every state, even locked down: they reveal
// nothing of the workload and let the host see the agent and power it off.
var alwaysAllowed = []string{
	"/veil.agent.v1.Sandbox/Check",
	"/veil.agent.v1.Sandbox/GuestDetails",
	"/veil.agent.v1.Sandbox/Version",
	"/veil.agent.v1.Sandbox/Shutdown",
}

// AlwaysAllowed reports whether method is served in every state.
func AlwaysAllowed(method string) bool { return slices.Contains(alwaysAllowed, method) }

// hostStorage reports whether a storage's content comes from the host.
func hostStorage(s *api.Storage) bool {
	switch s.GetDriver() {
	case "9p", "shared", "virtiofs":
		return true
	}
	return false
}

// Check decides one request (already unmarshalled) against p.
func (p Policy) Check(method string, req any) *Denial {
	deny := func(rule, why string) *Denial { return &Denial{Rule: rule, Method: method, Why: why} }
	switch method {
	case methodExec:
		if !p.AllowExec {
			return deny("allow_exec", "executing a process in a container")
		}
	case methodReadStdout, methodReadStderr:
		if !p.AllowReadOutput {
			return deny("allow_read_output", "reading a container's output (logs)")
		}
	case methodWriteStdin:
		if !p.AllowWriteStdin {
			return deny("allow_write_stdin", "writing to a container's stdin")
		}
	case methodCopyFile, methodRemovePath:
		if p.DenyVolumeCopies {
			return deny("deny_volume_copies", "copying a volume's files from the host into the guest")
		}
	case MethodDebugConsole:
		if !p.AllowDebugConsole {
			return deny("allow_debug_console", "a root shell in the guest on the debug console port")
		}
	case methodCreateSandbox:
		r, _ := req.(*api.CreateSandboxRequest)
		for _, s := range r.GetStorages() {
			if hostStorage(s) && !p.AllowHostShare {
				return deny("allow_host_share", fmt.Sprintf("mounting the host's %s share %q at %s", s.GetDriver(), s.GetSource(), s.GetMountPoint()))
			}
		}
	case methodCreateContainer:
		r, _ := req.(*api.CreateContainerRequest)
		return p.checkCreateContainer(r, deny)
	}
	return nil
}

func (p Policy) checkCreateContainer(r *api.CreateContainerRequest, deny func(rule, why string) *Denial) *Denial {
	if rootfs := r.GetRootfs(); rootfs != nil && hostStorage(rootfs) && !p.AllowHostShare {
		return deny("allow_host_share", fmt.Sprintf("container %s: a root filesystem from the host (%s %q)", r.GetContainerId(), rootfs.GetDriver(), rootfs.GetSource()))
	}
	// A guest path as the rootfs must be the container's own guest-pulled
	// image: anything else (a volume the host filled, the agent's own
	// root) would run what the image policy never saw.
	if rootfs := r.GetRootfs(); rootfs.GetDriver() == "bind" {
		want := path.Join(GuestImageRoot, r.GetContainerId(), "rootfs")
		if rootfs.GetSource() != want {
			return deny("rootfs", fmt.Sprintf("container %s: rootfs %q is not the container's guest-pulled image %s", r.GetContainerId(), rootfs.GetSource(), want))
		}
	}
	for _, s := range r.GetStorages() {
		if hostStorage(s) && !p.AllowHostMounts {
			return deny("allow_host_mounts", fmt.Sprintf("container %s: mounting %s %q from the host at %s", r.GetContainerId(), s.GetDriver(), s.GetSource(), s.GetMountPoint()))
		}
		if s.GetDriver() == "bind" && !guestVolume(s.GetSource()) && !p.AllowHostMounts {
			return deny("allow_host_mounts", fmt.Sprintf("container %s: bind storage of %s (not a guest volume under %s) at %s", r.GetContainerId(), s.GetSource(), GuestVolumeRoot, s.GetMountPoint()))
		}
	}
	var spec specs.Spec
	if len(r.GetSpec()) > 0 {
		if err := json.Unmarshal(r.GetSpec(), &spec); err != nil {
			return deny("spec", fmt.Sprintf("container %s: the OCI spec does not parse: %v", r.GetContainerId(), err))
		}
	}
	if h := spec.Hooks; h != nil && !p.AllowHooks {
		//nolint:staticcheck // Prestart is deprecated but still run by runc.
		if n := len(h.Prestart) + len(h.CreateRuntime) + len(h.CreateContainer) + len(h.StartContainer) + len(h.Poststart) + len(h.Poststop); n > 0 {
			return deny("allow_hooks", fmt.Sprintf("container %s: %d OCI hooks", r.GetContainerId(), n))
		}
	}
	if c := spec.Process; c != nil && c.Capabilities != nil && !p.AllowPrivileged {
		if slices.Contains(c.Capabilities.Bounding, "CAP_SYS_ADMIN") || slices.Contains(c.Capabilities.Effective, "CAP_SYS_ADMIN") {
			return deny("allow_privileged", fmt.Sprintf("container %s: CAP_SYS_ADMIN (a privileged container)", r.GetContainerId()))
		}
	}
	if !p.AllowHostMounts {
		for _, m := range spec.Mounts {
			bind := m.Type == "bind" || slices.Contains(m.Options, "bind") || slices.Contains(m.Options, "rbind")
			if bind && !guestVolume(m.Source) {
				return deny("allow_host_mounts", fmt.Sprintf("container %s: bind mount of %s at %s (not a guest volume under %s)", r.GetContainerId(), m.Source, m.Destination, GuestVolumeRoot))
			}
		}
	}
	return nil
}
