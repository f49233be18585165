// Package podpolicy owns the translation of a pod's Kubernetes manifest
// into the pod spec a confidential pod's init-data binds (the agent
// policy's [[containers]], guest-agent/policy): what `veil policy
// generate` writes.
//
// For each init container and container it predicts the OCI spec
// containerd's CRI writes when kubelet creates the container from the
// manifest: process.args from command/args and the image's Entrypoint/Cmd
// (a command given ignores the image's Cmd), the environment (containerd's
// default PATH, HOSTNAME, the image's Env, then kubelet's variables, a
// later name replacing an earlier one; $(VAR) references expanded as
// kubelet does), the working directory, the user (numeric only: a user
// name needs the image's /etc/passwd, so the generator refuses it and asks
// for runAsUser), capabilities (containerd's default set, add and drop,
// ALL), seccomp, sysctls and the mounts by destination and kind. What
// Kubernetes decides at run time becomes a pattern, never a blank check:
// the service-link variables (names that can never be LD_*, PATH or
// HOSTNAME, values that are IPs, ports and tcp:// URLs), HOSTNAME of a
// controller's pods, the downward API, values of ConfigMaps and Secrets
// not given to the generator.
//
// The functions are pure over the decoded objects (Decode) and the
// images' digests and configs (Resolver, the only part that talks to a
// registry, through go-containerregistry). The pod template's
// io.veil.policy/ annotations choose what the host may do besides running
// the containers: io.veil.policy/exec.<container> lists commands it may
// exec, io.veil.policy/allow-read-output lets it read the logs (see
// README.md).
package podpolicy
