package containers

import (
	"path"
	"slices"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/veil-runtime/veil/guest-agent/volume"
)

// Guest-side hardening of a container's spec. These are rewrites, made
// whatever the pod's policy says: the policy (guest-agent/policy) decides
// whether a request is allowed at all; what is rewritten here is what the
// guest insists on for every container it runs.
//
// Every pod: a bind whose source is a guest volume (volume.DefaultRoot:
// configMap, secret, downward-API and projected copies, emptyDirs, the
// pod's shm) is mounted nosuid,nodev. The volume tmpfs itself is nosuid,
// nodev (boot), but runc remounts a bind with exactly the spec's flags
// (to apply "ro", say), which would drop flags inherited from the source.
//
// A confidential pod, whose host is an adversary, also gets:
//   - nosuid,nodev on every bind, whatever its source: a host-shared file
//     (allow_host_mounts) is the host's, setuid bits included;
//   - its own PID and mount namespaces when the spec asks for none (a
//     hostPID-style spec would otherwise share the VM's, where pid 1 is the
//     agent: /proc/1/root is the guest's root, /proc/1/mem its memory);
//   - sysfs mounted read-only;
//   - containerd's default masked and read-only paths (/proc/kcore,
//     /sys/firmware, /proc/sys, ...) added when the spec lacks them;
//   - a deny-all device rule first in linux.resources.devices, so only
//     the rules the spec lists (which the policy compares with the bound
//     spec) allow anything; the rewrite itself adds no device or rule.

// DefaultMaskedPaths are containerd's default linux.maskedPaths.
var DefaultMaskedPaths = []string{
	"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
	"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
	"/sys/firmware", "/sys/devices/virtual/powercap",
}

// DefaultReadonlyPaths are containerd's default linux.readonlyPaths.
var DefaultReadonlyPaths = []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}

// harden applies the rewrites above to s.
func harden(s *specs.Spec, confidential bool) {
	for i := range s.Mounts {
		m := &s.Mounts[i]
		switch {
		case isBind(*m) && (confidential || inVolumes(m.Source)):
			m.Options = withOptions(m.Options, []string{"nosuid", "nodev"}, []string{"suid", "dev"})
		case confidential && m.Type == "sysfs":
			m.Options = withOptions(m.Options, []string{"ro"}, []string{"rw"})
		}
	}
	if !confidential {
		return
	}
	for _, t := range []specs.LinuxNamespaceType{specs.PIDNamespace, specs.MountNamespace} {
		if !slices.ContainsFunc(s.Linux.Namespaces, func(ns specs.LinuxNamespace) bool { return ns.Type == t }) {
			s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: t})
		}
	}
	for _, p := range DefaultMaskedPaths {
		if !slices.Contains(s.Linux.MaskedPaths, p) {
			s.Linux.MaskedPaths = append(s.Linux.MaskedPaths, p)
		}
	}
	for _, p := range DefaultReadonlyPaths {
		if !slices.Contains(s.Linux.ReadonlyPaths, p) {
			s.Linux.ReadonlyPaths = append(s.Linux.ReadonlyPaths, p)
		}
	}
	if s.Linux.Resources == nil {
		s.Linux.Resources = &specs.LinuxResources{}
	}
	denyAll := specs.LinuxDeviceCgroup{Allow: false, Access: "rwm"}
	devs := s.Linux.Resources.Devices
	if len(devs) == 0 || !isDenyAll(devs[0]) {
		s.Linux.Resources.Devices = append([]specs.LinuxDeviceCgroup{denyAll}, devs...)
	}
}

// isBind reports whether m is a bind mount (by type or option).
func isBind(m specs.Mount) bool {
	return m.Type == "bind" || slices.Contains(m.Options, "bind") || slices.Contains(m.Options, "rbind")
}

// inVolumes reports whether a mount source lies in the guest volumes.
func inVolumes(source string) bool {
	p := path.Clean("/" + source)
	return p == volume.DefaultRoot || len(p) > len(volume.DefaultRoot) && p[:len(volume.DefaultRoot)+1] == volume.DefaultRoot+"/"
}

// withOptions returns opts with every option of add present and every
// option of drop removed.
func withOptions(opts, add, drop []string) []string {
	out := make([]string, 0, len(opts)+len(add))
	for _, o := range opts {
		if !slices.Contains(drop, o) && !slices.Contains(out, o) {
			out = append(out, o)
		}
	}
	for _, o := range add {
		if !slices.Contains(out, o) {
			out = append(out, o)
		}
	}
	return out
}

func isDenyAll(r specs.LinuxDeviceCgroup) bool {
	return !r.Allow && (r.Type == "" || r.Type == "a") && r.Major == nil && r.Minor == nil && r.Access == "rwm"
}
