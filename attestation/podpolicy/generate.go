package podpolicy

import (
	"encoding/json"
	"fmt"
	"path"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/veil-runtime/veil/guest-agent/policy"
)

// Pod template annotations the generator reads (and nothing else does:
// they only shape the generated policy).
const (
	// AnnotationPrefix starts every annotation of the generator; an
	// unknown key under it is an error (a typo would silently deny).
	AnnotationPrefix = "io.veil.policy/"
	// AnnotationExecPrefix + container name: a JSON list of argv lists
	// the host may exec in that container (kubectl exec, crictl exec),
	// e.g. io.veil.policy/exec.app: '[["cat", "/tmp/ready"], ["/bin/sh", "-c", "pg_isready"]]'.
	AnnotationExecPrefix = AnnotationPrefix + "exec."
	// AnnotationAllowReadOutput "true" lets the host read the containers'
	// output (kubectl logs): allow_read_output. Default false.
	AnnotationAllowReadOutput = AnnotationPrefix + "allow-read-output"
)

// ServiceAccountMountPath is where Kubernetes' ServiceAccount admission
// mounts the projected API token unless automountServiceAccountToken is
// false.
const ServiceAccountMountPath = "/var/run/secrets/kubernetes.io/serviceaccount"

// DefaultPath is containerd's PATH for a spec whose image sets none
// (oci.WithDefaultPathEnv).
const DefaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Image is what the generator knows of one image of the manifest.
type Image struct {
	// Ref is the reference the policy binds and the pod must use: the
	// manifest's reference pinned by digest (name@sha256:...), or as
	// written when pinned by signature.
	Ref string
	// Digest is the manifest (or index) digest; empty when the registry
	// was not reached.
	Digest string
	// Config is the linux/amd64 image config; nil when the registry was
	// not reached (--pin signature only): the entrypoint, the image's
	// environment and user are then unknown.
	Config *v1.Config
}

// Result is the policy generated for one workload.
type Result struct {
	Workload *Workload
	Policy   policy.Policy
	// Warnings are things the author should know: a gid that containerd
	// would read from the image, image volumes without a volumeMount,
	// host mounts the policy will refuse.
	Warnings []string
}

// Generate builds the agent policy of w's pods: one policy.Container per
// init container and container, each the spec containerd's CRI will
// write for it when kubelet creates it from w. objs supplies the
// ConfigMaps and Secrets the environment references (values of those
// not given become patterns); images maps each image reference as the
// manifest spells it to what the registry said.
func Generate(w *Workload, objs *Objects, images map[string]Image) (*Result, error) {
	if objs == nil {
		objs = &Objects{}
	}
	if len(w.Spec.Containers) == 0 {
		// The API server refuses such a pod too; bound, it would run nothing.
		return nil, fmt.Errorf("%s: the pod spec has no containers", w.ID())
	}
	g := &gen{w: w, objs: objs, images: images, res: &Result{Workload: w}}
	if err := g.annotations(); err != nil {
		return nil, err
	}
	for _, list := range [][]corev1.Container{w.Spec.InitContainers, w.Spec.Containers} {
		for i := range list {
			c, err := g.container(&list[i])
			if err != nil {
				return nil, fmt.Errorf("%s container %s: %w", w.ID(), list[i].Name, err)
			}
			g.res.Policy.Containers = append(g.res.Policy.Containers, c)
		}
	}
	if len(w.Spec.EphemeralContainers) > 0 {
		return nil, fmt.Errorf("%s: ephemeral containers cannot be bound in advance", w.ID())
	}
	for name := range g.execs {
		if !slices.ContainsFunc(g.res.Policy.Containers, func(c policy.Container) bool { return c.Name == name }) {
			return nil, fmt.Errorf("%s: annotation %s%s names no container of the pod", w.ID(), AnnotationExecPrefix, name)
		}
	}
	return g.res, nil
}

type gen struct {
	w      *Workload
	objs   *Objects
	images map[string]Image
	res    *Result
	execs  map[string][][]string
}

func (g *gen) warn(format string, args ...any) {
	g.res.Warnings = append(g.res.Warnings, fmt.Sprintf("%s: ", g.w.ID())+fmt.Sprintf(format, args...))
}

// annotations reads the io.veil.policy/ annotations of the pod template.
func (g *gen) annotations() error {
	g.execs = map[string][][]string{}
	keys := make([]string, 0, len(g.w.Meta.Annotations))
	for k := range g.w.Meta.Annotations {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := g.w.Meta.Annotations[k]
		switch {
		case !strings.HasPrefix(k, AnnotationPrefix):
		case k == AnnotationAllowReadOutput:
			b, err := strconv.ParseBool(v)
			if err != nil {
				return fmt.Errorf("%s: annotation %s: %q, want \"true\" or \"false\"", g.w.ID(), k, v)
			}
			g.res.Policy.AllowReadOutput = b
		case strings.HasPrefix(k, AnnotationExecPrefix):
			var argvs [][]string
			if err := json.Unmarshal([]byte(v), &argvs); err != nil {
				return fmt.Errorf("%s: annotation %s: want a JSON list of argv lists ([[\"cat\", \"/tmp/ready\"]]): %w", g.w.ID(), k, err)
			}
			for i, a := range argvs {
				if len(a) == 0 {
					return fmt.Errorf("%s: annotation %s: command %d is empty", g.w.ID(), k, i)
				}
			}
			g.execs[strings.TrimPrefix(k, AnnotationExecPrefix)] = argvs
		default:
			return fmt.Errorf("%s: unknown annotation %s (known: %s, %s<container>)", g.w.ID(), k, AnnotationAllowReadOutput, AnnotationExecPrefix)
		}
	}
	return nil
}

func (g *gen) container(c *corev1.Container) (policy.Container, error) {
	img, ok := g.images[c.Image]
	if !ok {
		return policy.Container{}, fmt.Errorf("image %q was not resolved", c.Image)
	}
	cfg := v1.Config{}
	if img.Config != nil {
		cfg = *img.Config
	}
	out := policy.Container{Name: c.Name, Image: img.Ref}

	kenv, err := g.kubeletEnv(c)
	if err != nil {
		return out, err
	}
	links := g.w.Spec.EnableServiceLinks == nil || *g.w.Spec.EnableServiceLinks
	lookup := func(name string) (string, bool, bool) {
		if v, ok := kenv.get(name); ok {
			return v.value, true, v.known()
		}
		if mayBeServiceVar(name, links) {
			return "", true, false
		}
		return "", false, false
	}

	// process.args: containerd's WithProcessArgs over kubelet's expanded
	// command and args.
	command, err := expandAll(c.Command, lookup, "command")
	if err != nil {
		return out, err
	}
	args, err := expandAll(c.Args, lookup, "args")
	if err != nil {
		return out, err
	}
	if len(command) == 0 {
		if img.Config == nil {
			return out, fmt.Errorf("image %s: its config is unknown (the registry was not reached), so is its entrypoint: set command in the manifest", c.Image)
		}
		if len(args) == 0 {
			args = cfg.Cmd
		}
		if !(len(cfg.Entrypoint) == 1 && cfg.Entrypoint[0] == "") {
			command = cfg.Entrypoint
		}
	}
	out.Args = append(append([]string{}, command...), args...)
	if len(out.Args) == 0 {
		return out, fmt.Errorf("no command: neither the manifest nor image %s gives one", c.Image)
	}

	// process.env: containerd's default PATH, HOSTNAME, the image's
	// environment, then kubelet's variables, a later name replacing an
	// earlier one.
	var env envList
	env.set("PATH", envVal{value: strings.TrimPrefix(DefaultPath, "PATH=")})
	if h := g.hostnamePattern(); h != "" {
		env.set("HOSTNAME", envVal{pattern: h})
	} else {
		env.set("HOSTNAME", envVal{value: g.hostname()})
	}
	if img.Config == nil {
		g.warn("container %s: image %s's config is unknown; its own environment (ENV) is not bound, so the image must set none beyond PATH or the agent refuses the container: write the variables into env", c.Name, c.Image)
	}
	for _, e := range cfg.Env {
		k, v, _ := strings.Cut(e, "=")
		env.set(k, envVal{value: v})
	}
	for _, k := range kenv.names {
		env.set(k, kenv.vals[k])
	}
	for _, k := range env.names {
		v := env.vals[k]
		if v.known() {
			out.Env = append(out.Env, k+"="+v.value)
		} else {
			out.EnvPatterns = append(out.EnvPatterns, policy.EnvPattern{Name: exactName(k), Value: v.pattern})
		}
	}
	out.EnvPatterns = append(out.EnvPatterns, kenv.patterns...)
	prefix := kubernetesPrefix
	if links {
		prefix = servicePrefix
	}
	out.EnvPatterns = append(out.EnvPatterns, serviceEnvPatterns(prefix)...)

	switch {
	case c.WorkingDir != "":
		out.WorkingDir = c.WorkingDir
	case cfg.WorkingDir != "":
		out.WorkingDir = cfg.WorkingDir
	default:
		out.WorkingDir = "/"
	}

	if out.User, err = g.user(c, cfg.User); err != nil {
		return out, err
	}
	g.security(c, &out)
	if out.Seccomp, err = g.seccomp(c); err != nil {
		return out, err
	}
	if sc := g.w.Spec.SecurityContext; sc != nil && len(sc.Sysctls) > 0 {
		out.Sysctls = map[string]string{}
		for _, s := range sc.Sysctls {
			out.Sysctls[s.Name] = s.Value
		}
	}
	if out.Mounts, err = g.mounts(c, cfg); err != nil {
		return out, err
	}
	out.Exec = g.exec(c)
	return out, nil
}

// expandAll expands kubelet's $(VAR) references in a command or args.
func expandAll(in []string, lookup func(string) (string, bool, bool), field string) ([]string, error) {
	var out []string
	for _, a := range in {
		v, known := expand(a, lookup)
		if !known {
			return nil, fmt.Errorf("%s %q references a variable whose value Kubernetes chooses at run time (a service variable, the downward API, a ConfigMap or Secret not given): the argument cannot be bound", field, a)
		}
		out = append(out, v)
	}
	return out, nil
}

// kubeletEnvResult is the container's environment as kubelet sends it
// in the CRI request: exact variables, per-name patterns, and patterns of
// envFrom sources the generator was not given.
type kubeletEnvResult struct {
	envList
	patterns []policy.EnvPattern
}

// kubeletEnv is kubelet's makeEnvironmentVariables: envFrom first, then
// env (each value expanded over what came before and the service
// variables); the service variables themselves are patterns.
func (g *gen) kubeletEnv(c *corev1.Container) (*kubeletEnvResult, error) {
	res := &kubeletEnvResult{}
	ns := g.w.Namespace
	links := g.w.Spec.EnableServiceLinks == nil || *g.w.Spec.EnableServiceLinks
	for _, from := range c.EnvFrom {
		var (
			kind, name string
			data       map[string]string
			found      bool
		)
		switch {
		case from.ConfigMapRef != nil:
			kind, name = "ConfigMap", from.ConfigMapRef.Name
			data, found = g.objs.configMap(ns, name)
		case from.SecretRef != nil:
			kind, name = "Secret", from.SecretRef.Name
			data, found = g.objs.secret(ns, name)
		default:
			continue
		}
		if found {
			keys := make([]string, 0, len(data))
			for k := range data {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				if strings.Contains(k, "=") || k == "" {
					continue // kubelet skips keys that are not variable names
				}
				res.set(from.Prefix+k, envVal{value: data[k]})
			}
			continue
		}
		nameExpr := "^" + regexp.QuoteMeta(from.Prefix) + `[-._a-zA-Z0-9]+$`
		if from.Prefix == "" || admitsSensitive(nameExpr) {
			return nil, fmt.Errorf("envFrom %s %s with prefix %q: the %s was not given (-f), so its keys are unknown, and a pattern for them would admit LD_PRELOAD, PATH and the like: give the %s, or set a prefix such as \"APP_\"", kind, name, from.Prefix, kind, kind)
		}
		res.patterns = append(res.patterns, policy.EnvPattern{Name: nameExpr, Value: anyValue})
		g.warn("container %s: envFrom %s %s was not given: any variable %s* is admitted with any value", c.Name, kind, name, from.Prefix)
	}
	lookup := func(name string) (string, bool, bool) {
		if v, ok := res.get(name); ok {
			return v.value, true, v.known()
		}
		if mayBeServiceVar(name, links) {
			return "", true, false
		}
		return "", false, false
	}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			v, known := expand(e.Value, lookup)
			if known {
				res.set(e.Name, envVal{value: v})
			} else {
				res.set(e.Name, envVal{pattern: anyValue})
			}
			continue
		}
		v, set, err := g.valueFrom(c, e)
		if err != nil {
			return nil, fmt.Errorf("env %s: %w", e.Name, err)
		}
		if set {
			res.set(e.Name, v)
		}
	}
	return res, nil
}

// valueFrom is one env entry's valueFrom; set is false when kubelet
// leaves the variable out (an optional key that is missing).
func (g *gen) valueFrom(c *corev1.Container, e corev1.EnvVar) (envVal, bool, error) {
	ns := g.w.Namespace
	src := e.ValueFrom
	switch {
	case src.ConfigMapKeyRef != nil:
		r := src.ConfigMapKeyRef
		data, ok := g.objs.configMap(ns, r.Name)
		return keyValue("ConfigMap", r.Name, r.Key, data, ok, r.Optional)
	case src.SecretKeyRef != nil:
		r := src.SecretKeyRef
		data, ok := g.objs.secret(ns, r.Name)
		return keyValue("Secret", r.Name, r.Key, data, ok, r.Optional)
	case src.FieldRef != nil:
		return envVal{pattern: fieldPattern(src.FieldRef.FieldPath)}, true, nil
	case src.ResourceFieldRef != nil:
		return envVal{pattern: `^[0-9]+$`}, true, nil
	case src.FileKeyRef != nil:
		return envVal{pattern: anyValue}, true, nil
	}
	return envVal{}, false, fmt.Errorf("valueFrom names no source")
}

func keyValue(kind, name, key string, data map[string]string, found bool, optional *bool) (envVal, bool, error) {
	if !found {
		return envVal{pattern: anyValue}, true, nil
	}
	v, ok := data[key]
	if !ok {
		if optional != nil && *optional {
			return envVal{}, false, nil
		}
		return envVal{}, false, fmt.Errorf("%s %s has no key %q (kubelet would not start the container)", kind, name, key)
	}
	return envVal{value: v}, true, nil
}

// fieldPattern is the value pattern of a downward-API field.
func fieldPattern(field string) string {
	switch {
	case field == "metadata.name", field == "metadata.namespace", field == "spec.nodeName", field == "spec.serviceAccountName":
		return "^" + dnsLabel + "$"
	case field == "metadata.uid":
		return `^[0-9a-f-]{36}$`
	case field == "status.hostIP", field == "status.podIP":
		return "^" + ipExpr + "$"
	case field == "status.hostIPs", field == "status.podIPs":
		return "^" + ipExpr + "(?:," + ipExpr + ")*$"
	}
	return anyValue // labels, annotations
}

// hostname is the pod's host name when it is known: spec.hostname, or a
// Pod's name, truncated as kubelet does (63 bytes, no trailing '-' or '.').
func (g *gen) hostname() string {
	h := g.w.Spec.Hostname
	if h == "" && g.w.Kind == "Pod" {
		h = g.w.Name
	}
	if len(h) > 63 {
		h = strings.TrimRight(h[:63], "-.")
	}
	return h
}

// hostnamePattern is a value pattern for HOSTNAME when the pods' names
// are chosen by a controller ("" when hostname is known).
func (g *gen) hostnamePattern() string {
	if g.w.Spec.HostNetwork {
		return "^" + dnsLabel + "$" // the node's name
	}
	if g.hostname() != "" {
		return ""
	}
	name := g.w.Name
	switch {
	case name != "" && g.w.Kind == "StatefulSet":
		return "^" + regexp.QuoteMeta(name) + `-[0-9]+$`
	case name != "" && len(name) <= 40:
		return "^" + regexp.QuoteMeta(name) + `-[a-z0-9](?:[-a-z0-9]*[a-z0-9])?$`
	}
	return "^" + dnsLabel + "$"
}

// user is process.user: runAsUser/runAsGroup (container over pod), else
// the image's numeric User; a user name cannot be resolved without the
// image's /etc/passwd, which containerd reads from a rootfs the host does
// not have when the guest pulls.
func (g *gen) user(c *corev1.Container, imageUser string) (policy.User, error) {
	var uid, gid *int64
	var nonRoot *bool
	if psc := g.w.Spec.SecurityContext; psc != nil {
		uid, gid, nonRoot = psc.RunAsUser, psc.RunAsGroup, psc.RunAsNonRoot
	}
	if sc := c.SecurityContext; sc != nil {
		if sc.RunAsUser != nil {
			uid = sc.RunAsUser
		}
		if sc.RunAsGroup != nil {
			gid = sc.RunAsGroup
		}
		if sc.RunAsNonRoot != nil {
			nonRoot = sc.RunAsNonRoot
		}
	}
	var u policy.User
	gidKnown := false
	switch {
	case uid != nil:
		u.UID = uint32(*uid)
	case imageUser != "":
		us, gs, hasGroup := strings.Cut(imageUser, ":")
		n, err := strconv.ParseUint(us, 10, 32)
		if err != nil {
			return u, fmt.Errorf("image %s runs as user %q, a name: the uid it stands for is in the image's /etc/passwd, which the generator does not read; set securityContext.runAsUser (and runAsGroup) in the manifest", c.Image, imageUser)
		}
		u.UID = uint32(n)
		if hasGroup && gid == nil {
			n, err := strconv.ParseUint(gs, 10, 32)
			if err != nil {
				return u, fmt.Errorf("image %s runs as group %q, a name: set securityContext.runAsGroup in the manifest", c.Image, gs)
			}
			u.GID, gidKnown = uint32(n), true
		}
	}
	if gid != nil {
		u.GID, gidKnown = uint32(*gid), true
	}
	if nonRoot != nil && *nonRoot && u.UID == 0 {
		return u, fmt.Errorf("runAsNonRoot is set but the container runs as uid 0 (kubelet would not start it): set runAsUser")
	}
	if !gidKnown && u.UID != 0 {
		g.warn("container %s: uid %d without runAsGroup: the bound gid is 0 (what containerd writes when it cannot read the image's /etc/passwd, as under guest pull); set runAsGroup to be explicit", c.Name, u.UID)
	}
	gids := []uint32{u.GID}
	if psc := g.w.Spec.SecurityContext; psc != nil {
		for _, s := range psc.SupplementalGroups {
			gids = append(gids, uint32(s))
		}
		if psc.FSGroup != nil {
			gids = append(gids, uint32(*psc.FSGroup))
		}
	}
	slices.Sort(gids)
	u.AdditionalGIDs = slices.Compact(gids)
	return u, nil
}

// security sets capabilities, privileged, no_new_privileges and the
// read-only root filesystem.
func (g *gen) security(c *corev1.Container, out *policy.Container) {
	sc := c.SecurityContext
	if sc != nil && sc.Privileged != nil && *sc.Privileged {
		out.Privileged = true
		out.Capabilities = slices.Sorted(slices.Values(allCaps))
	} else {
		out.Capabilities = capabilities(sc)
	}
	if sc != nil {
		out.NoNewPrivileges = sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation
		out.ReadOnlyRootFilesystem = sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem
	}
}

// defaultCaps is containerd's default capability set (oci.defaultUnixCaps).
var defaultCaps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
	"CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
	"CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// allCaps are the Linux capabilities (0 to 40): what "ALL" and a
// privileged container get.
var allCaps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
	"CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
	"CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
	"CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT",
	"CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME",
	"CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL",
	"CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
	"CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
}

// capabilities is containerd's WithCapabilities over the default set:
// add ALL, drop ALL, then each added and each dropped name ("CAP_" +
// upper case, as the CRI spells them), sorted.
func capabilities(sc *corev1.SecurityContext) []string {
	set := append([]string{}, defaultCaps...)
	if sc != nil && sc.Capabilities != nil {
		add, drop := sc.Capabilities.Add, sc.Capabilities.Drop
		isAll := func(c corev1.Capability) bool { return strings.ToUpper(string(c)) == "ALL" }
		if slices.ContainsFunc(add, isAll) {
			set = append([]string{}, allCaps...)
		}
		if slices.ContainsFunc(drop, isAll) {
			set = nil
		}
		for _, c := range add {
			if n := "CAP_" + strings.ToUpper(string(c)); !isAll(c) && !slices.Contains(set, n) {
				set = append(set, n)
			}
		}
		for _, c := range drop {
			n := "CAP_" + strings.ToUpper(string(c))
			set = slices.DeleteFunc(set, func(s string) bool { return s == n })
		}
	}
	slices.Sort(set)
	if set == nil {
		set = []string{}
	}
	return set
}

// seccomp is the container's seccomp profile (container over pod):
// RuntimeDefault, or Unconfined when none is set (kubelet's default) or
// the container is privileged (containerd applies none then).
func (g *gen) seccomp(c *corev1.Container) (string, error) {
	var p *corev1.SeccompProfile
	if psc := g.w.Spec.SecurityContext; psc != nil {
		p = psc.SeccompProfile
	}
	if sc := c.SecurityContext; sc != nil {
		if sc.SeccompProfile != nil {
			p = sc.SeccompProfile
		}
		if sc.Privileged != nil && *sc.Privileged {
			return "Unconfined", nil
		}
	}
	if p == nil {
		return "Unconfined", nil
	}
	switch p.Type {
	case corev1.SeccompProfileTypeRuntimeDefault:
		return "RuntimeDefault", nil
	case corev1.SeccompProfileTypeUnconfined:
		return "Unconfined", nil
	}
	return "", fmt.Errorf("seccompProfile %s: a node-local profile is the host's file and cannot be bound; use RuntimeDefault", p.Type)
}

// mounts are the container's volumes by destination, with the kind of
// each volume as it reaches the guest, plus the service-account token
// ServiceAccount admission adds.
func (g *gen) mounts(c *corev1.Container, cfg v1.Config) ([]policy.Mount, error) {
	if len(c.VolumeDevices) > 0 {
		return nil, fmt.Errorf("volumeDevices (raw block volumes from the host) cannot be bound in a confidential pod")
	}
	var out []policy.Mount
	at := map[string]bool{}
	for _, vm := range c.VolumeMounts {
		vol := g.volume(vm.Name)
		if vol == nil {
			return nil, fmt.Errorf("volumeMount %s names no volume of the pod", vm.Name)
		}
		kind, ro := MountKind(vol)
		if vm.SubPath != "" || vm.SubPathExpr != "" {
			// kubelet binds a subPath from its volume-subpaths
			// directory: a host path, never a guest copy.
			kind, ro = policy.MountHost, false
		}
		if kind == policy.MountHost {
			g.warn("container %s: volume %s at %s comes from the host: the agent refuses it unless the policy sets allow_host_mounts", c.Name, vm.Name, vm.MountPath)
		}
		dest := path.Clean(vm.MountPath)
		out = append(out, policy.Mount{Destination: dest, Kind: kind, ReadOnly: vm.ReadOnly || ro})
		at[dest] = true
	}
	automount := g.w.Spec.AutomountServiceAccountToken == nil || *g.w.Spec.AutomountServiceAccountToken
	if automount && !at[ServiceAccountMountPath] {
		out = append(out, policy.Mount{Destination: ServiceAccountMountPath, Kind: policy.MountCopy, ReadOnly: true})
	}
	vols := make([]string, 0, len(cfg.Volumes))
	for v := range cfg.Volumes {
		vols = append(vols, v)
	}
	sort.Strings(vols)
	for _, v := range vols {
		if !at[path.Clean(v)] {
			g.warn("container %s: image %s declares VOLUME %s and no volumeMount covers it: containerd binds a host directory there, which the agent refuses; mount an emptyDir at %s", c.Name, c.Image, v, v)
		}
	}
	return out, nil
}

func (g *gen) volume(name string) *corev1.Volume {
	for i := range g.w.Spec.Volumes {
		if g.w.Spec.Volumes[i].Name == name {
			return &g.w.Spec.Volumes[i]
		}
	}
	return nil
}

// MountKind is how a volume reaches a confidential pod's guest, and
// whether kubelet mounts it read-only whatever the volumeMount says
// (its atomic-writer volumes are).
func MountKind(v *corev1.Volume) (kind string, readOnly bool) {
	switch {
	case v.ConfigMap != nil, v.Secret != nil, v.Projected != nil, v.DownwardAPI != nil:
		return policy.MountCopy, true
	case v.EmptyDir != nil:
		return policy.MountEmptyDir, false
	}
	return policy.MountHost, false
}

// exec lists the commands the host may run in c: the exec annotation's,
// the exec probes' (kubelet expands $(VAR) in them from env's literal
// values) and the exec lifecycle hooks'.
func (g *gen) exec(c *corev1.Container) []policy.Exec {
	static := map[string]string{}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			static[e.Name] = e.Value
		}
	}
	lookup := func(name string) (string, bool, bool) {
		v, ok := static[name]
		return v, ok, true
	}
	var out []policy.Exec
	add := func(argv []string) {
		if len(argv) == 0 || slices.ContainsFunc(out, func(e policy.Exec) bool { return slices.Equal(e.Args, argv) }) {
			return
		}
		out = append(out, policy.Exec{Args: argv})
	}
	for _, a := range g.execs[c.Name] {
		add(a)
	}
	for _, p := range []*corev1.Probe{c.StartupProbe, c.LivenessProbe, c.ReadinessProbe} {
		if p != nil && p.Exec != nil {
			var argv []string
			for _, a := range p.Exec.Command {
				v, _ := expand(a, lookup)
				argv = append(argv, v)
			}
			add(argv)
		}
	}
	if l := c.Lifecycle; l != nil {
		for _, h := range []*corev1.LifecycleHandler{l.PostStart, l.PreStop} {
			if h != nil && h.Exec != nil {
				add(h.Exec.Command)
			}
		}
	}
	return out
}

func images(cs []corev1.Container) []string {
	out := make([]string, 0, len(cs))
	for _, c := range cs {
		out = append(out, c.Image)
	}
	return out
}
