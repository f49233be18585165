package policy

import (
	"encoding/json"
	"fmt"
	"maps"
	"path"
	"regexp"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/veil-runtime/veil/guest-agent/storage"
)

// ContainerNameAnnotation is the CRI's annotation naming a container (its
// Kubernetes name): how CreateContainer finds the container's binding.
// ctr users set none, and match no binding.
const ContainerNameAnnotation = "io.kubernetes.cri.container-name"

// containerName is the CRI container name a raw spec carries ("" when it
// does not parse or has none).
func containerName(raw []byte) string {
	var s struct {
		Annotations map[string]string `json:"annotations"`
	}
	if json.Unmarshal(raw, &s) != nil {
		return ""
	}
	return s.Annotations[ContainerNameAnnotation]
}

// DefaultCapabilities is containerd's capability set for a container that
// is not privileged: the most a binding without capabilities (or an
// unbound container without allow_privileged) may have.
var DefaultCapabilities = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
	"CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
	"CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// RequiredMaskedPaths and RequiredReadonlyPaths are the paths under /proc
// and /sys every container that is not privileged must have masked or
// read-only: Kubernetes' and containerd's defaults (which also list
// /sys/devices/virtual/powercap, not required here: older kubelets omit
// it).
var (
	RequiredMaskedPaths = []string{
		"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
		"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
	}
	RequiredReadonlyPaths = []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}
)

// CRIMountDestinations are the binds the CRI adds to every container,
// admitted without a Mount in the binding: its sandbox files, copied into
// a guest volume (shim/volumes.go), the pod's /dev/shm in guest memory,
// and the default termination log (a guest-memory file).
var CRIMountDestinations = []string{"/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/dev/shm", "/dev/termination-log"}

// kernelMounts are the mounts of a filesystem type (not binds) a
// container may have, by destination.
var kernelMounts = map[string][]string{
	"proc":    {"/proc"},
	"tmpfs":   {"/dev", "/dev/shm"},
	"devpts":  {"/dev/pts"},
	"mqueue":  {"/dev/mqueue"},
	"sysfs":   {"/sys"},
	"cgroup":  {"/sys/fs/cgroup"},
	"cgroup2": {"/sys/fs/cgroup"},
}

// Seccomp values of a binding.
const (
	SeccompRuntimeDefault = "RuntimeDefault"
	SeccompUnconfined     = "Unconfined"
)

// SameImage reports whether the reference seen names the image the
// binding want names: the same repository and digest when want has one,
// else the same repository and tag (and no digest in seen either), after
// the usual normalisation (busybox is docker.io/library/busybox:latest).
func SameImage(want, seen string) bool {
	if want == seen {
		return want != ""
	}
	w, err := name.ParseReference(want)
	if err != nil {
		return false
	}
	s, err := name.ParseReference(seen)
	if err != nil {
		return false
	}
	if w.Context().Name() != s.Context().Name() {
		return false
	}
	wd, wIsDigest := w.(name.Digest)
	sd, sIsDigest := s.(name.Digest)
	if wIsDigest {
		return sIsDigest && wd.DigestStr() == sd.DigestStr()
	}
	return !sIsDigest && w.Identifier() == s.Identifier()
}

// specCheck compares one container's spec (or an exec's process) with its
// binding c, or, for an unbound container (c nil), applies the hardening
// alone.
type specCheck struct {
	p    Policy
	c    *Container
	id   string
	name string
	deny func(rule, why string) *Denial
	// exec: the process is an ExecProcess's (args and cwd are the exec's).
	exec bool
}

// rule names the denial: the binding's field, or the rule an unbound
// container would need.
func (s specCheck) rule(field, unbound string) string {
	if s.c != nil {
		return fmt.Sprintf("containers[%s].%s", s.c.Name, field)
	}
	return unbound
}

func (s specCheck) what() string {
	w := "container " + s.id
	if s.name != "" {
		w += fmt.Sprintf(" (%q)", s.name)
	}
	if s.exec {
		w += " exec"
	}
	return w
}

// field is a bound field that differs.
func (s specCheck) field(field string, want, seen any) *Denial {
	return s.deny(s.rule(field, field), fmt.Sprintf("%s: %s: expected %s, seen %s", s.what(), field, show(want), show(seen)))
}

func show(v any) string {
	switch v := v.(type) {
	case string:
		return fmt.Sprintf("%q", v)
	case []string:
		return fmt.Sprintf("%q", v)
	}
	return fmt.Sprintf("%v", v)
}

// privileged reports whether the container may be privileged: its
// binding says so, or, unbound, allow_privileged.
func (s specCheck) privileged() bool {
	if s.c != nil {
		return s.c.Privileged
	}
	return s.p.AllowPrivileged
}

// devices refuses host block devices for a container that is not
// privileged.
func (s specCheck) devices(n int) *Denial {
	if n > 0 && !s.privileged() {
		return s.deny(s.rule("privileged", "allow_privileged"), fmt.Sprintf("%s: %d host block devices; only a privileged container may have devices", s.what(), n))
	}
	return nil
}

// spec compares a container's whole spec.
func (s specCheck) spec(spec *specs.Spec) *Denial {
	if h := spec.Hooks; h != nil && !s.p.AllowHooks {
		//nolint:staticcheck // Prestart is deprecated but still run by runc.
		if n := len(h.Prestart) + len(h.CreateRuntime) + len(h.CreateContainer) + len(h.StartContainer) + len(h.Poststart) + len(h.Poststop); n > 0 {
			return s.deny("allow_hooks", fmt.Sprintf("%s: %d OCI hooks", s.what(), n))
		}
	}
	if spec.Process == nil {
		return s.deny(s.rule("args", "spec"), fmt.Sprintf("%s: the spec has no process", s.what()))
	}
	if d := s.process(spec.Process); d != nil {
		return d
	}
	if c := s.c; c != nil {
		ro := spec.Root != nil && spec.Root.Readonly
		if ro != c.ReadOnlyRootFilesystem {
			return s.field("read_only_root_filesystem", c.ReadOnlyRootFilesystem, ro)
		}
	}
	linux := spec.Linux
	if linux == nil {
		linux = &specs.Linux{}
	}
	if !s.privileged() {
		if d := s.unprivileged(linux); d != nil {
			return d
		}
	}
	if d := s.seccomp(linux.Seccomp); d != nil {
		return d
	}
	if c := s.c; c != nil && (len(c.Sysctls) > 0 || len(linux.Sysctl) > 0) && !maps.Equal(c.Sysctls, linux.Sysctl) {
		return s.field("sysctls", c.Sysctls, linux.Sysctl)
	}
	for _, m := range spec.Mounts {
		if d := s.mount(m); d != nil {
			return d
		}
	}
	return nil
}

// unprivileged is what a container that is not privileged must not have:
// devices, device rules, unmasked /proc and /sys paths, the guest's own PID
// or mount namespace.
func (s specCheck) unprivileged(linux *specs.Linux) *Denial {
	rule := s.rule("privileged", "allow_privileged")
	if len(linux.Devices) > 0 {
		return s.deny(rule, fmt.Sprintf("%s: linux.devices %s; only a privileged container may have devices", s.what(), linux.Devices[0].Path))
	}
	if r := linux.Resources; r != nil {
		for _, d := range r.Devices {
			if d.Allow {
				return s.deny(rule, fmt.Sprintf("%s: device rule allows %s %s:%s (%s); only a privileged container may open devices", s.what(), d.Type, num(d.Major), num(d.Minor), d.Access))
			}
		}
	}
	// containerd's CRI empties its own masked paths and masks only what
	// the client sends: kubelet sends RequiredMaskedPaths, crictl and other
	// clients nothing. Required of bound containers only: what masking
	// keeps from a container is the guest kernel's, and an unbound
	// container runs the host's code anyway.
	if s.c != nil {
		if d := s.masked(linux, rule); d != nil {
			return d
		}
	}
	for _, ns := range []specs.LinuxNamespaceType{specs.PIDNamespace, specs.MountNamespace} {
		if !slices.ContainsFunc(linux.Namespaces, func(n specs.LinuxNamespace) bool { return n.Type == ns }) {
			return s.deny(rule, fmt.Sprintf("%s: no %s namespace: the container would share the guest agent's", s.what(), ns))
		}
	}
	return nil
}

// masked requires the default masked and read-only paths.
func (s specCheck) masked(linux *specs.Linux, rule string) *Denial {
	for _, p := range RequiredMaskedPaths {
		if !slices.Contains(linux.MaskedPaths, p) {
			return s.deny(rule, fmt.Sprintf("%s: %s is not in linux.maskedPaths (want %q masked)", s.what(), p, RequiredMaskedPaths))
		}
	}
	for _, p := range RequiredReadonlyPaths {
		if !slices.Contains(linux.ReadonlyPaths, p) {
			return s.deny(rule, fmt.Sprintf("%s: %s is not in linux.readonlyPaths (want %q read-only)", s.what(), p, RequiredReadonlyPaths))
		}
	}
	return nil
}

// seccomp refuses a user-space notifier (it would decide the container's
// syscalls) and, for a RuntimeDefault binding, a profile that allows by
// default.
func (s specCheck) seccomp(sp *specs.LinuxSeccomp) *Denial {
	rule := s.rule("seccomp", "seccomp")
	if sp != nil {
		if sp.ListenerPath != "" {
			return s.deny(rule, fmt.Sprintf("%s: seccomp listenerPath %q (a notifier outside the container would answer its syscalls)", s.what(), sp.ListenerPath))
		}
		for _, sc := range sp.Syscalls {
			if sc.Action == specs.ActNotify {
				return s.deny(rule, fmt.Sprintf("%s: seccomp action SCMP_ACT_NOTIFY for %q", s.what(), sc.Names))
			}
		}
	}
	if c := s.c; c != nil && c.Seccomp == SeccompRuntimeDefault {
		if sp == nil {
			return s.field("seccomp", "a profile that refuses by default (RuntimeDefault)", "none (unconfined)")
		}
		if sp.DefaultAction == specs.ActAllow || sp.DefaultAction == specs.ActLog || sp.DefaultAction == "" {
			return s.field("seccomp", "a profile that refuses by default (RuntimeDefault)", "default action "+string(sp.DefaultAction))
		}
	}
	return nil
}

// process compares a container's (or an exec's) process with the binding:
// args and cwd (not for an exec, whose args checkExec matched), env, user,
// capabilities, no_new_privileges.
func (s specCheck) process(proc *specs.Process) *Denial {
	c := s.c
	if c != nil && !s.exec {
		if !slices.Equal(proc.Args, c.Args) {
			return s.field("args", c.Args, proc.Args)
		}
		if proc.Cwd != c.WorkingDir {
			return s.field("working_dir", c.WorkingDir, proc.Cwd)
		}
	}
	if c != nil {
		if d := s.env(proc.Env); d != nil {
			return d
		}
		if proc.User.UID != c.User.UID {
			return s.field("user.uid", c.User.UID, proc.User.UID)
		}
		if proc.User.GID != c.User.GID {
			return s.field("user.gid", c.User.GID, proc.User.GID)
		}
		for _, g := range proc.User.AdditionalGids {
			if g != c.User.GID && !slices.Contains(c.User.AdditionalGIDs, g) {
				return s.field("user.additional_gids", fmt.Sprintf("a subset of %v and %d", c.User.AdditionalGIDs, c.User.GID), proc.User.AdditionalGids)
			}
		}
		if c.NoNewPrivileges && !proc.NoNewPrivileges {
			return s.field("no_new_privileges", true, false)
		}
	}
	if s.privileged() {
		return nil
	}
	most := DefaultCapabilities
	if c != nil && c.Capabilities != nil {
		most = c.Capabilities
	}
	if caps := proc.Capabilities; caps != nil {
		for _, set := range []struct {
			name string
			caps []string
		}{{"bounding", caps.Bounding}, {"effective", caps.Effective}, {"permitted", caps.Permitted}, {"inheritable", caps.Inheritable}, {"ambient", caps.Ambient}} {
			for _, cp := range set.caps {
				if !slices.Contains(most, cp) {
					return s.deny(s.rule("capabilities", "allow_privileged"), fmt.Sprintf("%s: capability %s in the %s set; expected at most %q", s.what(), cp, set.name, most))
				}
			}
		}
	}
	return nil
}

// env checks the environment: no name twice, every entry bound exactly or
// matching a pattern, and (for the container's own process) every exact
// entry present.
func (s specCheck) env(env []string) *Denial {
	c := s.c
	names := make(map[string]bool, len(env))
	for _, kv := range env {
		n, v, _ := strings.Cut(kv, "=")
		if names[n] {
			return s.deny(s.rule("env", "env"), fmt.Sprintf("%s: env: %s is set twice", s.what(), n))
		}
		names[n] = true
		if slices.Contains(c.Env, kv) || matchesPattern(c.EnvPatterns, n, v) {
			continue
		}
		return s.deny(s.rule("env", "env"), fmt.Sprintf("%s: env: %q is neither a bound entry nor matches an env pattern (bound: %q)", s.what(), kv, c.Env))
	}
	if !s.exec {
		for _, want := range c.Env {
			if !slices.Contains(env, want) {
				return s.deny(s.rule("env", "env"), fmt.Sprintf("%s: env: expected %q, seen %s", s.what(), want, missing(env, want)))
			}
		}
	}
	return nil
}

func missing(env []string, want string) string {
	n, _, _ := strings.Cut(want, "=")
	for _, kv := range env {
		if k, _, _ := strings.Cut(kv, "="); k == n {
			return fmt.Sprintf("%q", kv)
		}
	}
	return "no " + n
}

// anchored compiles an env pattern matched against the whole name or
// value.
func anchored(re string) (*regexp.Regexp, error) { return regexp.Compile(`^(?:` + re + `)$`) }

func matchesPattern(patterns []EnvPattern, n, v string) bool {
	for _, p := range patterns {
		nr, err := anchored(p.Name)
		if err != nil {
			continue
		}
		vr, err := anchored(p.Value)
		if err != nil {
			continue
		}
		if nr.MatchString(n) && vr.MatchString(v) {
			return true
		}
	}
	return false
}

func isBind(m specs.Mount) bool {
	return m.Type == "bind" || slices.Contains(m.Options, "bind") || slices.Contains(m.Options, "rbind")
}

func readOnly(opts []string) bool { return slices.Contains(opts, "ro") || slices.Contains(opts, "rro") }

// Source kinds of a bind, beyond the Mount kinds of a binding.
const (
	// sourceSHM is the pod's /dev/shm in guest memory.
	sourceSHM = "shm"
	// sourceGuest is any other guest path: never bound into a container.
	sourceGuest = "guest path"
)

// bindSource is the kind of a bind's source: a guest volume copy, an
// emptyDir or the pod's shm in guest memory, the host's share, or another
// guest path.
func bindSource(src string) string {
	if !path.IsAbs(src) || slices.Contains(strings.Split(src, "/"), "..") {
		return sourceGuest
	}
	src = path.Clean(src)
	if rel, ok := strings.CutPrefix(src, GuestVolumeRoot+"/"); ok {
		vol, _, _ := strings.Cut(rel, "/")
		switch {
		case vol == "shm":
			return sourceSHM
		case strings.HasPrefix(vol, "emptydir-"):
			return MountEmptyDir
		}
		return MountCopy
	}
	if strings.HasPrefix(src, storage.SharedDir+"/") {
		return MountHost
	}
	return sourceGuest
}

// mount checks one mount of the spec.
func (s specCheck) mount(m specs.Mount) *Denial {
	dest := path.Clean(m.Destination)
	rule := s.rule("mounts", "mounts")
	if !isBind(m) {
		dests, ok := kernelMounts[m.Type]
		if !ok || !slices.Contains(dests, dest) {
			return s.deny(rule, fmt.Sprintf("%s: mount of type %q at %s; only proc, tmpfs, devpts, mqueue, sysfs and cgroup at their usual places", s.what(), m.Type, m.Destination))
		}
		switch m.Type {
		case "sysfs", "cgroup", "cgroup2":
			if !readOnly(m.Options) && !s.privileged() {
				return s.deny(s.rule("privileged", "allow_privileged"), fmt.Sprintf("%s: %s at %s is writable; only a privileged container may write it", s.what(), m.Type, m.Destination))
			}
		case "devpts":
			if !slices.Contains(m.Options, "newinstance") {
				return s.deny(rule, fmt.Sprintf("%s: devpts at %s without newinstance (the guest's own terminals)", s.what(), m.Destination))
			}
		}
		return nil
	}
	kind := bindSource(m.Source)
	if kind == sourceGuest {
		return s.deny(rule, fmt.Sprintf("%s: bind of %s at %s: neither a guest volume under %s nor the host's share", s.what(), m.Source, m.Destination, GuestVolumeRoot))
	}
	if kind == MountHost && !s.p.AllowHostMounts {
		return s.deny("allow_host_mounts", fmt.Sprintf("%s: bind mount of %s from the host at %s", s.what(), m.Source, m.Destination))
	}
	c := s.c
	if c == nil {
		return nil
	}
	i := slices.IndexFunc(c.Mounts, func(b Mount) bool { return path.Clean(b.Destination) == dest })
	if i < 0 {
		want := ""
		switch dest {
		case "/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/dev/termination-log":
			want = MountCopy
		case "/dev/shm":
			want = sourceSHM
		default:
			return s.deny(rule, fmt.Sprintf("%s: bind of %s at %s: no mount of the policy has that destination", s.what(), m.Source, m.Destination))
		}
		if kind != want {
			return s.deny(rule, fmt.Sprintf("%s: %s is the CRI's; expected a %s source, seen %s (%s)", s.what(), m.Destination, want, kind, m.Source))
		}
		return nil
	}
	b := c.Mounts[i]
	if kind != b.Kind {
		return s.deny(rule, fmt.Sprintf("%s: mount at %s: expected kind %s, seen %s (%s)", s.what(), m.Destination, b.Kind, kind, m.Source))
	}
	if b.ReadOnly && !readOnly(m.Options) {
		return s.deny(rule, fmt.Sprintf("%s: mount at %s: expected read-only, seen options %q", s.what(), m.Destination, m.Options))
	}
	return nil
}
