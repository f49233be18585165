package policy

import (
	"encoding/json"
	"fmt"
	"maps"
	"path"
	"regexp"
	"slices"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/veil-runtime/veil/guest-agent/api"
	"github.com/veil-runtime/veil/guest-agent/storage"
)

// Denial is a request the policy refuses.
type Denial struct {
	// Rule is the policy key or check that refused it: a rule that would
	// allow it ("allow_exec"), the field of a bound container that
	// differs ("containers[app].args"), "containers" when no bound
	// container matches, a check ("storages", "rootfs", "image",
	// "unknown-method"), "init-data" before the document is accepted,
	// "lockdown" after a refusal.
	Rule string
	// Method is the ttrpc method ("/veil.agent.v1.Process/ExecProcess").
	Method string
	// Why says what in the request the rule forbids: the container, the
	// field, the expected and the seen value.
	Why string
}

func (d *Denial) Error() string {
	return fmt.Sprintf("%s denied by the confidential agent policy (rule %s): %s", d.Method, d.Rule, d.Why)
}

// GuestVolumeRoot is the guest's volume directory (guest-agent/volume's
// DefaultRoot): what is below it lives in guest memory, written only
// through the Volume service's path-confined copies.
const GuestVolumeRoot = "/run/veil/volumes"

// GuestImageRoot is where the Image service unpacks guest-pulled images
// (<root>/<container_id>/rootfs): verified against the init-data's image
// policy, in guest memory.
const GuestImageRoot = "/run/veil/images"

// State is what earlier requests told the policy that later decisions
// depend on; the Enforcer keeps it. The zero State is a fresh agent.
type State struct {
	// Pulled maps a container ID to the image reference PullImage fetched
	// for it (a pull the policy admitted and that succeeded).
	Pulled map[string]string
	// Created maps a container ID to the bound container it was created as
	// ("" for an unbound one).
	Created map[string]string
}

// Check decides one request (already unmarshalled) against p, on a fresh
// agent's state; see CheckState.
func (p Policy) Check(method string, req any) *Denial { return p.CheckState(method, req, State{}) }

// CheckState decides one request against p once init-data is accepted:
// the method's table entry (methods.go), and for checked methods the
// request itself, with st the images pulled and containers created so far.
// nil means allowed.
func (p Policy) CheckState(method string, req any, st State) *Denial {
	deny := func(rule, why string) *Denial { return &Denial{Rule: rule, Method: method, Why: why} }
	if method == MethodDebugConsole {
		if !p.AllowDebugConsole {
			return deny("allow_debug_console", "a root shell in the guest on the debug console port")
		}
		return nil
	}
	e, ok := methods[method]
	if !ok {
		return deny("unknown-method", fmt.Sprintf("method %s is not in the agent's method table: refused by default", method))
	}
	switch e.kind {
	case always, allowed, beforeInitData:
		return nil
	case rule:
		if !p.rule(e.name) {
			return deny(e.name, e.why)
		}
		return nil
	}
	switch method {
	case MethodCreateSandbox:
		r, _ := req.(*api.CreateSandboxRequest)
		return p.checkSandbox(r, deny)
	case MethodCreateContainer:
		r, _ := req.(*api.CreateContainerRequest)
		return p.checkCreateContainer(r, st, deny)
	case MethodExecProcess:
		r, _ := req.(*api.ExecProcessRequest)
		return p.checkExec(r, st, deny)
	case MethodUpdateContainer:
		r, _ := req.(*api.UpdateContainerRequest)
		return p.checkUpdate(r, st, deny)
	case MethodPullImage:
		r, _ := req.(*api.PullImageRequest)
		return p.checkPull(r, st, deny)
	case MethodCopyFile:
		r, _ := req.(*api.CopyFileRequest)
		return p.checkCopy(r, deny)
	case MethodRemovePath:
		r, _ := req.(*api.RemovePathRequest)
		return p.checkRemove(r, deny)
	}
	return deny("unknown-method", fmt.Sprintf("method %s has a check in the table but none in the policy", method))
}

// rule reports whether the named rule allows.
func (p Policy) rule(name string) bool {
	switch name {
	case "allow_exec":
		return p.AllowExec
	case "allow_read_output":
		return p.AllowReadOutput
	case "allow_write_stdin":
		return p.AllowWriteStdin
	case "allow_port_forward":
		return p.AllowPortForward
	case "allow_debug_console":
		return p.AllowDebugConsole
	case "deny_volume_copies":
		return !p.DenyVolumeCopies
	}
	return false
}

// AlwaysAllowed reports whether method is served in every state, even
// before init-data and locked down.
func AlwaysAllowed(method string) bool {
	e, ok := methods[method]
	return ok && e.kind == always
}

// shareOption matches the mount options the shim sends for the pod's 9p
// share (the QEMU driver's qemu.ShareOptions) and the agent's own defaults
// (guest-agent/storage):
// the only ones CreateSandbox may carry.
var shareOption = regexp.MustCompile(`^(trans=virtio|version=9p2000\.L|msize=[0-9]{1,8}|cache=(none|mmap))$`)

// checkSandbox admits the one storage veil sends: the pod's 9p share at
// the shared directory, with allow_host_share; and no pod sysctls (the
// shim sends a confidential pod's none: the init-data binds no pod-level
// sysctls, so the host may not change the guest kernel's settings).
func (p Policy) checkSandbox(r *api.CreateSandboxRequest, deny func(rule, why string) *Denial) *Denial {
	if n := len(r.GetSysctls()); n > 0 {
		names := slices.Sorted(maps.Keys(r.GetSysctls()))
		return deny("sysctls", fmt.Sprintf("pod sysctls %v: expected none in a confidential pod, saw %d", names, n))
	}
	for _, s := range r.GetStorages() {
		what := fmt.Sprintf("storage %s %q at %q", s.GetDriver(), s.GetSource(), s.GetMountPoint())
		switch {
		case s.GetDriver() != "9p":
			return deny("storages", fmt.Sprintf("%s: driver %q, want only the pod's 9p share (driver 9p)", what, s.GetDriver()))
		case s.GetSource() != storage.ShareTag:
			return deny("storages", fmt.Sprintf("%s: 9p mount tag %q, want the pod's share %q", what, s.GetSource(), storage.ShareTag))
		case s.GetMountPoint() != "" && path.Clean(s.GetMountPoint()) != storage.SharedDir:
			return deny("storages", fmt.Sprintf("%s: mount point %q, want %s (or empty)", what, s.GetMountPoint(), storage.SharedDir))
		case s.GetFstype() != "" && s.GetFstype() != "9p":
			return deny("storages", fmt.Sprintf("%s: fstype %q, want 9p", what, s.GetFstype()))
		}
		for _, o := range s.GetOptions() {
			if !shareOption.MatchString(o) {
				return deny("storages", fmt.Sprintf("%s: mount option %q, want only trans=virtio, version=9p2000.L, msize=N, cache=none|mmap", what, o))
			}
		}
		if !p.AllowHostShare {
			return deny("allow_host_share", fmt.Sprintf("mounting the host's 9p share %q at %s", s.GetSource(), storage.SharedDir))
		}
	}
	return nil
}

// validID is a container ID the agent accepts as one path element.
func validID(id string) bool {
	return id != "" && id != "." && id != ".." && !strings.ContainsAny(id, "/\x00")
}

// checkRootfs admits the container's own guest-pulled image, or (with
// allow_host_share) its rootfs in the pod's share; nothing else, and no
// mount point, fstype or options of the host's choosing.
func (p Policy) checkRootfs(id string, s *api.Storage, deny func(rule, why string) *Denial) *Denial {
	if s == nil {
		return deny("rootfs", fmt.Sprintf("container %s: no rootfs storage", id))
	}
	if s.GetMountPoint() != "" || s.GetFstype() != "" || len(s.GetOptions()) > 0 {
		return deny("rootfs", fmt.Sprintf("container %s: rootfs storage with mount_point %q, fstype %q, options %q: the agent chooses these, want them empty", id, s.GetMountPoint(), s.GetFstype(), s.GetOptions()))
	}
	switch s.GetDriver() {
	case "bind":
		// A guest path as the rootfs must be the container's own
		// guest-pulled image: anything else (a volume the host filled, the
		// agent's own root) would run what the image policy never saw.
		want := path.Join(GuestImageRoot, id, "rootfs")
		if s.GetSource() != want {
			return deny("rootfs", fmt.Sprintf("container %s: rootfs %q is not the container's guest-pulled image %s", id, s.GetSource(), want))
		}
		return nil
	case "shared":
		want := path.Join(id, "rootfs")
		if s.GetSource() != want {
			return deny("rootfs", fmt.Sprintf("container %s: shared rootfs %q, want %q", id, s.GetSource(), want))
		}
		if !p.AllowHostShare {
			return deny("allow_host_share", fmt.Sprintf("container %s: a root filesystem from the host (%s %q)", id, s.GetDriver(), s.GetSource()))
		}
		return nil
	}
	return deny("rootfs", fmt.Sprintf("container %s: rootfs driver %q, want bind (the guest-pulled image) or shared (allow_host_share)", id, s.GetDriver()))
}

func (p Policy) checkCreateContainer(r *api.CreateContainerRequest, st State, deny func(rule, why string) *Denial) *Denial {
	id := r.GetContainerId()
	if !validID(id) {
		return deny("containers", fmt.Sprintf("container ID %q is not one path element", id))
	}
	if d := p.checkRootfs(id, r.GetRootfs(), deny); d != nil {
		return d
	}
	// The shim sends a confidential container's volumes as guest volumes
	// bound by the spec, never as storages.
	if n := len(r.GetStorages()); n > 0 {
		s := r.GetStorages()[0]
		return deny("storages", fmt.Sprintf("container %s: %d extra storages (first: %s %q at %q, fstype %q): a confidential container gets none", id, n, s.GetDriver(), s.GetSource(), s.GetMountPoint(), s.GetFstype()))
	}
	var spec specs.Spec
	if err := json.Unmarshal(r.GetSpec(), &spec); err != nil {
		return deny("spec", fmt.Sprintf("container %s: the OCI spec does not parse: %v", id, err))
	}
	name := spec.Annotations[ContainerNameAnnotation]
	c := p.container(name)
	if c == nil && !p.AllowUnboundContainers {
		return deny("containers", fmt.Sprintf("container %s: %s %q names no container of the policy (bound: %s)", id, ContainerNameAnnotation, name, p.boundNames()))
	}
	image, pulled := st.Pulled[id]
	if r.GetRootfs().GetDriver() != "bind" {
		// A shared rootfs (allow_host_share) is the host's snapshot: no
		// image to compare.
		pulled = false
	} else if !pulled {
		return deny("image", fmt.Sprintf("container %s: its rootfs was not pulled in the guest (no PullImage for it succeeded)", id))
	}
	sc := specCheck{p: p, c: c, id: id, name: name, deny: deny}
	if d := sc.devices(len(r.GetDevices())); d != nil {
		return d
	}
	if c != nil && pulled && !SameImage(c.Image, image) {
		return sc.field("image", c.Image, image)
	}
	return sc.spec(&spec)
}

// checkExec admits an exec with allow_exec or of a command the container's
// binding lists, within the container's process bounds.
func (p Policy) checkExec(r *api.ExecProcessRequest, st State, deny func(rule, why string) *Denial) *Denial {
	id := r.GetContainerId()
	name, created := st.Created[id]
	if !created {
		if !p.AllowExec {
			return deny("allow_exec", fmt.Sprintf("container %s exec %s: executing a process in a container (allow_exec is false, and the container was not created through the policy)", id, r.GetExecId()))
		}
		return deny("exec", fmt.Sprintf("container %s was not created through the policy", id))
	}
	var proc specs.Process
	if err := json.Unmarshal(r.GetProcess(), &proc); err != nil {
		return deny("exec", fmt.Sprintf("container %s exec %s: the OCI process does not parse: %v", id, r.GetExecId(), err))
	}
	c := p.container(name)
	if !p.AllowExec {
		if c == nil || !slices.ContainsFunc(c.Exec, func(e Exec) bool { return slices.Equal(e.Args, proc.Args) }) {
			return deny("allow_exec", fmt.Sprintf("container %s (%q) exec %s: args %q are not one of the commands the policy binds for it, and allow_exec is false", id, name, r.GetExecId(), proc.Args))
		}
	}
	sc := specCheck{p: p, c: c, id: id, name: name, deny: deny, exec: true}
	return sc.process(&proc)
}

// checkUpdate admits resource updates but device rules, unless the
// container may have devices.
func (p Policy) checkUpdate(r *api.UpdateContainerRequest, st State, deny func(rule, why string) *Denial) *Denial {
	id := r.GetContainerId()
	var res specs.LinuxResources
	if len(r.GetResources()) > 0 {
		if err := json.Unmarshal(r.GetResources(), &res); err != nil {
			return deny("resources", fmt.Sprintf("container %s: the resources do not parse: %v", id, err))
		}
	}
	name := st.Created[id]
	sc := specCheck{p: p, c: p.container(name), id: id, name: name, deny: deny}
	if sc.privileged() {
		return nil
	}
	for _, d := range res.Devices {
		if d.Allow {
			return deny(sc.rule("resources", "allow_privileged"), fmt.Sprintf("container %s: update allows device %s %s:%s (%s); only a privileged container may open devices", id, d.Type, num(d.Major), num(d.Minor), d.Access))
		}
	}
	return nil
}

func num(p *int64) string {
	if p == nil {
		return "*"
	}
	return fmt.Sprint(*p)
}

// checkPull admits a pull of an image some bound container runs (any with
// allow_unbound_containers), once per container ID (until RemoveContainer).
func (p Policy) checkPull(r *api.PullImageRequest, st State, deny func(rule, why string) *Denial) *Denial {
	id := r.GetContainerId()
	if prev, ok := st.Pulled[id]; ok {
		return deny("image", fmt.Sprintf("container %s already has image %s: a container's image is pulled once", id, prev))
	}
	if p.AllowUnboundContainers {
		return nil
	}
	for _, c := range p.Containers {
		if SameImage(c.Image, r.GetImage()) {
			return nil
		}
	}
	var bound []string
	for _, c := range p.Containers {
		bound = append(bound, c.Name+"="+c.Image)
	}
	return deny("image", fmt.Sprintf("container %s: image %q is not the image of any container of the policy (bound: %s)", id, r.GetImage(), strings.Join(bound, ", ")))
}

// checkCopy admits volume copies (unless deny_volume_copies) without
// setuid bits, and setgid only on directories (kubelet's fsGroup).
func (p Policy) checkCopy(r *api.CopyFileRequest, deny func(rule, why string) *Denial) *Denial {
	if p.DenyVolumeCopies {
		return deny("deny_volume_copies", "copying a volume's files from the host into the guest")
	}
	// A guest-memory volume (an emptyDir, the pod's shm) holds only what the
	// pod's containers write: the host may create its directory, never put
	// or change anything inside it.
	if memoryVolume(r.GetVolume()) && (r.GetKind() != api.CopyFileRequest_DIR || r.GetPath() != memoryVolumeDir) {
		return deny("volume-copy", fmt.Sprintf("volume %s path %s: a guest-memory volume (emptyDir or shm) takes nothing from the host but its directory %q", r.GetVolume(), r.GetPath(), memoryVolumeDir))
	}
	const setuid, setgid = 0o4000, 0o2000
	mode := r.GetMode()
	if mode&setuid != 0 || (mode&setgid != 0 && r.GetKind() != api.CopyFileRequest_DIR) {
		return deny("volume-copy", fmt.Sprintf("volume %s path %s: mode %#o has a setuid or setgid bit (a copied file would run with another identity)", r.GetVolume(), r.GetPath(), mode))
	}
	return nil
}

// checkRemove admits the removal of a copied file; what the pod's
// containers wrote into a guest-memory volume is theirs.
func (p Policy) checkRemove(r *api.RemovePathRequest, deny func(rule, why string) *Denial) *Denial {
	if p.DenyVolumeCopies {
		return deny("deny_volume_copies", "removing a volume's files copied from the host")
	}
	if memoryVolume(r.GetVolume()) {
		return deny("volume-copy", fmt.Sprintf("volume %s path %s: removing from a guest-memory volume (emptyDir or shm), which holds only what the pod wrote", r.GetVolume(), r.GetPath()))
	}
	return nil
}

// memoryVolumeDir is the one entry of a guest-memory volume the host
// creates (shim/volumes.go makeMemoryEntry): the directory containers bind.
const memoryVolumeDir = "dir"

// memoryVolume reports whether a Volume service volume is a guest-memory
// one: an emptyDir ("emptydir-<name>") or the pod's shm ("shm").
func memoryVolume(name string) bool {
	return name == sourceSHM || strings.HasPrefix(name, "emptydir-")
}

// container is the bound container named name, or nil.
func (p Policy) container(name string) *Container {
	if name == "" {
		return nil
	}
	for i := range p.Containers {
		if p.Containers[i].Name == name {
			return &p.Containers[i]
		}
	}
	return nil
}

func (p Policy) boundNames() string {
	if len(p.Containers) == 0 {
		return "none"
	}
	names := make([]string, 0, len(p.Containers))
	for _, c := range p.Containers {
		names = append(names, c.Name)
	}
	return strings.Join(names, ", ")
}

// CheckContainer decides a container's spec as CreateContainer would for
// container id (its binding found by the spec's container-name
// annotation): with the image PullImage fetched for it, or, with image
// empty, a rootfs from the host's share (which needs allow_host_share and
// pins no image). spec is the spec the agent receives (the shim's guest
// spec). This is what `veil policy check` explains.
func (p Policy) CheckContainer(id, image string, spec *specs.Spec) *Denial {
	raw, err := json.Marshal(spec)
	if err != nil {
		return &Denial{Rule: "spec", Method: MethodCreateContainer, Why: fmt.Sprintf("container %s: encoding the spec: %v", id, err)}
	}
	r := &api.CreateContainerRequest{ContainerId: id, Spec: raw, Rootfs: &api.Storage{Driver: "shared", Source: path.Join(id, "rootfs")}}
	st := State{}
	if image != "" {
		r.Rootfs = &api.Storage{Driver: "bind", Source: path.Join(GuestImageRoot, id, "rootfs")}
		st.Pulled = map[string]string{id: image}
	}
	return p.CheckState(MethodCreateContainer, r, st)
}
