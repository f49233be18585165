//go:build vm

package vmtest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/veil-runtime/veil/guest-agent/api"
	"github.com/veil-runtime/veil/hypervisor"
	"github.com/veil-runtime/veil/hypervisor/qemu"
)

// bootTimeout bounds QEMU start to agent ready; TCG on a loaded two-core
// machine needs a few seconds, so this only catches a guest that never comes.
const bootTimeout = 2 * time.Minute

// shared is the VM the container tests share (TestMain).
var shared *vm

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if os.Getenv("VEIL_GUEST_DIR") == "" {
		fmt.Fprintln(os.Stderr, "vmtest: VEIL_GUEST_DIR is not set: run `make test-vm`, or `make guest-image` and point it at build/guest")
		return 1
	}
	v, err := boot(context.Background(), "shared", true)
	if err != nil {
		fmt.Fprintln(os.Stderr, "vmtest: booting the shared vm:", err)
		return 1
	}
	shared = v
	code := m.Run()
	// The binaries tests built once (probe, veil CLI) live in temp dirs of their own.
	for _, p := range []string{probeOnce.path, veilOnce.path} {
		if p != "" {
			os.RemoveAll(filepath.Dir(p))
		}
	}
	if code != 0 {
		c := v.console()
		fmt.Fprintf(os.Stderr, "--- shared vm console.log ---\n%s\n--- why the shared vm died, if it did ---\n%s\n", c, lastWords(c))
	}
	if err := v.shutdown(); err != nil {
		fmt.Fprintln(os.Stderr, "vmtest: shutting down the shared vm:", err)
		code = 1
	}
	return code
}

// vm is a booted VM with a connected agent client.
type vm struct {
	q      *qemu.QEMU
	client *api.Client
	// state and share are the VM's state dir and shared dir (host side).
	state, share string
	root         string // parent of state and share
	// ready is how long QEMU start to the agent's first answer took.
	ready time.Duration
}

func guestFile(name string) string {
	return filepath.Join(os.Getenv("VEIL_GUEST_DIR"), name)
}

// boot starts a VM and waits for its agent. With sandbox it also creates
// the sandbox, mounting the shared dir at /run/veil/shared.
func boot(ctx context.Context, id string, sandbox bool) (_ *vm, err error) {
	return bootArgs(ctx, id, sandbox, nil)
}

// bootArgs is boot with extra kernel command line words.
func bootArgs(ctx context.Context, id string, sandbox bool, kernelArgs []string) (_ *vm, err error) {
	return bootWith(ctx, id, sandbox, func(c *hypervisor.Config) { c.KernelArgs = kernelArgs })
}

// bootWith is boot with the VM config changed by mod.
func bootWith(ctx context.Context, id string, sandbox bool, mod func(*hypervisor.Config)) (_ *vm, err error) {
	root, err := os.MkdirTemp("", "veil-vmtest-"+id+"-")
	if err != nil {
		return nil, err
	}
	v := &vm{root: root, state: filepath.Join(root, "state"), share: filepath.Join(root, "share")}
	defer func() {
		if err != nil {
			v.destroy()
		}
	}()
	for _, d := range []string{v.state, v.share} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return nil, err
		}
	}
	level := slog.LevelWarn
	if os.Getenv("VEIL_VMTEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	cfg := hypervisor.Config{
		ID:        id,
		StateDir:  v.state,
		Kernel:    guestFile("vmlinux"),
		Initrd:    guestFile("initrd.img"),
		VCPUs:     2,
		MemoryMiB: 512,
		SharedDir: v.share,
		Debug:     os.Getenv("VEIL_VMTEST_DEBUG") != "",
		// The shared VM's debug console is TestDebugConsole's.
		DebugConsole: sandbox,
		// Off in the shim by default (reclaim_guest_freed_memory); on here
		// for TestFreedMemoryReturnsToHost.
		ReclaimFreedMemory: true,
	}
	mod(&cfg)
	if err := v.boot(ctx, cfg, logger); err != nil {
		return nil, err
	}
	if sandbox {
		_, err := v.client.Sandbox.CreateSandbox(ctx, &api.CreateSandboxRequest{
			SandboxId: id,
			Hostname:  "vmtest",
			// The shim's own options, so what the tests see is what pods see.
			Storages: []*api.Storage{{Driver: "9p", Source: hypervisor.ShareTag, MountPoint: "/run/veil/shared", Fstype: "9p", Options: qemu.ShareOptions}},
		})
		if err != nil {
			return nil, fmt.Errorf("creating sandbox: %w", err)
		}
	}
	return v, nil
}

// boot starts the VM from cfg and waits for its agent's first answer,
// recording how long that took in v.ready.
func (v *vm) boot(ctx context.Context, cfg hypervisor.Config, log *slog.Logger) error {
	var err error
	if v.q, err = qemu.New(cfg, log); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, bootTimeout)
	defer cancel()
	start := time.Now()
	if err := v.q.Start(ctx); err != nil {
		return err
	}
	conn, err := v.q.DialAgent(ctx)
	if err != nil {
		return err
	}
	v.client = api.NewClient(conn)
	// The first request waits for the agent; a VM that dies meanwhile ends
	// the connection, so this does not outlive the guest.
	if _, err := v.client.Sandbox.Check(ctx, &api.CheckRequest{}); err != nil {
		c := v.console()
		return fmt.Errorf("waiting for the agent: %w (vm: %w)\nconsole:\n%s\nwhy the guest died, from its console:\n%s", err, v.q.Err(), c, lastWords(c))
	}
	v.ready = time.Since(start)
	return nil
}

// lastWords is the lines of a guest console that say why the guest died
// (hypervisor.DeathLines), at most 40. A failure message ends with them: a
// CI summary keeps only a failure's last lines, and a whole console ends
// with the panic's stack.
func lastWords(console string) string {
	l := hypervisor.DeathLines(console, 40)
	if len(l) == 0 {
		return "  (nothing: no panic, crash or fatal error on the console)"
	}
	return "  " + strings.Join(l, "\n  ")
}

func (v *vm) console() string {
	b, _ := os.ReadFile(v.q.ConsolePath())
	return string(b)
}

// shutdown is the shim's orderly path: agent Shutdown, Stop, Cleanup. It
// requires the agent's reply and a clean power-off: QEMU exits with status 0.
func (v *vm) shutdown() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The agent replies before it powers off: a lost reply is a bug
	// (regression: ttrpc's graceful shutdown closed the connection with the
	// reply still queued).
	if _, err := v.client.Sandbox.Shutdown(ctx, &api.ShutdownRequest{}); err != nil {
		select { // Err then holds the console's tail: the guest's side
		case <-v.q.Done():
		case <-ctx.Done():
		}
		return errors.Join(fmt.Errorf("agent shutdown: %w", err), v.q.Err(), v.destroy())
	}
	if err := v.q.Stop(ctx); err != nil {
		v.destroy()
		return err
	}
	if exit := v.q.Err(); !strings.Contains(exit.Error(), "exited with status 0") {
		v.destroy()
		return fmt.Errorf("guest did not power off cleanly: %w", exit)
	}
	return v.destroy()
}

// destroy kills what is left and removes every file the VM used.
func (v *vm) destroy() error {
	var err error
	if v.client != nil {
		v.client.Close()
	}
	if v.q != nil {
		err = v.q.Cleanup()
	}
	if rerr := os.RemoveAll(v.root); err == nil {
		err = rerr
	}
	return err
}
