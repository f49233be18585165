package containers

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.+-]*$`)

// CheckID rejects an identifier that cannot name a directory and a runc
// container (what containerd accepts: letters, digits, "_.+-").
func CheckID(kind, id string) error {
	if len(id) > 1024 || !idPattern.MatchString(id) {
		return fmt.Errorf("%s %q: use letters, digits and _.+- (at most 1024, not starting with punctuation): %w", kind, id, errdefs.ErrInvalidArgument)
	}
	return nil
}

// CgroupPath is the cgroupfs path (relative to the cgroup2 root) of a
// container's cgroup in the guest.
func CgroupPath(id string) string { return "/veil/" + id }

// Rewrite says how a container's spec changes for the guest.
type Rewrite struct {
	ID string
	// Rootfs is the resolved guest path of the container's root filesystem.
	Rootfs   string
	Terminal bool
	// PIDNamespace is the sandbox's shared PID namespace path, or empty.
	PIDNamespace string
	// Confidential hardens the spec for a pod whose host is an adversary
	// (harden.go).
	Confidential bool
	// SpecVersion, when set, replaces the spec's ociVersion (for a
	// runtime that refuses the host's).
	SpecVersion string
}

// RewriteSpec parses an OCI spec from the host and makes it runnable in the
// guest: root.path is the resolved rootfs; ociVersion is r.SpecVersion
// when set; process.terminal follows the
// request; the cgroup is /veil/<id>; the network namespace is dropped (all
// containers use the VM's network); a namespace the host gave by path (a
// host path, meaning "the pod's") is shared with the VM for ipc and uts
// and created new for the others, except pid, which joins the pod's PID
// namespace when there is one (r.PIDNamespace); a container always gets
// its own cgroup namespace, as the CRI gives one on a cgroup v2 host (the
// guest is one, whatever the host's containerd saw), so it finds its own
// limits at /sys/fs/cgroup; hooks (host binaries) are dropped; and the
// mounts, masked paths and device rules are hardened (harden.go).
// A spec that does not parse or has no process is errdefs.ErrInvalidArgument.
func RewriteSpec(raw []byte, r Rewrite) (*specs.Spec, error) {
	var s specs.Spec
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, fmt.Errorf("container %q: spec is not OCI runtime spec JSON: %w: %w", r.ID, err, errdefs.ErrInvalidArgument)
	}
	if s.Process == nil {
		return nil, fmt.Errorf("container %q: spec has no process: %w", r.ID, errdefs.ErrInvalidArgument)
	}
	if len(s.Process.Args) == 0 && s.Process.CommandLine == "" {
		return nil, fmt.Errorf("container %q: spec process has no args: %w", r.ID, errdefs.ErrInvalidArgument)
	}
	readonly := s.Root != nil && s.Root.Readonly
	s.Root = &specs.Root{Path: r.Rootfs, Readonly: readonly}
	s.Process.Terminal = r.Terminal
	if r.SpecVersion != "" {
		s.Version = r.SpecVersion
	}
	s.Hooks = nil
	if s.Linux == nil {
		s.Linux = &specs.Linux{}
	}
	s.Linux.CgroupsPath = CgroupPath(r.ID)
	s.Linux.Namespaces = rewriteNamespaces(s.Linux.Namespaces, r.PIDNamespace)
	harden(&s, r.Confidential)
	return &s, nil
}

func rewriteNamespaces(in []specs.LinuxNamespace, pidns string) []specs.LinuxNamespace {
	var out []specs.LinuxNamespace
	sawPID := false
	for _, ns := range in {
		switch ns.Type {
		case specs.NetworkNamespace:
			continue
		case specs.IPCNamespace, specs.UTSNamespace:
			if ns.Path != "" {
				continue
			}
		case specs.PIDNamespace:
			sawPID = true
			ns.Path = pidns
		default:
			ns.Path = ""
		}
		out = append(out, ns)
	}
	if !sawPID && pidns != "" {
		out = append(out, specs.LinuxNamespace{Type: specs.PIDNamespace, Path: pidns})
	}
	if !slices.ContainsFunc(out, func(ns specs.LinuxNamespace) bool { return ns.Type == specs.CgroupNamespace }) {
		out = append(out, specs.LinuxNamespace{Type: specs.CgroupNamespace})
	}
	return out
}

// JoinsPodPIDNamespace reports whether a spec names its PID namespace by
// path: how the CRI asks for the pod's shared PID namespace.
func JoinsPodPIDNamespace(raw []byte) bool {
	var s struct {
		Linux *struct {
			Namespaces []specs.LinuxNamespace `json:"namespaces"`
		} `json:"linux"`
	}
	if json.Unmarshal(raw, &s) != nil || s.Linux == nil {
		return false
	}
	for _, ns := range s.Linux.Namespaces {
		if ns.Type == specs.PIDNamespace && ns.Path != "" {
			return true
		}
	}
	return false
}

// ParseProcess parses an exec request's OCI process.
func ParseProcess(raw []byte, terminal bool) (*specs.Process, error) {
	var p specs.Process
	if err := json.Unmarshal(raw, &p); err != nil {
		return nil, fmt.Errorf("process is not OCI process JSON: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	if len(p.Args) == 0 && p.CommandLine == "" {
		return nil, fmt.Errorf("process has no args: %w", errdefs.ErrInvalidArgument)
	}
	if p.Cwd == "" {
		p.Cwd = "/"
	}
	p.Terminal = terminal
	return &p, nil
}

// ParseResources parses an update request's OCI LinuxResources.
func ParseResources(raw []byte) (*specs.LinuxResources, error) {
	var r specs.LinuxResources
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("resources are not OCI LinuxResources JSON: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	return &r, nil
}
