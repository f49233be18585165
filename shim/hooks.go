package shim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// OCI hooks. A spec's hooks name host binaries; the shim runs on the host
// those the OCI runtime spec runs in the runtime's namespace, and none go
// to the guest (guestSpec drops them):
//
//   - prestart and createRuntime, in that order, at Create, with status
//     "creating". For the pod's first container they run before the VM
//     boots, so that what they set up in the pod's network namespace (the
//     CNI interfaces nerdctl's createRuntime hook adds) becomes the VM's
//     network cards. A failure fails Create.
//   - poststart at Start, after the container's process started, status
//     "running"; poststop at Delete, after the container is gone (and, for
//     the pod's last, after the VM is gone), status "stopped". A failure is
//     logged and the remaining hooks still run, as the spec says.
//   - createContainer and startContainer must run in the container's
//     namespaces, which are in the VM: a host binary cannot run there, and
//     the guest image holds no copy of it. veil refuses a container that
//     has them, naming the hook, rather than run it in the wrong place or
//     drop it silently (a CDI device's hooks, for example, would otherwise
//     seem to work and leave the device unusable).
//
// Each hook runs in the runtime's network namespace, the shim's (as runc
// runs them), and the pid of its state is in the pod's network namespace:
// the spec's namespace path (the CRI's, or `ctr run --with-ns
// network:...`), or, when the spec asks for a new network namespace
// without a path (ctr, nerdctl), one the shim creates for the pod before
// the first hook and removes with the pod; for a pod on the host's network,
// the shim's own.
//
// The state on a hook's stdin is the OCI runtime spec's: ociVersion, id,
// status, bundle, annotations, and pid. There is no host process that is
// the container (it runs in the VM), and QEMU runs in the shim's network
// namespace, not the pod's (shim/network passes it taps). So pid is a
// thread of the shim that enters the pod's network namespace and stays
// there until the hook has exited: /proc/<pid>/ns/net is the pod's
// namespace while the hook runs, which is what hooks read it for. nerdctl's
// CNI hook runs CNI ADD on it: the bridge and the host end of the veth are
// made in the runtime's namespace, eth0 in the pod's, whose interfaces
// then become the VM's network cards. It is not a process that outlives
// the hook. (Running the hook itself inside the pod's namespace would put
// nerdctl's bridge there too: the VM would get the bridge as a card of its
// own, and the container would reach only itself.)
//
// Confidential handlers run the same host hooks: they see only what the
// host has anyway (the pod's network namespace, the bundle), nothing of
// the guest, and cannot change what runs in it.

// hookSet is what the shim keeps to run a container's host hooks.
type hookSet struct {
	prestart, createRuntime, poststart, poststop []specs.Hook
	ociVersion, id, bundle                       string
	annotations                                  map[string]string
	// netns is the pod's network namespace path; "" is the shim's own.
	netns string
}

// hostHooks takes the hooks of spec the host runs and refuses the ones it
// cannot (createContainer, startContainer).
func hostHooks(id, bundle string, spec *specs.Spec) (hookSet, error) {
	hs := hookSet{ociVersion: spec.Version, id: id, bundle: bundle, annotations: spec.Annotations}
	h := spec.Hooks
	if h == nil {
		return hs, nil
	}
	for stage, hooks := range map[string][]specs.Hook{"createContainer": h.CreateContainer, "startContainer": h.StartContainer} {
		if len(hooks) > 0 {
			return hookSet{}, fmt.Errorf("container %s: OCI %s hook %s: it must run in the container's namespaces, which are in the pod VM, where the host's binary does not exist; veil runs only prestart, createRuntime, poststart and poststop hooks (on the host): %w",
				id, stage, hooks[0].Path, errdefs.ErrNotImplemented)
		}
	}
	//nolint:staticcheck // Prestart is deprecated in the spec, still used (NVIDIA, older tools).
	hs.prestart = h.Prestart
	hs.createRuntime, hs.poststart, hs.poststop = h.CreateRuntime, h.Poststart, h.Poststop
	return hs, nil
}

// empty reports whether hs has no hook at all.
func (hs hookSet) empty() bool {
	return len(hs.prestart)+len(hs.createRuntime)+len(hs.poststart)+len(hs.poststop) == 0
}

// state is the OCI state of the container for a hook run by pid.
func (hs hookSet) state(status specs.ContainerState, pid int) specs.State {
	v := hs.ociVersion
	if v == "" {
		v = specs.Version
	}
	return specs.State{Version: v, ID: hs.id, Status: status, Pid: pid, Bundle: hs.bundle, Annotations: hs.annotations}
}

// runCreate runs the prestart then the createRuntime hooks; the first
// failure stops them and is returned.
func (hs hookSet) runCreate(ctx context.Context) error {
	if err := runHooks(ctx, "prestart", hs.prestart, hs.netns, hs.state(specs.StateCreating, 0)); err != nil {
		return err
	}
	return runHooks(ctx, "createRuntime", hs.createRuntime, hs.netns, hs.state(specs.StateCreating, 0))
}

// runPoststart runs the poststart hooks, logging failures.
func (hs hookSet) runPoststart(ctx context.Context) {
	hs.runLogged(ctx, "poststart", hs.poststart, specs.StateRunning)
}

// runPoststop runs the poststop hooks, logging failures.
func (hs hookSet) runPoststop(ctx context.Context) {
	hs.runLogged(ctx, "poststop", hs.poststop, specs.StateStopped)
}

func (hs hookSet) runLogged(ctx context.Context, stage string, hooks []specs.Hook, status specs.ContainerState) {
	for i := range hooks {
		if err := runHooks(ctx, stage, hooks[i:i+1], hs.netns, hs.state(status, 0)); err != nil {
			log.G(ctx).WithError(err).Warn("OCI hook failed; going on, as the runtime spec says for " + stage)
		}
	}
}

// runHooks runs hooks one after the other (runHook), each with st on its
// stdin, its pid set to a thread in the network namespace at netnsPath (""
// for the shim's own).
func runHooks(ctx context.Context, stage string, hooks []specs.Hook, netnsPath string, st specs.State) error {
	for i, h := range hooks {
		if err := runHook(ctx, h, netnsPath, st); err != nil {
			return fmt.Errorf("running OCI %s hook %d (%s) of container %s: %w", stage, i, h.Path, st.ID, err)
		}
	}
	return nil
}

// inThreadNetNS runs fn on a locked OS thread; enter, when not nil, moves
// that thread into another network namespace first. The thread is
// unlocked only once it is back in its own namespace; otherwise the Go
// runtime discards it (or, the main thread, never runs Go code on it
// again) rather than reuse a thread in another namespace.
func inThreadNetNS(enter func() error, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("opening the shim's network namespace: %w", err)
			return
		}
		defer orig.Close()
		if enter != nil {
			if err := enter(); err != nil {
				errc <- err
				if netns.Set(orig) == nil {
					runtime.UnlockOSThread()
				}
				return
			}
		}
		err = fn()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// runHook runs one hook in the shim's own network namespace, the
// runtime's, as runc runs them, with st's pid a shim thread that holds the
// pod's network namespace (netnsPath; the shim's own when "") until the
// hook has exited. A CNI hook (nerdctl's) thus creates its bridge and the
// host end of its veth in the runtime's namespace and the container's end
// in the pod's, /proc/<pid>/ns/net, as under runc; run inside the pod's
// namespace it would make the bridge there too, and the VM would get the
// bridge as a network card of its own.
func runHook(ctx context.Context, h specs.Hook, netnsPath string, st specs.State) error {
	var enter func() error
	if netnsPath != "" {
		enter = func() error {
			ns, err := netns.GetFromPath(netnsPath)
			if err != nil {
				return fmt.Errorf("opening network namespace %s: %w", netnsPath, err)
			}
			defer ns.Close()
			if err := netns.Set(ns); err != nil {
				return fmt.Errorf("entering network namespace %s: %w", netnsPath, err)
			}
			return nil
		}
	}
	tid := make(chan int, 1)
	release := make(chan struct{})
	held := make(chan error, 1)
	go func() {
		held <- inThreadNetNS(enter, func() error {
			tid <- unix.Gettid()
			<-release
			return nil
		})
	}()
	select {
	case st.Pid = <-tid:
	case err := <-held:
		return err
	}
	err := execHook(ctx, h, st)
	close(release)
	return errors.Join(err, <-held)
}

// execHook runs h with st on its stdin, from the calling goroutine's
// thread (in the shim's network namespace), within h's timeout when it has
// one.
func execHook(ctx context.Context, h specs.Hook, st specs.State) error {
	in, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("encoding state: %w", err)
	}
	hctx := ctx
	if h.Timeout != nil && *h.Timeout > 0 {
		var cancel context.CancelFunc
		hctx, cancel = context.WithTimeout(ctx, time.Duration(*h.Timeout)*time.Second)
		defer cancel()
	}
	cmd := exec.CommandContext(hctx, h.Path)
	if len(h.Args) > 0 {
		cmd.Args = h.Args
	}
	cmd.Env = h.Env
	if cmd.Env == nil {
		cmd.Env = []string{} // the hook's env is the spec's, not the shim's
	}
	cmd.Stdin = bytes.NewReader(in)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = time.Second
	err = cmd.Run()
	if hctx.Err() != nil && ctx.Err() == nil {
		return fmt.Errorf("timed out after %ds: %w", *h.Timeout, errors.Join(err, context.DeadlineExceeded))
	}
	if err != nil {
		if o := strings.TrimSpace(out.String()); o != "" {
			return fmt.Errorf("%w: %s", err, o)
		}
		return err
	}
	return nil
}

// newNetNS creates a network namespace and pins it at path (a bind mount
// of it on an empty file), for a pod whose spec asks for a new namespace
// without naming one. removeNetNS undoes it.
func newNetNS(path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o400)
	if err != nil {
		return fmt.Errorf("creating network namespace pin: %w", err)
	}
	f.Close()
	err = inThreadNetNS(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("creating network namespace: %w", err)
		}
		return nil
	}, func() error {
		src := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		if err := unix.Mount(src, path, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("pinning network namespace at %s: %w", path, err)
		}
		return nil
	})
	if err != nil {
		_ = os.Remove(path)
		return err
	}
	return nil
}

// removeNetNS unpins and removes a namespace newNetNS made.
func removeNetNS(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unpinning network namespace %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("removing network namespace pin: %w", err)
	}
	return nil
}

// setNetNSPath points spec's network namespace entry at path.
func setNetNSPath(spec *specs.Spec, path string) {
	for i, ns := range spec.Linux.Namespaces {
		if ns.Type == specs.NetworkNamespace {
			spec.Linux.Namespaces[i].Path = path
		}
	}
}
