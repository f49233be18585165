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
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/ttrpc"

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
	if code != 0 {
		fmt.Fprintf(os.Stderr, "--- shared vm console.log ---\n%s\n", v.console())
	}
	if err := v.shutdown(); err != nil {
		fmt.Fprintln(os.Stderr, "vmtest: shutting down the shared vm:", err)
		code = 1
	}
	if n := lostShutdownReplies.Load(); n > 0 {
		fmt.Fprintf(os.Stderr, "vmtest: KNOWN AGENT BUG: %d of %d agent Shutdown replies were lost (connection closed, then a clean power-off)\n", n, shutdownCalls.Load())
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
	v.q, err = qemu.New(hypervisor.Config{
		ID:        id,
		StateDir:  v.state,
		Kernel:    guestFile("vmlinuz"),
		Initrd:    guestFile("initrd.img"),
		VCPUs:     2,
		MemoryMiB: 512,
		SharedDir: v.share,
		Debug:     os.Getenv("VEIL_VMTEST_DEBUG") != "",
	}, logger)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, bootTimeout)
	defer cancel()
	start := time.Now()
	if err := v.q.Start(ctx); err != nil {
		return nil, err
	}
	conn, err := v.q.DialAgent(ctx)
	if err != nil {
		return nil, err
	}
	v.client = api.NewClient(conn)
	// The first request waits for the agent; a VM that dies meanwhile ends
	// the connection, so this does not outlive the guest.
	if _, err := v.client.Sandbox.Check(ctx, &api.CheckRequest{}); err != nil {
		return nil, fmt.Errorf("waiting for the agent: %w (%v)", err, v.q.Err())
	}
	v.ready = time.Since(start)
	if sandbox {
		_, err := v.client.Sandbox.CreateSandbox(ctx, &api.CreateSandboxRequest{
			SandboxId: id,
			Hostname:  "vmtest",
			Storages:  []*api.Storage{{Driver: "9p", Source: hypervisor.ShareTag, MountPoint: "/run/veil/shared"}},
		})
		if err != nil {
			return nil, fmt.Errorf("creating sandbox: %w", err)
		}
	}
	return v, nil
}

func (v *vm) console() string {
	b, _ := os.ReadFile(v.q.ConsolePath())
	return string(b)
}

// lostShutdownReplies counts agent Shutdown calls whose reply never came
// although the guest then powered off cleanly (see shutdown).
var lostShutdownReplies, shutdownCalls atomic.Int32

// shutdown is the shim's orderly path: agent Shutdown, Stop, Cleanup. It
// requires a clean power-off: QEMU exits with status 0.
//
// The agent's Shutdown reply is sometimes lost: the agent stops its ttrpc
// server with Server.Shutdown, which closes connections it believes idle,
// and ttrpc only marks a connection active in its run loop, after the
// request's handler has been started and the loop iterates again; while
// the Shutdown handler runs the connection still looks idle, so it may be
// closed before the reply is written. Until the agent waits for its reply
// to be written, a closed connection followed by a clean power-off counts
// as success here and is reported at the end of the run.
func (v *vm) shutdown() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	shutdownCalls.Add(1)
	if _, err := v.client.Sandbox.Shutdown(ctx, &api.ShutdownRequest{}); err != nil {
		select { // Err then holds the console's tail: the guest's side
		case <-v.q.Done():
		case <-ctx.Done():
		}
		exit := v.q.Err()
		if !errors.Is(err, ttrpc.ErrClosed) || exit == nil || !strings.Contains(exit.Error(), "exited with status 0") {
			return errors.Join(fmt.Errorf("agent shutdown: %w", err), exit, v.destroy())
		}
		lostShutdownReplies.Add(1)
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
