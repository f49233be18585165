package qemu

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mdlayher/vsock"

	"github.com/veil-runtime/veil/hypervisor"
)

var _ hypervisor.Hypervisor = (*QEMU)(nil)

// DriverName is the name the driver registers under (hypervisor.driver in
// the shim config).
const DriverName = "qemu"

func init() {
	hypervisor.Register(DriverName, func(cfg hypervisor.Config, logger *slog.Logger) (hypervisor.Hypervisor, error) {
		q, err := New(cfg, logger)
		if err != nil {
			return nil, err // not a nil *QEMU in a non-nil interface
		}
		return q, nil
	})
}

// ShareOptions are the guest's 9p mount options of the shared directory
// (Shares). cache=mmap, not cache=none: with cache=none the guest kernel
// refuses a writable MAP_SHARED mapping of a file on the share (EINVAL),
// which the rootfs and every volume are (databases, SQLite in WAL mode,
// anything that maps its files); cache=mmap keeps no other cache (reads
// and writes still go to the host at once, so the host and the guest see
// each other's changes) and lets mmap use the page cache, written back on
// msync and munmap. Measured by tools/vmtest TestSharedWritableMmap, which
// runs a container on a VM whose share has these options. The guest
// agent's policy admits exactly these forms (guest-agent/policy).
var ShareOptions = []string{"trans=virtio", "version=9p2000.L", "msize=262144", "cache=mmap"}

// Names of the files the driver creates in Config.StateDir.
const (
	QMPSocket   = "qmp.sock"
	AgentSocket = "agent.sock"
	// DebugConsoleSocket is the host end of the debug console port.
	DebugConsoleSocket = "console.sock"
	ConsoleLog         = "console.log"
	QEMULog            = "qemu.log"
	PIDFile            = "qemu.pid"
)

// Defaults for zero Config fields.
const (
	DefaultVCPUs     = 1
	DefaultMemoryMiB = 512
)

const (
	// quitGrace is how long Stop waits after QMP quit before SIGKILL.
	quitGrace = 2 * time.Second
	// killGrace bounds the wait for a SIGKILLed QEMU to be reaped.
	killGrace = 10 * time.Second
	// tailBytes of console.log and qemu.log go into Err.
	tailBytes = 4096
)

// QEMU is one VM run by a qemu-system-x86_64 process.
type QEMU struct {
	cfg hypervisor.Config
	// rootImageBytes is cfg.RootImage's size (checkRootImage).
	rootImageBytes int64
	logger         *slog.Logger
	binary         string
	// bios is -bios for an ordinary VM (resolveBIOS); "" is QEMU's default.
	bios      string
	accel     hypervisor.Accel
	transport hypervisor.Transport

	done chan struct{}

	mu      sync.Mutex
	started bool
	cmd     *exec.Cmd
	qmp     *qmp
	exitErr error // written once, before done is closed; read after
	// consoleDone is closed when the console copier has read the guest
	// console to its end (QEMU gone) and closed console.log.
	consoleDone chan struct{}
	// blocks are the hot-plugged disks by slot (hotplug.go); "" is free.
	blocks []string
}

// New checks cfg and resolves what it leaves to the host: the QEMU binary,
// the accelerator and the agent transport (each choice is logged). It starts
// nothing.
func New(cfg hypervisor.Config, logger *slog.Logger) (*QEMU, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ID == "" {
		return nil, errors.New("checking vm config: ID is empty")
	}
	logger = logger.With("vm", cfg.ID)
	if fi, err := os.Stat(cfg.StateDir); err != nil {
		return nil, fmt.Errorf("checking vm state dir: %w", err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("checking vm state dir %s: not a directory", cfg.StateDir)
	}
	if cfg.Kernel == "" {
		return nil, errors.New("checking vm config: Kernel is empty")
	}
	rootImageBytes, err := checkRootImage(cfg)
	if err != nil {
		return nil, err
	}
	for _, p := range []string{cfg.Kernel, cfg.Initrd} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("checking guest image: %w", err)
		}
	}
	if cfg.SharedDir != "" {
		if fi, err := os.Stat(cfg.SharedDir); err != nil {
			return nil, fmt.Errorf("checking shared dir: %w", err)
		} else if !fi.IsDir() {
			return nil, fmt.Errorf("checking shared dir %s: not a directory", cfg.SharedDir)
		}
	}
	if !hypervisor.ValidAccel(cfg.Accel) {
		return nil, fmt.Errorf("checking vm config: unknown accelerator %q (want auto, kvm or tcg)", cfg.Accel)
	}
	if !hypervisor.ValidTransport(cfg.Transport) {
		return nil, fmt.Errorf("checking vm config: unknown agent transport %q (want auto, virtio-serial or vsock)", cfg.Transport)
	}
	for i, n := range cfg.NICs {
		if n.Tap == nil || len(n.MAC) != 6 {
			return nil, fmt.Errorf("checking vm config: NIC %d needs an open tap and a 6-byte MAC, have tap %v, MAC %q", i, n.Tap != nil, n.MAC)
		}
	}
	if cfg.VCPUs == 0 {
		cfg.VCPUs = DefaultVCPUs
	}
	if cfg.MemoryMiB == 0 {
		cfg.MemoryMiB = DefaultMemoryMiB
	}
	bin := cfg.Binary
	if bin == "" {
		bin = "qemu-system-x86_64"
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		return nil, fmt.Errorf("finding qemu: %w", err)
	}
	accel := hypervisor.HostAccel(cfg.Accel, logger)
	if err := checkTEELaunch(cfg.TEE, path, accel, SysRoot); err != nil {
		return nil, fmt.Errorf("checking vm config: %w", err)
	}
	bios, err := resolveBIOS(cfg.BIOS, path)
	if err != nil {
		return nil, fmt.Errorf("checking vm config: %w", err)
	}
	transport := hypervisor.HostTransport(cfg.Transport, logger)
	if transport == hypervisor.TransportVsock && cfg.VsockCID < 3 {
		return nil, fmt.Errorf("checking vm config: vsock transport needs VsockCID >= 3, have %d", cfg.VsockCID)
	}
	return &QEMU{
		cfg:            cfg,
		rootImageBytes: rootImageBytes,
		logger:         logger,
		binary:         path,
		bios:           bios,
		accel:          accel,
		transport:      transport,
		done:           make(chan struct{}),
	}, nil
}

// LaunchFor is the Launch of a VM configured as cfg on accelerator accel
// and transport (neither auto): everything but the files Start creates
// (sockets, taps, console log, pid file). `veil measure` and its tests
// build the command line of a handler's VM with it, as Start does.
func LaunchFor(cfg hypervisor.Config, accel hypervisor.Accel, transport hypervisor.Transport) Launch {
	return Launch{
		ID:                cfg.ID,
		Kernel:            cfg.Kernel,
		Initrd:            cfg.Initrd,
		RootImage:         cfg.RootImage,
		KernelArgs:        cfg.KernelArgs,
		VCPUs:             cfg.VCPUs,
		MemoryMiB:         cfg.MemoryMiB,
		Accel:             accel,
		TBSizeMiB:         cfg.TCGTranslationCacheMiB,
		Transport:         transport,
		VsockCID:          cfg.VsockCID,
		SharedDir:         cfg.SharedDir,
		Debug:             cfg.Debug,
		TEE:               cfg.TEE,
		BlockSlots:        cfg.BlockSlots,
		FreePageReporting: cfg.ReclaimFreedMemory,
	}
}

// Accel is the accelerator the VM runs on (never auto).
func (q *QEMU) Accel() hypervisor.Accel { return q.accel }

// Transport is how DialAgent reaches the agent (never auto).
func (q *QEMU) Transport() hypervisor.Transport { return q.transport }

// ConsolePath is the host file receiving the guest console.
func (q *QEMU) ConsolePath() string { return q.path(ConsoleLog) }

// DebugConsolePath is the debug console port's socket; "" without
// Config.DebugConsole.
func (q *QEMU) DebugConsolePath() string {
	if !q.cfg.DebugConsole {
		return ""
	}
	return q.path(DebugConsoleSocket)
}

// Shares is the shared directory over virtio-9p (tag hypervisor.ShareTag,
// mounted with ShareOptions); none without Config.SharedDir.
func (q *QEMU) Shares() []hypervisor.Share {
	if q.cfg.SharedDir == "" {
		return nil
	}
	return []hypervisor.Share{{
		HostPath: q.cfg.SharedDir,
		Kind:     hypervisor.Share9P,
		Tag:      hypervisor.ShareTag,
		FSType:   "9p",
		Options:  append([]string(nil), ShareOptions...),
	}}
}

func (q *QEMU) path(name string) string { return filepath.Join(q.cfg.StateDir, name) }

// Start launches QEMU and returns once it answers QMP query-status.
func (q *QEMU) Start(ctx context.Context) (err error) {
	q.mu.Lock()
	if q.started {
		q.mu.Unlock()
		return fmt.Errorf("starting vm %s: already started", q.cfg.ID)
	}
	q.started = true
	q.mu.Unlock()
	if err := q.removeFiles(); err != nil {
		return fmt.Errorf("starting vm %s: clearing state dir: %w", q.cfg.ID, err)
	}

	// The driver creates the listening sockets and hands them to QEMU, so
	// that they exist before QEMU runs (no polling for a path to appear)
	// and refuse connections once QEMU is gone (ours are closed after fork).
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	listen := func(name string) (int, error) {
		f, err := listenUnix(q.path(name))
		if err != nil {
			return 0, err
		}
		files = append(files, f)
		return 2 + len(files), nil // ExtraFiles[i] is fd 3+i
	}
	launch := LaunchFor(q.cfg, q.accel, q.transport)
	launch.BIOS = q.bios
	launch.RootImageBytes = q.rootImageBytes
	launch.PIDFile = q.path(PIDFile)
	if launch.QMPFD, err = listen(QMPSocket); err != nil {
		return fmt.Errorf("starting vm %s: %w", q.cfg.ID, err)
	}
	if q.transport == hypervisor.TransportSerial {
		if launch.AgentFD, err = listen(AgentSocket); err != nil {
			return fmt.Errorf("starting vm %s: %w", q.cfg.ID, err)
		}
	}
	if q.cfg.DebugConsole {
		if launch.DebugConsoleFD, err = listen(DebugConsoleSocket); err != nil {
			return fmt.Errorf("starting vm %s: %w", q.cfg.ID, err)
		}
	}
	// The guest console: QEMU writes a pipe, the driver copies it into a
	// capped, rotated console.log and hands the lines to Console.Line.
	console, err := hypervisor.NewRotatingFile(q.path(ConsoleLog), q.cfg.Console.MaxBytes, q.cfg.Console.Files)
	if err != nil {
		return fmt.Errorf("starting vm %s: %w", q.cfg.ID, err)
	}
	cr, cw, err := os.Pipe()
	if err != nil {
		console.Close()
		return fmt.Errorf("starting vm %s: console pipe: %w", q.cfg.ID, err)
	}
	files = append(files, cw) // closed after the fork: then QEMU holds the only write end
	launch.ConsoleFD = 2 + len(files)
	q.consoleDone = make(chan struct{})
	go func() {
		defer close(q.consoleDone)
		if err := hypervisor.CopyConsole(cr, console, q.cfg.Console.Line); err != nil {
			q.logger.Warn("copying the guest console", "err", err)
		}
		cr.Close()
		console.Close()
	}()
	// The taps are the caller's: passed on after the sockets, never closed here.
	var taps []*os.File
	for _, n := range q.cfg.NICs {
		launch.NICs = append(launch.NICs, NIC{TapFD: 3 + len(files) + len(taps), MAC: n.MAC.String()})
		taps = append(taps, n.Tap)
	}
	logf, err := os.OpenFile(q.path(QEMULog), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("starting vm %s: %w", q.cfg.ID, err)
	}
	defer logf.Close()

	args := Args(launch)
	cmd := exec.Command(q.binary, args...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.ExtraFiles = append(append([]*os.File(nil), files...), taps...)
	// Own process group: a terminal's signals to the caller's group do not
	// reach QEMU. Pdeathsig: QEMU dies with the (long-lived) process that
	// started it, so no VM outlives its shim.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	q.logger.Debug("starting qemu", "binary", q.binary, "args", strings.Join(args, " "))
	started := time.Now()
	forked := make(chan error, 1)
	go func() {
		// Pdeathsig fires when the OS thread that forked QEMU ends, not the
		// process. Go ends a thread when a goroutine locked to it exits
		// locked (as netns code does on purpose), so fork from a thread
		// this goroutine holds until QEMU has exited.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			forked <- err
			return
		}
		forked <- nil
		q.wait(cmd)
	}()
	if err := <-forked; err != nil {
		return fmt.Errorf("starting vm %s: running %s: %w", q.cfg.ID, q.binary, err)
	}
	q.mu.Lock()
	q.cmd = cmd
	q.mu.Unlock()
	for _, f := range files {
		f.Close()
	}
	files = nil

	qc, err := q.connectQMP(ctx)
	if err != nil {
		q.killAndReap()
		return fmt.Errorf("starting vm %s: %w", q.cfg.ID, q.withExit(err))
	}
	q.mu.Lock()
	q.qmp = qc
	q.mu.Unlock()
	q.logger.Info("vm started", "pid", cmd.Process.Pid, "accel", q.accel, "transport", q.transport, "bios", biosName(q.bios),
		"vcpus", q.cfg.VCPUs, "memory_mib", q.cfg.MemoryMiB, "elapsed", time.Since(started))
	return nil
}

// connectQMP connects to QMP, negotiates and checks query-status.
func (q *QEMU) connectQMP(ctx context.Context) (*qmp, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", q.path(QMPSocket))
	if err != nil {
		return nil, fmt.Errorf("connecting to qmp: %w", err)
	}
	// A QEMU that dies during the handshake closes the listening socket,
	// which ends our queued connection: the reads below fail, not hang.
	qc, err := newQMP(ctx, conn, q.logger)
	if err != nil {
		conn.Close()
		return nil, err
	}
	if _, err := qc.execute(ctx, "query-status", nil); err != nil {
		qc.close()
		return nil, err
	}
	return qc, nil
}

// wait reaps QEMU, records why it exited and closes done.
func (q *QEMU) wait(cmd *exec.Cmd) {
	werr := cmd.Wait()
	var status string
	if werr != nil {
		status = werr.Error()
	} else {
		status = "exited with status 0"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "qemu (pid %d) %s", cmd.Process.Pid, status)
	if t := tail(q.path(QEMULog), tailBytes); t != "" {
		fmt.Fprintf(&b, "\n--- qemu.log (tail) ---\n%s", t)
	}
	if q.consoleDone != nil {
		<-q.consoleDone // QEMU's exit closed the pipe: the console's last lines are in
	}
	ct := hypervisor.ConsoleTail(q.path(ConsoleLog), tailBytes)
	if t := tailText([]byte(ct), len(ct) >= tailBytes); t != "" {
		fmt.Fprintf(&b, "\n--- console.log (tail) ---\n%s", t)
	}
	q.exitErr = fmt.Errorf("%w: %s", hypervisor.ErrVMExited, b.String())
	close(q.done) // publishes exitErr
	q.logger.Info("vm exited", "pid", cmd.Process.Pid, "status", status)
}

// withExit adds why QEMU exited to err when it has exited.
func (q *QEMU) withExit(err error) error {
	select {
	case <-q.done:
		return fmt.Errorf("%w; %w", err, q.Err())
	default:
		return err
	}
}

// DialAgent connects to the agent's transport. With virtio-serial the
// connection succeeds while QEMU runs, whether or not the agent listens yet:
// the first request waits for it.
func (q *QEMU) DialAgent(ctx context.Context) (net.Conn, error) {
	q.mu.Lock()
	started := q.started && q.cmd != nil
	q.mu.Unlock()
	if !started {
		return nil, fmt.Errorf("dialing agent of vm %s: not started", q.cfg.ID)
	}
	select {
	case <-q.done:
		return nil, fmt.Errorf("dialing agent of vm %s: %w", q.cfg.ID, q.Err())
	default:
	}
	if q.transport == hypervisor.TransportVsock {
		return dialVsock(ctx, q.cfg.VsockCID)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", q.path(AgentSocket))
	if err != nil {
		return nil, fmt.Errorf("dialing agent of vm %s: %w", q.cfg.ID, q.withExit(err))
	}
	return conn, nil
}

func dialVsock(ctx context.Context, cid uint32) (net.Conn, error) {
	type result struct {
		conn net.Conn
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := vsock.Dial(cid, hypervisor.AgentVsockPort, nil)
		ch <- result{c, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, fmt.Errorf("dialing agent on vsock %d:%d: %w", cid, hypervisor.AgentVsockPort, r.err)
		}
		return r.conn, nil
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.conn != nil {
				r.conn.Close()
			}
		}()
		return nil, fmt.Errorf("dialing agent on vsock %d:%d: %w", cid, hypervisor.AgentVsockPort, ctx.Err())
	}
}

// Stop waits for the VM to exit until ctx is done, then asks QEMU to quit
// over QMP and waits quitGrace, then kills it. It returns nil once QEMU has
// exited, whichever step ended it.
func (q *QEMU) Stop(ctx context.Context) error {
	q.mu.Lock()
	started, qc := q.cmd != nil, q.qmp
	q.mu.Unlock()
	if !started {
		return nil
	}
	select {
	case <-q.done:
		return nil
	case <-ctx.Done():
	}
	q.logger.Info("vm still running after stop deadline: sending qmp quit")
	if qc != nil {
		qctx, cancel := context.WithTimeout(context.Background(), quitGrace)
		_, err := qc.execute(qctx, "quit", nil)
		if err != nil {
			q.logger.Debug("qmp quit", "err", err)
		}
		select {
		case <-q.done:
			cancel()
			return nil
		case <-qctx.Done():
		}
		cancel()
	}
	q.logger.Warn("vm did not quit: killing qemu")
	if !q.killAndReap() {
		return fmt.Errorf("stopping vm %s: qemu (pid %d) still running %v after SIGKILL", q.cfg.ID, q.PID(), killGrace)
	}
	return nil
}

// Kill sends SIGKILL to QEMU. Done closes once it has been reaped.
func (q *QEMU) Kill() error {
	q.mu.Lock()
	cmd := q.cmd
	q.mu.Unlock()
	if cmd == nil {
		return nil
	}
	select {
	case <-q.done:
		return nil
	default:
	}
	// os.Process signals through a pidfd: no risk of hitting a reused pid.
	if err := cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("killing qemu of vm %s: %w", q.cfg.ID, err)
	}
	return nil
}

// killAndReap kills QEMU and waits for it to be reaped; false if it was not
// within killGrace.
func (q *QEMU) killAndReap() bool {
	if err := q.Kill(); err != nil {
		q.logger.Warn("killing qemu", "err", err)
	}
	select {
	case <-q.done:
		return true
	case <-time.After(killGrace):
		return false
	}
}

// Done is closed once QEMU has exited and been reaped.
func (q *QEMU) Done() <-chan struct{} { return q.done }

// Err is nil while the VM runs (or before Start). Once Done is closed it
// wraps hypervisor.ErrVMExited and says how QEMU ended (exit status or
// signal) followed by the tails of qemu.log and console.log.
func (q *QEMU) Err() error {
	select {
	case <-q.done:
	default:
		return nil
	}
	return q.exitErr
}

// PID of the QEMU process (0 before Start).
func (q *QEMU) PID() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.cmd == nil || q.cmd.Process == nil {
		return 0
	}
	return q.cmd.Process.Pid
}

// Cleanup kills QEMU if it still runs, closes the QMP connection and removes
// the files Start created in the state dir. Err keeps the log tails.
func (q *QEMU) Cleanup() error {
	q.mu.Lock()
	started := q.cmd != nil
	q.mu.Unlock()
	var errs []error
	if started && !q.killAndReap() {
		errs = append(errs, fmt.Errorf("cleaning up vm %s: qemu (pid %d) still running after SIGKILL", q.cfg.ID, q.PID()))
	}
	q.mu.Lock()
	if q.qmp != nil {
		q.qmp.close()
		q.qmp = nil
	}
	q.mu.Unlock()
	if err := q.removeFiles(); err != nil {
		errs = append(errs, fmt.Errorf("cleaning up vm %s: %w", q.cfg.ID, err))
	}
	return errors.Join(errs...)
}

// removeFiles removes what Start creates in the state dir.
func (q *QEMU) removeFiles() error {
	var errs []error
	names := []string{QMPSocket, AgentSocket, DebugConsoleSocket, QEMULog, PIDFile}
	for _, name := range append(names, hypervisor.RotatedFiles(ConsoleLog, q.cfg.Console.Files)...) {
		if err := os.Remove(q.path(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// listenUnix creates a listening unix socket at path and returns it as a
// file to hand to QEMU. Closing the file does not remove the path.
func listenUnix(path string) (*os.File, error) {
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", path, err)
	}
	l.SetUnlinkOnClose(false)
	f, err := l.File()
	l.Close()
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", path, err)
	}
	return f, nil
}

// tail returns up to n bytes from the end of the file at path, starting at
// a line boundary; "" when the file is missing or empty.
func tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || fi.Size() == 0 {
		return ""
	}
	off := max(fi.Size()-n, 0)
	buf := make([]byte, fi.Size()-off)
	if _, err := f.ReadAt(buf, off); err != nil {
		return ""
	}
	return tailText(buf, off > 0)
}

// tailText trims a partial first line (when the buffer does not start at
// the beginning of the file) and trailing whitespace.
func tailText(buf []byte, cut bool) string {
	s := string(buf)
	if cut {
		if i := strings.IndexByte(s, '\n'); i >= 0 {
			s = s[i+1:]
		}
	}
	return strings.TrimRight(s, "\r\n\t ")
}
