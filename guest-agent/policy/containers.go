package policy

// The pod spec bound by init-data: the containers a confidential pod may
// run, as its owner approved them. They live in the agent policy document
// ([agent] policy of init-data) as [[containers]] tables, written by
// `veil policy generate` from the pod's Kubernetes manifest or by hand:
//
//	allow_read_output = true
//
//	[[containers]]
//	name = "app"                                  # the CRI container name
//	image = "registry.example/app@sha256:0123..." # what PullImage must fetch
//	args = ["/app", "--listen", ":8080"]
//	env = ["PATH=/usr/local/bin:/usr/bin:/bin", "MODE=prod"]
//	working_dir = "/"
//	user = { uid = 1000, gid = 1000, additional_gids = [1000] }
//	capabilities = ["CAP_NET_BIND_SERVICE"]
//	read_only_root_filesystem = true
//	seccomp = "RuntimeDefault"
//	sysctls = { "net.ipv4.ping_group_range" = "0 2147483647" }
//
//	[[containers.env_patterns]]    # values Kubernetes chooses at run time
//	name = '^[A-Z][A-Z0-9_]*_SERVICE_(HOST|PORT(_[A-Z0-9_]+)?)$'
//	value = '^[0-9a-fA-F.:]*$'
//
//	[[containers.mounts]]
//	destination = "/etc/config"
//	kind = "copy"                  # configMap, secret, projected, downwardAPI
//	read_only = true
//
//	[[containers.exec]]            # commands the host may exec (ExecProcess)
//	args = ["/bin/cat", "/tmp/ready"]
//
// Every CreateContainer names its container by the CRI container-name
// annotation; the request must match that entry field by field, and a
// refusal names the container, the field, the expected and the seen
// value. A pod whose policy lists no containers runs none, unless
// allow_unbound_containers is set (development only: the host then writes
// the container spec, within the guest's spec hardening).

// Container is one container the pod may run.
type Container struct {
	// Name is the Kubernetes container name, the CRI's
	// io.kubernetes.cri.container-name annotation.
	Name string `toml:"name"`
	// Image is the image reference PullImage must be asked for: with a
	// digest (name@sha256:...) the content is pinned; a reference without
	// one is accepted only when the init-data image policy requires a
	// signature for it (`veil policy generate --pin signature`).
	Image string `toml:"image"`
	// Args is process.args exactly (the image's entrypoint and cmd as
	// Kubernetes' command and args resolve them).
	Args []string `toml:"args"`
	// Env is the exact NAME=value entries that must all be present.
	Env []string `toml:"env"`
	// EnvPatterns admit further entries whose name and value match (the
	// Kubernetes service variables, HOSTNAME of a Deployment's pods, the
	// downward API). An entry matching neither Env nor a pattern is
	// refused.
	EnvPatterns []EnvPattern `toml:"env_patterns,omitempty"`
	// WorkingDir is process.cwd exactly.
	WorkingDir string `toml:"working_dir"`
	// User is the process's uid, gid and the most additional gids.
	User User `toml:"user"`
	// Capabilities is the most each capability set may hold; nil means
	// containerd's default set for a non-privileged container.
	Capabilities []string `toml:"capabilities,omitempty"`
	// Privileged allows a privileged container (all capabilities, host
	// devices, no masked paths).
	Privileged bool `toml:"privileged,omitempty"`
	// NoNewPrivileges requires process.noNewPrivileges (Kubernetes'
	// allowPrivilegeEscalation = false).
	NoNewPrivileges bool `toml:"no_new_privileges,omitempty"`
	// ReadOnlyRootFilesystem is root.readonly exactly.
	ReadOnlyRootFilesystem bool `toml:"read_only_root_filesystem,omitempty"`
	// Seccomp is "RuntimeDefault" or "Unconfined" (which also admits the
	// runtime's default profile: stricter is fine).
	Seccomp string `toml:"seccomp,omitempty"`
	// Sysctls is linux.sysctl exactly.
	Sysctls map[string]string `toml:"sysctls,omitempty"`
	// Mounts are the container's volumes by destination. The CRI's
	// /etc/hosts, /etc/hostname, /etc/resolv.conf, /dev/shm and the
	// termination log need no entry.
	Mounts []Mount `toml:"mounts,omitempty"`
	// Exec lists the commands the host may run in the container
	// (ExecProcess) even when allow_exec is false.
	Exec []Exec `toml:"exec,omitempty"`
}

// EnvPattern admits environment entries whose name and value match the
// regular expressions (RE2), each matched against the whole name or value
// (anchored by the agent: ^(?:...)$).
type EnvPattern struct {
	Name  string `toml:"name"`
	Value string `toml:"value"`
}

// User is a container process's identity.
type User struct {
	UID uint32 `toml:"uid"`
	GID uint32 `toml:"gid"`
	// AdditionalGIDs are the most the process may have besides GID.
	AdditionalGIDs []uint32 `toml:"additional_gids,omitempty"`
}

// Mount kinds: how a bind of a container reaches the guest.
const (
	// MountCopy is a configMap, secret, projected or downward-API volume,
	// copied into a guest volume through the Volume service.
	MountCopy = "copy"
	// MountEmptyDir is a pod-wide directory in guest memory.
	MountEmptyDir = "emptyDir"
	// MountHost is a host path shared over 9p (needs allow_host_mounts).
	MountHost = "host"
)

// Mount is one volume of a container.
type Mount struct {
	Destination string `toml:"destination"`
	Kind        string `toml:"kind"`
	ReadOnly    bool   `toml:"read_only,omitempty"`
}

// Exec is one command the host may run in a container.
type Exec struct {
	Args []string `toml:"args"`
}
