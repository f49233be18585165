// Package netnstest is test support for code that works in a network
// namespace: a new namespace pinned on a file in the test's directory
// (removed when the test ends), optionally with loopback up as the CNI
// loopback plugin leaves a pod's, and the nftables tables in one. Tests
// that use it need root (CAP_NET_ADMIN, CAP_SYS_ADMIN).
package netnstest

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// New creates a network namespace pinned at name in t's temporary
// directory, with lo up when loUp, and removes it when the test ends.
func New(t testing.TB, name string, loUp bool) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the network namespace tests need root (CAP_NET_ADMIN, CAP_SYS_ADMIN)")
	}
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		if loUp {
			lo, err := netlink.LinkByName("lo")
			if err == nil {
				err = netlink.LinkSetUp(lo)
			}
			if err != nil {
				errc <- err
				return
			}
		}
		errc <- unix.Mount(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()), path, "", unix.MS_BIND, "")
	}()
	if err := <-errc; err != nil {
		t.Fatalf("creating network namespace: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(path, unix.MNT_DETACH); err != nil {
			t.Errorf("removing network namespace %s: %v", path, err)
		}
	})
	return path
}

// NFTables lists the names of the nftables tables in the namespace at path.
func NFTables(t testing.TB, path string) []string {
	t.Helper()
	ns, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		t.Fatal(err)
	}
	ts, err := c.ListTables()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tb := range ts {
		names = append(names, tb.Name)
	}
	return names
}
