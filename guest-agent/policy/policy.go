// Package policy is the guest agent's request policy for confidential pods
// (veil-dev, veil-snp, veil-tdx), where the host is an adversary: every
// request from the host passes Enforcer.Intercept, a ttrpc unary server
// interceptor, which refuses what the pod's policy forbids with
// PermissionDenied naming the rule.
//
// The policy is the [agent] policy string of the pod's init-data: a small
// TOML document of named rules. An empty policy is the default
// confidential policy: every allow_ rule false (denied), volume copies
// allowed.
//
//	allow_exec = false         # Process.ExecProcess
//	allow_read_output = false  # Process.ReadStdout, ReadStderr (logs)
//	allow_write_stdin = false  # Process.WriteStdin
//	allow_host_share = false   # the pod's 9p share from the host: CreateSandbox
//	                           # storages, and a container rootfs read from it
//	                           # (only with confidential.guest_pull = false)
//	allow_host_mounts = false  # container storages and bind mounts from the host
//	                           # (any bind whose source is not a guest volume)
//	allow_privileged = false   # CreateContainer with CAP_SYS_ADMIN
//	allow_hooks = false        # CreateContainer with OCI hooks
//	allow_debug_console = false  # a shell on the debug console port (the
//	                           # console server asks DebugConsole per session)
//	deny_volume_copies = false # Volume.CopyFile, RemovePath: configMap, secret,
//	                           # downward-API, projected volumes and the CRI's
//	                           # /etc files copied in from the host
//
// Bind mounts whose source is inside the guest's volume directory
// (GuestVolumeRoot, /run/veil/volumes: the copies the Volume service makes
// and the pod's guest-memory emptyDirs) are the guest's own and need no
// rule: their content came through the path-confined copy, never a share.
//
// Kata Containers writes agent policies in Rego and evaluates them with OPA;
// veil does not embed OPA (it would add several MiB to the guest image and a
// general-purpose language to the trusted computing base): the rules above
// are a fixed list decided by pure functions over the request.
//
// Until init-data is accepted (Attestation.SetInitData) a confidential
// agent serves only Check, GuestDetails, Version, Shutdown and SetInitData;
// after a refused document (or a TEE that could not be found) it is locked
// down: only Check, GuestDetails, Version and Shutdown, every other request
// failing with the reason. Ordinary (veil) pods are not checked at all.
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
	AllowHostShare  bool `toml:"allow_host_share"`
	AllowHostMounts bool `toml:"allow_host_mounts"`
	AllowPrivileged bool `toml:"allow_privileged"`
	AllowHooks      bool `toml:"allow_hooks"`
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
