package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"

	"golang.org/x/sys/unix"
)

// NetNS is a network namespace the harness created and pinned with a bind
// mount on a file. The private containerd, its shims, CNI's bridge and
// iptables rules, the registry's listener and every client that needs
// loopback (crictl's streaming, critest) live in it, never on the host's
// network.
type NetNS struct{ Path string }

// NewNetNS creates a network namespace pinned at path (a file that must not
// exist yet) with its loopback interface up.
func NewNetNS(ctx context.Context, path string) (*NetNS, error) {
	if err := os.WriteFile(path, nil, 0o444); err != nil {
		return nil, fmt.Errorf("creating netns pin file: %w", err)
	}
	errc := make(chan error, 1)
	go func() {
		// The thread is never unlocked: it ends with this goroutine, so
		// no other goroutine ever runs in the new namespace.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unsharing network namespace: %w", err)
			return
		}
		src := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		if err := unix.Mount(src, path, "", unix.MS_BIND, ""); err != nil {
			errc <- fmt.Errorf("pinning network namespace at %s: %w", path, err)
			return
		}
		errc <- nil
	}()
	if err := <-errc; err != nil {
		os.Remove(path)
		return nil, err
	}
	n := &NetNS{Path: path}
	if out, err := n.Command(ctx, "ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		n.Close()
		return nil, fmt.Errorf("bringing up loopback in %s: %w: %s", path, err, out)
	}
	return n, nil
}

// Do runs fn on an OS thread inside the namespace. Sockets fn opens stay in
// the namespace after Do returns.
func (n *NetNS) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		fd, err := unix.Open(n.Path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("opening netns %s: %w", n.Path, err)
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("entering netns %s: %w", n.Path, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// Command returns a command that runs name inside the namespace (through
// nsenter, so it also works for long-running daemons).
func (n *NetNS) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + n.Path, "--", name}, args...)...)
}

// Close unpins the namespace; it disappears once no process uses it.
func (n *NetNS) Close() error {
	err := unix.Unmount(n.Path, unix.MNT_DETACH)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
		err = nil
	}
	if rerr := os.Remove(n.Path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
		err = errors.Join(err, rerr)
	}
	if err != nil {
		return fmt.Errorf("removing netns %s: %w", n.Path, err)
	}
	return nil
}
