package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"sync/atomic"
	"time"

	runc "github.com/containerd/go-runc"
	"github.com/containerd/ttrpc"
	"golang.org/x/sys/unix"

	"github.com/veil-runtime/veil/attestation/evidence"
	"github.com/veil-runtime/veil/guest-agent/api/wire"
	"github.com/veil-runtime/veil/guest-agent/attest"
	"github.com/veil-runtime/veil/guest-agent/boot"
	"github.com/veil-runtime/veil/guest-agent/console"
	"github.com/veil-runtime/veil/guest-agent/containers"
	"github.com/veil-runtime/veil/guest-agent/reaper"
	"github.com/veil-runtime/veil/guest-agent/service"
	"github.com/veil-runtime/veil/guest-agent/storage"
	"github.com/veil-runtime/veil/guest-agent/transport"
	"github.com/veil-runtime/veil/guest-agent/volume"
)

// Guest paths.
const (
	BundleRoot = "/run/veil/containers"
	// PortName is the virtio-serial port the agent serves on.
	PortName = wire.AgentPortName
	// portWait bounds how long the agent waits for its port to appear.
	portWait = 10 * time.Second
)

// Options configure Run.
type Options struct {
	Version string
}

// Run is the agent. As PID 1 it never returns: it powers the VM off on
// Shutdown and, after logging it, on a fatal error. Run as another process
// (for development) it returns the error.
func Run(opts Options) (err error) {
	start := boot.SinceBoot()
	pid1 := os.Getpid() == 1
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v\n%s", r, debug.Stack())
		}
		if err != nil && pid1 {
			log.Error("fatal: powering off", "err", err)
			if perr := boot.PowerOff(log); perr != nil {
				log.Error("power-off", "err", perr)
			}
			select {} // the kernel is powering off; never exit PID 1
		}
	}()
	var consoleErr error
	if pid1 {
		// First of all: out of the initramfs and away from the host's
		// environment (re-executes the agent; returns at once the second
		// time).
		if err := boot.CleanStart(log); err != nil {
			return err
		}
		if err := boot.MountSystem(); err != nil {
			return err
		}
		// From here stdout and stderr are the console.
		_, consoleErr = boot.Console()
	}
	params, err := boot.ReadCmdline()
	if err != nil {
		return err
	}
	level, lerr := boot.LogLevel(params)
	log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("c", "veil-agent")
	if lerr != nil {
		log.Warn("log level", "err", lerr)
	}
	if consoleErr != nil {
		log.Warn("console", "err", consoleErr)
	}
	log.Info("starting", "version", opts.Version, "since_boot", start)
	a := &agent{log: log, start: start, version: opts.Version, params: params}
	return a.run(pid1)
}

type agent struct {
	log     *slog.Logger
	start   time.Duration
	ready   atomic.Int64
	version string
	reaper  *reaper.Reaper
	// params is the kernel command line (veil.tee: guest-agent/attest).
	params map[string]string
	// sealed is the memfd bound over the OCI runtime's binary
	// (boot.SealBinary), kept open while the agent runs.
	sealed *os.File
}

func (a *agent) run(pid1 bool) error {
	if pid1 {
		if err := boot.PrepareCgroups(boot.CgroupRoot); err != nil {
			return err
		}
		if err := boot.HoldDeviceFilterKey(boot.CgroupRoot); err != nil {
			a.log.Warn("device cgroup", "err", err)
		}
		if err := boot.SetHostname("veil"); err != nil {
			return err
		}
		if err := boot.LoopbackUp(); err != nil {
			return err
		}
	}
	if err := boot.SetSubreaper(); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a.reaper = reaper.New(a.log)
	runc.Monitor = a.reaper
	go a.reaper.Run(ctx)

	// A confidential pod's TEE, init-data and policy (guest-agent/attest).
	conf, err := attest.New(attest.Config{
		Params:   a.params,
		Detect:   func() (evidence.Attester, error) { return evidence.Detect(a.log) },
		Hardware: attest.ProbeHardware,
		Log:      a.log,
	})
	if err != nil {
		return err
	}
	conf.Enforcer().SetLog(a.log)
	if err := os.MkdirAll(BundleRoot, 0o700); err != nil {
		return fmt.Errorf("creating bundle directory: %w", err)
	}
	runtime, err := boot.OCIRuntime(a.params)
	if err != nil {
		a.log.Warn("oci runtime", "err", err)
	}
	if pid1 && !boot.OCIRuntimeClones(a.params) {
		// The runtime then runs its binary as is instead of copying
		// itself into a memfd for every container (boot.SealBinary).
		sealed, err := boot.SealBinary(runtime.Binary)
		switch {
		case err != nil && sealed == nil:
			a.log.Warn("oci runtime: the runtime will copy its binary for every container", "runtime", runtime.Name, "err", err)
		case err != nil:
			a.log.Warn("oci runtime", "runtime", runtime.Name, "err", err)
		}
		a.sealed = sealed
	}
	if pid1 {
		// The image's other runtime is never used in this boot: free the
		// guest memory its file holds in the tmpfs root.
		for _, other := range boot.OCIRuntimes {
			if other.Name == runtime.Name {
				continue
			}
			// On a read-only root (EROFS) it costs the guest nothing.
			if err := os.Remove(other.Binary); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, unix.EROFS) {
				a.log.Warn("oci runtime: removing the unused one", "runtime", other.Name, "err", err)
			}
		}
	}
	a.log.Info("oci runtime", "runtime", runtime.Name, "binary", runtime.Binary, "sealed", a.sealed != nil)
	var svc *service.Service
	mgr := containers.New(containers.Config{
		NewRunc:         containers.GuestRuntime(runtime.Binary),
		SpecVersion:     runtime.SpecVersion,
		PodPIDNamespace: func() (string, error) { return svc.PodPIDNamespace() },
		Exits:           a.reaper,
		BundleRoot:      BundleRoot,
		SharedDir:       storage.SharedDir,
		CgroupRoot:      boot.CgroupRoot,
		Confidential:    conf.Enforcer().Confidential(),
		Log:             a.log,
	})
	// The Shutdown handler asks for the power-off (powerOffAsked); the
	// interceptor sees the handler return, before ttrpc writes its reply,
	// and hands over the write count to wait past.
	var powerOffAsked atomic.Bool
	powerOff := make(chan uint64, 1)
	writes := transport.NewWriteCounter()
	intercept := func(ctx context.Context, unmarshal ttrpc.Unmarshaler, info *ttrpc.UnaryServerInfo, method ttrpc.Method) (any, error) {
		resp, err := method(ctx, unmarshal)
		if powerOffAsked.Load() {
			select {
			case powerOff <- writes.Count():
			default:
			}
		}
		return resp, err
	}
	svc = service.New(service.Config{
		Containers: mgr,
		System:     &guest{reaper: a.reaper, log: a.log},
		Version:    a.version,
		SharedDir:  storage.SharedDir,
		AgentStart: a.start,
		Ready:      func() time.Duration { return time.Duration(a.ready.Load()) },
		Volumes:    volume.New(volume.DefaultRoot),
		PowerOff:   func() { powerOffAsked.Store(true) },
		Attest:     conf,
		Log:        a.log,
	})

	listeners, err := a.listen()
	if err != nil {
		return err
	}
	// Ready is stored before the first request can be served, so a
	// GuestDetails that comes in at once never reports 0.
	ready := boot.SinceBoot()
	a.ready.Store(int64(ready))
	served := make(chan error, len(listeners))
	var servers []*ttrpc.Server
	for name, l := range listeners {
		// The policy check runs inside the shutdown interceptor: a denied
		// request never reaches its handler.
		srv, err := ttrpc.NewServer(ttrpc.WithChainUnaryServerInterceptor(intercept, conf.Enforcer().Intercept))
		if err != nil {
			return fmt.Errorf("creating ttrpc server: %w", err)
		}
		svc.Register(srv, name)
		servers = append(servers, srv)
		go func() {
			err := srv.Serve(ctx, writes.Listener(l))
			if errors.Is(err, ttrpc.ErrServerClosed) {
				err = nil
			}
			served <- fmt.Errorf("serving on %s: %w", name, err)
		}()
		a.log.Info("serving", "transport", name, "addr", l.Addr().String())
	}
	// A shell for the host would undo every rule of a confidential pod:
	// there each session is refused unless the init-data policy has
	// allow_debug_console (asked per session, so the policy SetInitData
	// installs later counts).
	a.startDebugConsole(ctx, conf.Enforcer().DebugConsole)
	a.log.Info("ready", "kernel_to_agent", a.start, "kernel_to_ready", ready)

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, unix.SIGTERM, unix.SIGINT)
	select {
	case err := <-served:
		return err
	case mark := <-powerOff:
		// Power off once the reply is out: a write after the handler
		// returned, then a moment without writes.
		sent := writes.WaitQuiet(mark, 20*time.Millisecond, 2*time.Second)
		a.log.Info("shutdown requested", "reply_sent", sent)
	case s := <-sigs:
		a.log.Info("signal", "signal", s)
		_ = mgr.RemoveAll(context.Background())
	}
	for _, srv := range servers {
		_ = srv.Close()
	}
	if !pid1 {
		return nil
	}
	if err := boot.PowerOff(a.log); err != nil {
		return err
	}
	select {}
}

// startDebugConsole serves a shell on the debug console port when the host
// gave the VM one (the ports of one virtio-serial device appear together,
// so it is there by now if the agent's port is). allowed decides each
// session.
func (a *agent) startDebugConsole(ctx context.Context, allowed func() error) {
	path, err := transport.PortDevice(console.PortName)
	if err != nil {
		a.log.Debug("no debug console port", "err", err)
		return
	}
	srv := &console.Server{
		Port:    path,
		Shell:   []string{"/bin/sh"},
		Allowed: allowed,
		Env:     []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "TERM=linux", "HOME=/", `PS1=veil-guest:\w# `},
		Log:     a.log.With("component", "console"),
	}
	go func() {
		if err := srv.Serve(ctx); err != nil {
			a.log.Warn("debug console", "err", err)
		}
	}()
	a.log.Info("debug console available", "port", path)
}

// listen opens the agent's transports: the virtio-serial port when the VM
// has it, vsock when the guest has /dev/vsock; at least one is required.
func (a *agent) listen() (map[string]net.Listener, error) {
	out := map[string]net.Listener{}
	deadline := time.Now().Add(portWait)
	for {
		path, err := transport.PortDevice(PortName)
		if err == nil {
			out[transport.Serial] = transport.ListenSerial(path)
			break
		}
		if transport.HaveVsock() || time.Now().After(deadline) {
			a.log.Debug("no virtio-serial agent port", "err", err)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if transport.HaveVsock() {
		l, err := transport.ListenVsock()
		if err == nil {
			out[transport.Vsock] = l
		} else {
			a.log.Warn("vsock", "err", err)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no agent transport: neither a virtio-serial port named %q nor /dev/vsock; start the VM with one of them", PortName)
	}
	return out, nil
}
