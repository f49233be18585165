// Package policy is the guest agent's request policy for confidential pods
// (veil-dev, veil-snp, veil-tdx), where the host is an adversary: every
// request from the host passes Enforcer.Intercept, a ttrpc unary server
// interceptor, which refuses what the pod's policy forbids with
// PermissionDenied naming the rule.
//
// Deny by default. Every agent RPC has an entry in one table (methods.go):
// served always (health, version, shutdown, the decision log), allowed
// once init-data is accepted (lifecycle, state, stats, network: what the
// host controls anyway, each entry saying why), allowed by a named rule,
// or allowed when a named check passes on the request. A method without
// an entry is refused (rule unknown-method); a unit test walks the
// generated descriptors so that none is missing.
//
// The policy is the [agent] policy string of the pod's init-data: a small
// TOML document of named rules and the containers the pod may run. An
// empty policy is the default confidential policy: every allow_ rule
// false (denied), volume copies allowed, no container.
//
//	allow_exec = false         # Process.ExecProcess of any command (bound
//	                           # containers' exec lists need no rule)
//	allow_read_output = false  # Process.ReadStdout, ReadStderr (logs)
//	allow_write_stdin = false  # Process.WriteStdin
//	allow_port_forward = false # PortForward: TCP connections from the host to
//	                           # the pod's loopback ports (kubectl port-forward)
//	allow_host_share = false   # the pod's 9p share from the host: CreateSandbox
//	                           # storages, and a container rootfs read from it
//	                           # (only with confidential.guest_pull = false)
//	allow_host_mounts = false  # bind mounts from the host share
//	allow_privileged = false   # unbound containers: capabilities beyond
//	                           # containerd's defaults, devices, device rules,
//	                           # the guest's PID or mount namespace,
//	                           # writable sysfs/cgroup
//	allow_hooks = false        # CreateContainer with OCI hooks
//	allow_debug_console = false  # a shell on the debug console port (the
//	                           # console server asks DebugConsole per session)
//	deny_volume_copies = false # Volume.CopyFile, RemovePath: configMap, secret,
//	                           # downward-API, projected volumes and the CRI's
//	                           # /etc files copied in from the host
//	allow_unbound_containers = false  # containers the policy does not list
//	[[containers]]             # the bound pod spec (containers.go)
//
// The checks:
//
//   - storages: CreateSandbox carries only the 9p share veil sends (driver
//     9p, tag veilshare, at /run/veil/shared, fstype 9p, options
//     trans=virtio, version=9p2000.L, msize=N, cache=none|mmap), and only
//     with allow_host_share. A container gets no storages at all.
//   - sysctls: CreateSandbox carries no pod sysctls (init-data binds none
//     at pod level; a container's linux.sysctl is compared with its
//     binding).
//   - rootfs: the container's own guest-pulled image
//     (bind of GuestImageRoot/<id>/rootfs) or, with allow_host_share, its
//     rootfs in the share (shared <id>/rootfs); no mount point, fstype or
//     options of the host's choosing.
//   - image: PullImage only of an image some bound container runs (any with
//     allow_unbound_containers), once per container ID until
//     RemoveContainer; CreateContainer's pulled image must be its
//     binding's. A shared rootfs is the host's snapshot: allow_host_share
//     gives up the image binding.
//   - containers: CreateContainer names its binding by the CRI's
//     io.kubernetes.cri.container-name annotation and is compared field by
//     field (spec.go): args, env, cwd, user, capabilities, privileged,
//     no_new_privileges, read-only root, seccomp, sysctls, mounts. A denial
//     names containers[<name>].<field>, the expected and the seen value.
//     Unbound containers (allow_unbound_containers) are not compared but
//     still hardened: capabilities within containerd's defaults, no devices
//     or device rules, their own PID and mount namespaces, read-only sysfs
//     and cgroup (all unless allow_privileged; a bound container that is
//     not privileged also needs kubelet's masked and read-only /proc and
//     /sys paths), binds only of guest volumes (or the host share
//     with allow_host_mounts), kernel mounts only proc, tmpfs, devpts
//     (newinstance), mqueue, sysfs and cgroup at their usual places, no
//     seccomp notifier, no hooks (unless allow_hooks).
//   - exec: allow_exec, or the args of one of the container's [[exec]]
//     entries exactly; the process's env, user and capabilities stay within
//     the container's binding either way.
//   - resources: UpdateContainer may not allow devices unless the
//     container is privileged.
//   - volume-copy: no setuid file or directory, no setgid file.
//
// Seccomp residual: RuntimeDefault is checked as "a profile whose default
// action refuses, with no user-space notifier", not as containerd's exact
// profile: a host may send a looser refusing profile (say, one that
// allows every syscall by name). The kernel the container could attack is
// the guest's, inside the TEE, and the container runs only the bound
// image and command.
//
// Bind mounts whose source is inside the guest's volume directory
// (GuestVolumeRoot, /run/veil/volumes: the copies the Volume service makes
// and the pod's guest-memory emptyDirs) are the guest's own: their content
// came through the path-confined copy, never a share.
//
// Kata Containers writes agent policies in Rego and evaluates them with OPA;
// veil does not embed OPA (it would add several MiB to the guest image and a
// general-purpose language to the trusted computing base): the rules above
// are a fixed list decided by pure functions over the request.
//
// Every denial, and every allowed call of a checked method, is kept in a
// bounded decision log (decisions.go, served by Attestation.DecisionLog)
// and each denial is logged.
//
// Until init-data is accepted (Attestation.SetInitData) a confidential
// agent serves only the always-served methods and SetInitData; after a
// refused document (or a TEE that could not be found) it is locked down:
// only the always-served methods, every other request failing with the
// reason. Ordinary (veil) pods are not checked at all.
package policy

import (
	"bytes"
	"errors"
	"fmt"
	"path"
	"reflect"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// Policy is a pod's agent policy.
type Policy struct {
	AllowExec       bool `toml:"allow_exec"`
	AllowReadOutput bool `toml:"allow_read_output"`
	AllowWriteStdin bool `toml:"allow_write_stdin"`
	// AllowPortForward lets the host connect to the ports the pod listens
	// on in the guest, loopback included (the PortForward service).
	AllowPortForward bool `toml:"allow_port_forward"`
	AllowHostShare   bool `toml:"allow_host_share"`
	AllowHostMounts  bool `toml:"allow_host_mounts"`
	AllowPrivileged  bool `toml:"allow_privileged"`
	AllowHooks       bool `toml:"allow_hooks"`
	// AllowDebugConsole lets the host open a root shell in the guest.
	AllowDebugConsole bool `toml:"allow_debug_console"`
	// DenyVolumeCopies refuses every file the host copies into the guest
	// (configMap, secret, downward-API and projected volumes, the CRI's
	// /etc/hosts, resolv.conf, hostname: the Volume service). Copies are
	// allowed by default because every Kubernetes pod has such files; a pod
	// that must take nothing from the host sets this.
	DenyVolumeCopies bool `toml:"deny_volume_copies"`
	// AllowUnboundContainers lets the host create containers the policy
	// does not list (development: the host writes their specs, within the
	// guest's spec hardening). Without it a policy with no [[containers]]
	// runs no container.
	AllowUnboundContainers bool `toml:"allow_unbound_containers"`
	// Containers are the containers the pod may run (containers.go).
	Containers []Container `toml:"containers"`
}

// Default is the confidential default: every rule denies.
func Default() Policy { return Policy{} }

// Parse reads a policy document; empty means Default. Unknown keys are an
// error naming them.
func Parse(doc string) (Policy, error) {
	p := Default()
	if strings.TrimSpace(doc) == "" {
		return p, nil
	}
	dec := toml.NewDecoder(bytes.NewReader([]byte(doc))).DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		var strict *toml.StrictMissingError
		if errors.As(err, &strict) {
			keys := make([]string, 0, len(strict.Errors))
			for _, e := range strict.Errors {
				keys = append(keys, strings.Join(e.Key(), "."))
			}
			return Policy{}, fmt.Errorf("agent policy: unknown rules %s (known: %s)", strings.Join(keys, ", "), strings.Join(knownKeys(), ", "))
		}
		return Policy{}, fmt.Errorf("agent policy: parsing toml: %w", err)
	}
	if err := p.validate(); err != nil {
		return Policy{}, fmt.Errorf("agent policy: %w", err)
	}
	return p, nil
}

// validate refuses bindings the checks could not apply: a container
// without a name or named twice, an unknown mount kind or seccomp value, an
// env pattern that does not compile.
func (p Policy) validate() error {
	seen := map[string]bool{}
	for i, c := range p.Containers {
		if c.Name == "" {
			return fmt.Errorf("containers[%d]: no name (the CRI container name)", i)
		}
		if seen[c.Name] {
			return fmt.Errorf("containers[%s]: the name is used twice", c.Name)
		}
		seen[c.Name] = true
		switch c.Seccomp {
		case "", SeccompRuntimeDefault, SeccompUnconfined:
		default:
			return fmt.Errorf("containers[%s].seccomp = %q: want %s or %s", c.Name, c.Seccomp, SeccompRuntimeDefault, SeccompUnconfined)
		}
		for _, m := range c.Mounts {
			switch m.Kind {
			case MountCopy, MountEmptyDir, MountHost:
			default:
				return fmt.Errorf("containers[%s].mounts %s: kind %q, want %s, %s or %s", c.Name, m.Destination, m.Kind, MountCopy, MountEmptyDir, MountHost)
			}
			if !path.IsAbs(m.Destination) {
				return fmt.Errorf("containers[%s].mounts: destination %q is not an absolute path", c.Name, m.Destination)
			}
		}
		for _, e := range c.EnvPatterns {
			for _, re := range []string{e.Name, e.Value} {
				if _, err := anchored(re); err != nil {
					return fmt.Errorf("containers[%s].env_patterns: %w", c.Name, err)
				}
			}
		}
	}
	return nil
}

// knownKeys are the policy's top-level keys, from the struct tags.
func knownKeys() []string {
	t := reflect.TypeFor[Policy]()
	keys := make([]string, 0, t.NumField())
	for i := range t.NumField() {
		k, _, _ := strings.Cut(t.Field(i).Tag.Get("toml"), ",")
		keys = append(keys, k)
	}
	return keys
}
