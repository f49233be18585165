package shim

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"github.com/moby/sys/mountinfo"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/veil-runtime/veil/guest-agent/api"
	"github.com/veil-runtime/veil/hypervisor"
	"github.com/veil-runtime/veil/shim/config"
	"github.com/veil-runtime/veil/shim/metrics"
	"github.com/veil-runtime/veil/shim/network"
	"github.com/veil-runtime/veil/shim/portfwd"
)

// State directory layout, under stateRoot/<namespace>/<sandbox-id>:
const (
	// sharedDirName is exported to the guest (hypervisor.Config.SharedDir,
	// over the device the driver reports in Shares) and mounted there at
	// guestSharedDir: <cid>/rootfs and <cid>/mounts/*.
	sharedDirName = "shared"
	// vmPidFile holds the VM monitor's pid, for `delete` after a shim crash.
	vmPidFile = "vm.pid"
	// DebugConsoleLink is a symlink to the driver's debug console socket
	// (hypervisor.Hypervisor.DebugConsolePath), for `veil debug console`;
	// absent when the handler's config sets debug_console = false.
	DebugConsoleLink = "debug-console"
)

// vhostVsockDev is the host device of the vsock transport.
const vhostVsockDev = "/dev/vhost-vsock"

// DefaultStateRoot is where pod state directories live. It is short on
// purpose: the QEMU driver creates unix sockets in the state directory, and
// socket paths are limited to 108 bytes.
const DefaultStateRoot = "/run/veil"

// agentConn is the guest agent as the shim uses it; tests fake its services.
type agentConn struct {
	sandbox   api.SandboxService
	container api.ContainerService
	process   api.ProcessService
	// attestation is used for confidential handlers (confidential.go).
	attestation api.AttestationService
	// network configures the guest's NICs (podnet.go).
	network api.NetworkService
	// volume copies confidential pods' volumes into the guest (volumes.go).
	volume api.VolumeService
	// image pulls confidential pods' images in the guest (guestpull.go).
	image api.ImageService
	// portForward relays port-forward connections (portforward.go).
	portForward api.PortForwardService
	close       func() error
	// done is closed when the connection to the agent is gone.
	done <-chan struct{}
}

// dialAgent connects to the agent of a started VM.
func dialAgent(ctx context.Context, hv hypervisor.Hypervisor, opts ...ttrpc.ClientOpts) (*agentConn, error) {
	conn, err := hv.DialAgent(ctx)
	if err != nil {
		return nil, err
	}
	c := api.NewClient(conn, opts...)
	return &agentConn{sandbox: c.Sandbox, container: c.Container, process: c.Process, attestation: c.Attestation, network: c.Network, volume: c.Volume, image: c.Image, portForward: c.PortForward, close: c.Close, done: c.Done()}, nil
}

// pod is the VM of one pod and the agent in it.
type pod struct {
	id        string
	cfg       config.Config
	stateDir  string
	sharedDir string
	hv        hypervisor.Hypervisor
	agent     *agentConn
	// net is the pod network's taps; nil when the VM has no NIC.
	net *network.Attachment
	// ports forwards the pod namespace's loopback to the guest
	// (portforward.go); nil when the pod has no namespace of its own.
	ports *portfwd.Forwarder
	// conf is the confidential pod's init-data; nil for veil.
	conf *confidentialPod
	// sysctls are the ones the guest set in the VM's namespaces at
	// CreateSandbox (podSysctls); checkNetSysctls holds containers to them.
	sysctls map[string]string
	// guestShm is set when the pod's /dev/shm is the guest tmpfs at
	// guestShmDir (mounts.go), not the CRI's host tmpfs over 9p.
	guestShm bool
	// metricsSrv serves the shim's metrics in the state directory.
	metricsSrv *metrics.Server
	// cgroup holds QEMU and the shim (cgroups.go); nil when the sandbox
	// names none.
	cgroup podCgroup
	// cid is the VM's guest CID with the vsock transport; nil otherwise.
	cid *cidLease
	// blockSeq numbers the block devices attached to the VM (blockdev.go).
	blockSeq atomic.Uint32
	// vcpus and memMiB are the VM's size, fixed at boot (vmSize): Update
	// refuses what does not fit (checkResize).
	vcpus, memMiB uint32

	// ctx ends when the VM is gone or the pod is torn down: waiting agent
	// calls (WaitProcess, ReadStdout/ReadStderr, GetOOMEvent) use it and no
	// timeout.
	ctx    context.Context
	cancel context.CancelFunc
	// dead is closed when the VM has exited or the agent connection is
	// gone, for whatever reason.
	dead chan struct{}
	// st is the pod's lifecycle state (lifecycle.go), changed only by
	// transition and stop.
	stateMu sync.Mutex
	st      podState
	// failed is closed by fail (health.go) with failReason set: the shim
	// gave up on a VM that still runs.
	failed     chan struct{}
	failOnce   sync.Once
	failReason string
}

// callCtx bounds one agent call by the configured call timeout.
func (p *pod) callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, p.cfg.Agent.CallTimeout.Std())
}

func (p *pod) isDead() bool {
	select {
	case <-p.dead:
		return true
	default:
		return false
	}
}

// agentError converts an error from an agent call back to errdefs and names
// the call; a call that failed because the VM is gone says so.
func (p *pod) agentError(op string, err error) error {
	if p.isDead() {
		return fmt.Errorf("%s: pod VM %s is gone: %w", op, p.id, errdefs.ErrUnavailable)
	}
	return fmt.Errorf("%s: %w", op, errgrpc.ToNative(err))
}

// startPod boots the pod VM and prepares the guest: state directory,
// metrics socket, network, cgroup, guest CID, VM (the configured driver,
// podVM), agent connection and health check, CreateSandbox with the shared
// directory. Each resource pushes its undo on a cleanup stack as it is
// acquired; on error the stack unwinds, newest first, and nothing is left
// running. On success the pod owns them all (teardownPod) and is ready.
func (s *service) startPod(ctx context.Context, id string, spec *specs.Spec, cfg config.Config) (_ *pod, retErr error) {
	newVM, err := s.drivers.Lookup(cfg.Hypervisor.Driver)
	if err != nil {
		return nil, fmt.Errorf("key hypervisor.driver: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	stateDir := filepath.Join(s.stateRoot, s.namespace, id)
	p := &pod{id: id, cfg: cfg, stateDir: stateDir, sharedDir: filepath.Join(stateDir, sharedDirName), st: podBooting, dead: make(chan struct{}), failed: make(chan struct{})}
	var undo cleanupStack
	defer func() {
		if retErr != nil {
			undo.unwind(ctx)
			_, _ = p.transition(ctx, podDead)
		}
	}()

	if err := os.MkdirAll(p.sharedDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating pod state directory: %w", err)
	}
	undo.push("removing pod state directory", func() error { return removeUnmounted(stateDir) })
	if p.metricsSrv, err = s.metrics.Serve(filepath.Join(stateDir, metrics.SocketName)); err != nil {
		return nil, err
	}
	undo.push("closing the metrics socket", p.metricsSrv.Close)
	if p.conf, err = resolveConfidential(cfg.Confidential, spec.Annotations); err != nil {
		return nil, fmt.Errorf("confidential pod: %w", err)
	}
	p.sysctls = podSysctls(spec, p.conf != nil)
	if p.net, err = s.attachNetwork(ctx, spec, p.conf != nil); err != nil {
		return nil, fmt.Errorf("pod network: %w", err)
	}
	undo.push("removing the pod network's taps", func() error { return detachNetwork(p.net) })
	if p.cgroup, err = s.enterVMCgroup(ctx, spec); err != nil {
		return nil, err
	}
	if p.cgroup != nil {
		undo.push("removing the pod VM's cgroup", p.cgroup.Remove)
	}
	// Pushed before the VM's own undo, so it runs after QEMU is gone.
	transport, cid, err := s.agentTransport(ctx, id, hypervisor.Transport(cfg.Hypervisor.Transport))
	if err != nil {
		return nil, err
	}
	p.cid = cid
	undo.push("releasing the guest CID", cid.Release)

	vmCfg := podVM(cfg, spec, p.conf, podVMHost{
		ID: id, StateDir: stateDir, SharedDir: p.sharedDir, HostCPUs: runtime.NumCPU(),
		Transport: transport, VsockCID: cid.CID(), NICs: vmNICs(p.net),
	})
	if vmCfg.SharedDir == "" {
		log.G(ctx).Info("confidential pod: no filesystem shared with the guest")
	}
	vmCfg.Console.Line = guestLogLine(log.G(s.ctx).WithField("pod", id))
	hv, err := newVM(vmCfg, slogTo(log.G(ctx)))
	if err != nil {
		return nil, fmt.Errorf("configuring pod VM: %w", err)
	}
	p.hv = hv
	// How the guest mounts the share is the driver's to say; one the
	// agent cannot mount fails before the VM boots.
	share, err := shareStorage(hv.Shares(), vmCfg.SharedDir)
	if err != nil {
		return nil, fmt.Errorf("configuring pod VM: %w", err)
	}
	log.G(ctx).WithFields(log.Fields{"driver": cfg.Hypervisor.Driver, "vcpus": vmCfg.VCPUs, "memory_mib": vmCfg.MemoryMiB}).Info("starting pod VM")
	// The whole boot, from starting QEMU to the agent's first answer, is
	// bounded by boot_timeout. The driver uses the context only for its
	// control channel's handshake: the VM outlives this request.
	bootCtx, cancel := context.WithTimeout(ctx, cfg.Agent.BootTimeout.Std())
	defer cancel()
	if err := hv.Start(bootCtx); err != nil {
		_ = hv.Cleanup()
		return nil, fmt.Errorf("starting pod VM: %w%s", err, consoleTail(hv))
	}
	undo.push("stopping the pod VM", func() error {
		_ = hv.Kill()
		<-hv.Done()
		return hv.Cleanup()
	})
	s.metrics.MarkProcessStart(metrics.PhaseQEMUSpawned, hv.PID())
	if p.net != nil {
		p.net.CloseFiles() // QEMU has its own: the taps live as long as it does
	}
	if err := os.WriteFile(filepath.Join(stateDir, vmPidFile), []byte(strconv.Itoa(hv.PID())), 0o600); err != nil {
		return nil, fmt.Errorf("writing VM pid file: %w", err)
	}
	if err := linkDebugConsole(stateDir, hv.DebugConsolePath()); err != nil {
		return nil, err
	}

	if p.agent, err = s.dialAgent(bootCtx, hv); err != nil {
		return nil, fmt.Errorf("connecting to the guest agent: %w%s", err, consoleTail(hv))
	}
	undo.push("closing the agent connection", p.agent.close)
	if err := waitAgent(bootCtx, p.agent, hv); err != nil {
		return nil, fmt.Errorf("waiting for the guest agent (boot_timeout %s): %w%s", cfg.Agent.BootTimeout.Std(), err, consoleTail(hv))
	}
	s.metrics.Mark(metrics.PhaseAgentReady)
	s.recordBoot(bootCtx, p.agent, cfg, vmCfg.VCPUs, vmCfg.MemoryMiB)

	p.vcpus, p.memMiB = vmCfg.VCPUs, vmCfg.MemoryMiB
	p.ctx, p.cancel = context.WithCancel(context.WithoutCancel(s.ctx))
	undo.push("ending the pod's context", func() error { p.cancel(); return nil })
	callCtx, cancelCall := p.callCtx(ctx)
	defer cancelCall()
	if err := p.conf.setInitData(callCtx, p.agent.attestation); err != nil {
		return nil, fmt.Errorf("confidential pod: %w%s", err, consoleTail(hv))
	}
	if err := configureGuestNetwork(callCtx, p.agent.network, p.net); err != nil {
		return nil, fmt.Errorf("pod network: %w%s", err, consoleTail(hv))
	}
	dns, err := resolvConf(spec)
	if err != nil {
		return nil, err
	}
	var storages []*api.Storage
	if share != nil {
		storages = append(storages, share)
	}
	if p.conf == nil {
		shm, err := shmStorage(spec)
		if err != nil {
			return nil, err
		}
		if shm != nil {
			storages, p.guestShm = append(storages, shm), true
		}
	}
	_, err = p.agent.sandbox.CreateSandbox(callCtx, &api.CreateSandboxRequest{
		SandboxId: id,
		Hostname:  spec.Hostname,
		Dns:       dns,
		Storages:  storages,
		Sysctls:   p.sysctls,
	})
	if err != nil {
		return nil, fmt.Errorf("creating the sandbox in the guest: %w%s", errgrpc.ToNative(err), consoleTail(hv))
	}
	s.metrics.Mark(metrics.PhaseSandboxCreated)
	p.ports = s.startPortForward(ctx, p, spec)
	undo.push("stopping port forwarding", p.ports.Close)
	if _, err := p.transition(ctx, podReady); err != nil {
		return nil, err
	}
	undo.release() // the pod owns it all now: teardownPod
	go s.watchPod(p)
	go s.watchOOM(p)
	go s.healthCheck(p)
	return p, nil
}

// linkDebugConsole makes <state>/DebugConsoleLink point at the driver's
// debug console socket, where `veil debug console` finds it whatever the
// driver; nothing when the VM has no debug console (path "").
func linkDebugConsole(stateDir, path string) error {
	if path == "" {
		return nil
	}
	link := filepath.Join(stateDir, DebugConsoleLink)
	// A link left by a shim that crashed with this pod's ID is replaced, as
	// the driver replaces its own stale files.
	if err := os.Remove(link); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("linking the debug console: %w", err)
	}
	if err := os.Symlink(path, link); err != nil {
		return fmt.Errorf("linking the debug console: %w", err)
	}
	return nil
}

// agentTransport resolves the configured agent transport on this host
// (vsock when it has /dev/vhost-vsock, for auto) and, for vsock, allocates
// the VM's guest CID.
func (s *service) agentTransport(ctx context.Context, id string, requested hypervisor.Transport) (hypervisor.Transport, *cidLease, error) {
	_, err := os.Stat(filepath.Join(s.hostRoot, vhostVsockDev))
	t := hypervisor.ChooseTransport(requested, err == nil)
	fields := log.Fields{"transport": t, "requested": requested, "vhost_vsock": err == nil}
	if t != hypervisor.TransportVsock {
		log.G(ctx).WithFields(fields).Info("agent transport chosen")
		return t, nil, nil
	}
	cid, err := s.cids.Allocate(id)
	if err != nil {
		return "", nil, err
	}
	fields["guest_cid"] = cid.CID()
	log.G(ctx).WithFields(fields).Info("agent transport chosen")
	return t, cid, nil
}

// waitAgent calls Check until the agent serves: the first request waits for
// the guest to boot. A connection error before then is retried (the
// transport may not be up yet) until ctx ends or the VM exits.
func waitAgent(ctx context.Context, agent *agentConn, hv hypervisor.Hypervisor) error {
	for {
		resp, err := agent.sandbox.Check(ctx, &api.CheckRequest{})
		if err == nil && resp.GetStatus() == api.CheckResponse_SERVING {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("agent reports %s", resp.GetStatus())
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %w)", ctx.Err(), err)
		case <-hv.Done():
			return fmt.Errorf("VM exited: %w", hv.Err())
		case <-agent.done:
			return fmt.Errorf("agent connection closed: %w", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// watchPod notices the VM or the agent going away, or the pod failing its
// health check (health.go). Unless the shim is tearing the pod down, that is
// a failure: the VM is killed, the pod's context ends, every waiting agent
// call fails, and so every process still running exits with status 255
// (exit.go), logged with the reason.
func (s *service) watchPod(p *pod) {
	var why, detail string
	select {
	case <-p.hv.Done():
		why = vmExitReason(p.hv)
		// The driver's whole account: its log's and the console's tails.
		detail = fmt.Sprintf("; %v", p.hv.Err())
	case <-p.agent.done:
		why = "agent connection closed"
	case <-p.failed:
		why = p.failReason + "; killing the pod VM"
	}
	if from, _ := p.transition(s.ctx, podDead); from != podStopping {
		p.fail(why)
		if detail == "" {
			detail = consoleTail(p.hv)
		}
		log.G(s.ctx).WithField("pod", p.id).Errorf("pod VM died: %s%s", why, detail)
	}
	_ = p.hv.Kill()
	close(p.dead)
	p.cancel()
}

// teardownPod ends the pod VM and removes its state: marks it stopping,
// asks the agent to destroy the sandbox and power off, waits for the VM
// (shutdown_timeout), kills it if needed, unmounts everything left in the
// shared directory and removes the state directory. With killFirst the VM
// is killed at once instead of waited for. The caller owns p (takePod).
func (s *service) teardownPod(ctx context.Context, p *pod, killFirst bool) error {
	p.stop(ctx)
	if err := p.ports.Close(); err != nil {
		log.G(ctx).WithError(err).Warn("stopping port forwarding")
	}
	if killFirst {
		_ = p.hv.Kill()
	}
	if !p.isDead() {
		cctx, cancel := p.callCtx(ctx)
		if _, err := p.agent.sandbox.DestroySandbox(cctx, &api.DestroySandboxRequest{SandboxId: p.id}); err != nil {
			log.G(ctx).WithError(err).Warn("destroying the sandbox in the guest")
		}
		if _, err := p.agent.sandbox.Shutdown(cctx, &api.ShutdownRequest{}); err != nil {
			log.G(ctx).WithError(err).Debug("asking the guest to power off")
		}
		cancel()
	}
	sctx, cancel := context.WithTimeout(ctx, p.cfg.Agent.ShutdownTimeout.Std())
	err := p.hv.Stop(sctx)
	cancel()
	if err != nil {
		log.G(ctx).WithError(err).Warn("stopping pod VM")
		_ = p.hv.Kill()
	}
	<-p.hv.Done()
	p.cancel()
	_ = p.agent.close()
	var errs []error
	if err := p.hv.Cleanup(); err != nil {
		errs = append(errs, fmt.Errorf("cleaning up pod VM: %w", err))
	}
	if p.cgroup != nil {
		if err := p.cgroup.Remove(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := p.cid.Release(); err != nil {
		errs = append(errs, err)
	}
	if err := detachNetwork(p.net); err != nil {
		errs = append(errs, err)
	}
	if err := s.mounter.Unmount(p.sharedDir); err != nil {
		errs = append(errs, err)
	}
	if err := p.metricsSrv.Close(); err != nil {
		errs = append(errs, fmt.Errorf("closing metrics socket: %w", err))
	}
	if err := removeUnmounted(p.stateDir); err != nil {
		errs = append(errs, err)
	}
	// The namespace's directory goes with its last pod (it fails, as it
	// should, while other pods are there).
	_ = os.Remove(filepath.Dir(p.stateDir))
	return errors.Join(errs...)
}

// removeUnmounted removes dir unless something is still mounted under it:
// removing through a bind mount would delete the user's files.
func removeUnmounted(dir string) error {
	mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		return fmt.Errorf("reading mounts: %w", err)
	}
	if len(mounts) > 0 {
		return fmt.Errorf("not removing %s: %s is still mounted", dir, mounts[0].Mountpoint)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("removing %s: %w", dir, err)
	}
	return nil
}

// vmExitReason is why a VM exited, on one line, as a failed pod's
// containers end their output with it (failureLine): how the VM ended (the
// first line of its Err) and what its console says of it
// (hypervisor.DeathLines: the agent's fatal error, a Go crash, the kernel's
// panic).
func vmExitReason(hv hypervisor.Hypervisor) string {
	how, _, _ := strings.Cut(fmt.Sprint(hv.Err()), "\n")
	why := "VM exited: " + strings.TrimPrefix(how, hypervisor.ErrVMExited.Error()+": ")
	if l := hypervisor.DeathLines(hypervisor.ConsoleTail(hv.ConsolePath(), hypervisor.DeathScanBytes), 3); len(l) > 0 {
		why += "; the guest's console says: " + strings.Join(l, " | ")
	}
	return why
}

// consoleTail returns the end of the VM's guest console log (where its
// driver writes it), formatted to follow an error message, or "" when
// there is none.
func consoleTail(hv hypervisor.Hypervisor) string {
	path := hv.ConsolePath()
	tail := strings.TrimSpace(hypervisor.ConsoleTail(path, 2048))
	if tail == "" {
		return ""
	}
	return "; guest console (" + path + ") ends:\n" + tail
}

// podSysctls are the sysctls the guest sets for the pod in the VM's own
// namespaces, from the pod's first spec: the CRI sandbox container's
// linux.sysctl (the pod's securityContext.sysctls and containerd's
// defaults), which runc would set in the pause container's namespaces, the
// ones the pod's containers join; in a veil pod those are the guest's. A
// pod without a CRI sandbox (ctr, nerdctl: the container is the pod) gets
// its container's net.* sysctls: the container shares the VM's network
// namespace (guestSpec drops its own), so they are the VM's (nerdctl sets
// net.ipv4.ip_unprivileged_port_start=0 on every container); its other
// sysctls stay in its spec, for the IPC namespace it has of its own. A
// confidential pod gets none: its init-data binds no pod sysctls, and its
// agent refuses them.
func podSysctls(spec *specs.Spec, confidential bool) map[string]string {
	if confidential || spec == nil || spec.Linux == nil {
		return nil
	}
	if isSandbox(spec.Annotations) {
		return spec.Linux.Sysctl
	}
	return netSysctls(spec.Linux.Sysctl)
}

// isNetSysctl reports whether name is a network namespace's sysctl
// (net.ipv4.ip_forward, or net/ipv4/ip_forward as sysctl(8) also takes it).
func isNetSysctl(name string) bool {
	return strings.HasPrefix(name, "net.") || strings.HasPrefix(name, "net/")
}

// netSysctls is the net.* part of sysctls; nil when it has none.
func netSysctls(sysctls map[string]string) map[string]string {
	var out map[string]string
	for k, v := range sysctls {
		if isNetSysctl(k) {
			if out == nil {
				out = map[string]string{}
			}
			out[k] = v
		}
	}
	return out
}

// checkNetSysctls checks container cid's net.* sysctls against podSet,
// the ones the pod set in the VM (podSysctls). A veil container has no
// network namespace of its own in the guest (guestSpec drops it, and its
// net.* sysctls with it): it shares the VM's, the pod's. So each of its
// net.* sysctls must be one the pod set there, to the same value; another
// is refused, naming it, rather than dropped or left for crun to refuse.
func checkNetSysctls(cid string, spec *specs.Spec, podSet map[string]string, confidential bool) error {
	if spec == nil || spec.Linux == nil {
		return nil
	}
	for _, k := range slices.Sorted(maps.Keys(netSysctls(spec.Linux.Sysctl))) {
		v := spec.Linux.Sysctl[k]
		pv, ok := podSet[k]
		switch {
		case ok && pv == v:
			continue
		case confidential:
			return fmt.Errorf("container %s: sysctl %s=%q: a confidential pod sets no sysctls in its VM (its init-data binds none), and its containers share the VM's network namespace: %w",
				cid, k, v, errdefs.ErrInvalidArgument)
		case ok:
			return fmt.Errorf("container %s: sysctl %s=%q: the pod set it to %q in the pod VM's network namespace, which its containers share: %w",
				cid, k, v, pv, errdefs.ErrInvalidArgument)
		default:
			return fmt.Errorf("container %s: sysctl %s=%q: the pod did not set it, and a veil container shares the pod VM's network namespace; set it on the pod (securityContext.sysctls): %w",
				cid, k, v, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}
