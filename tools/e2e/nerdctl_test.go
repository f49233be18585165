//go:build e2e

package e2e

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/veil-runtime/veil/tools/e2e/testimages"
)

// ipv4Line is a line of `ip -4 -o addr`: the interface and its address.
var ipv4Line = regexp.MustCompile(`(?m)^\d+: (\S+)\s+inet (\S+)`)

// etherAddr is the MAC address in `ip link` or `ip neigh` output.
var etherAddr = regexp.MustCompile(`lladdr ([0-9a-f:]{17})|link/ether ([0-9a-f:]{17})`)

// TestNerdctlDefaultNetwork is issue 15's "with nerdctl's default network
// the container has no eth0": nerdctl (built from the module proxy by
// tools/deps.sh) runs a container with its default network, which it sets
// up in an OCI createRuntime hook (`nerdctl internal oci-hook
// createRuntime`: CNI bridge on the pid of the hook's state). The
// container (under veil inside the VM: its kernel is not the host's) must
// have exactly lo and eth0 with an address of 10.4.0.0/24, and reach the
// gateway 10.4.0.1 at the MAC of nerdctl0 in containerd's network
// namespace, where the hook made it as under runc (each run starts without
// that bridge). Once `run --rm` returns nothing of the container is left:
// no container in nerdctl's list, no veth on the bridge, no IP allocation,
// no mount (rootfs, pinned netns), no cgroup. With --net none it has only
// lo, and nerdctl's net.ipv4.ip_unprivileged_port_start=0.
func TestNerdctlDefaultNetwork(t *testing.T) {
	if _, err := os.Stat(env.Bin("nerdctl")); err != nil {
		t.Fatalf("finding nerdctl (run `make deps`): %v", err)
	}
	// One data root and CNI config for every handler, as on a node: the
	// default network's conflist, written once, names the nerdctl0 bridge
	// the first run creates in containerd's network namespace.
	dir := t.TempDir()
	ipamDir := "/var/lib/cni/networks/bridge" // host-local's default store for nerdctl's "bridge"
	t.Cleanup(removeNew(ipamDir, "/run/containerd/runc", "/run/containerd/fifo", "/run/containerd"))
	forEachHandler(t, func(t *testing.T, handler string) {
		ctx := testContext(t, 5*time.Minute)
		ns := "nerdctl-" + handler
		nerdctl := func(args ...string) *exec.Cmd {
			return env.NetNS.Command(ctx, env.Bin("nerdctl"), append([]string{
				"--address", env.Address, "--namespace", ns, "--data-root", filepath.Join(dir, "data"),
				"--cni-path", "/usr/lib/cni", "--cni-netconfpath", filepath.Join(dir, "cni"), "--insecure-registry",
			}, args...)...)
		}
		t.Cleanup(func() { cleanNerdctlNamespace(ns) })

		// The hook must make the bridge, in the right namespace.
		if _, err := env.Run(ctx, env.NetNS.Command(ctx, "ip", "link", "show", "nerdctl0")); err == nil {
			if _, err := env.Run(ctx, env.NetNS.Command(ctx, "ip", "link", "del", "nerdctl0")); err != nil {
				t.Fatal(err)
			}
		}

		cidFile := filepath.Join(dir, handler+".cid")
		out, err := env.Run(ctx, nerdctl("run", "--rm", "--cidfile", cidFile, "--runtime", env.Handlers[handler].Type,
			env.Image(testimages.BusyboxImage), "sh", "-c",
			"uname -r; ip -4 -o addr; ping -c 1 -W 30 10.4.0.1 >/dev/null && echo gateway reached; ip neigh show 10.4.0.1"))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %s", handler, out)
		lines := strings.SplitN(strings.TrimSpace(out), "\n", 2)
		checkKernel(t, handler, lines[0])
		addrs := map[string]string{}
		for _, m := range ipv4Line.FindAllStringSubmatch(out, -1) {
			addrs[m[1]] = m[2]
		}
		if len(addrs) != 2 || addrs["lo"] != "127.0.0.1/8" || !strings.HasPrefix(addrs["eth0"], "10.4.0.") || !strings.HasSuffix(addrs["eth0"], "/24") || addrs["eth0"] == "10.4.0.1/24" {
			t.Errorf("the container's IPv4 addresses are %v; want lo and eth0 in nerdctl's default network 10.4.0.0/24, no other", addrs)
		}
		if !strings.Contains(out, "gateway reached") {
			t.Errorf("the container did not reach the bridge's gateway 10.4.0.1; it printed:\n%s", out)
		}
		br, err := env.Run(ctx, env.NetNS.Command(ctx, "ip", "-o", "link", "show", "nerdctl0"))
		if err != nil {
			t.Fatalf("nerdctl's bridge is not in containerd's network namespace: %v", err)
		}
		brMAC, gwMAC := etherAddr.FindStringSubmatch(br), etherAddr.FindStringSubmatch(lines[len(lines)-1])
		if brMAC == nil || gwMAC == nil || brMAC[2] != gwMAC[1] {
			t.Errorf("the container's gateway 10.4.0.1 is not containerd's nerdctl0: the container has %q, nerdctl0 is %q", gwMAC, br)
		}
		b, err := os.ReadFile(cidFile)
		if err != nil {
			t.Fatal(err)
		}
		id := strings.TrimSpace(string(b))

		if veths, err := env.Run(ctx, env.NetNS.Command(ctx, "ip", "-o", "link", "show", "master", "nerdctl0")); err != nil || strings.TrimSpace(veths) != "" {
			t.Errorf("interfaces left on nerdctl0 after run --rm: %q, %v", veths, err)
		}
		if ps, err := env.Run(ctx, nerdctl("ps", "-a", "-q")); err != nil || strings.TrimSpace(ps) != "" {
			t.Errorf("nerdctl ps -a after run --rm: %q, %v; want no container", ps, err)
		}
		if left := ipamEntriesOf(t, ipamDir, ns+"-"+id); len(left) > 0 {
			t.Errorf("IP allocations of the container left in %s: %v", ipamDir, left)
		}
		if left := mountsNaming(t, id); len(left) > 0 {
			t.Errorf("mounts of the container left (rootfs, pinned netns): %v", left)
		}
		if left, _ := filepath.Glob("/sys/fs/cgroup/*/" + ns + "/" + id); len(left) > 0 {
			t.Errorf("cgroups of the container left: %v", left)
		}

		// --net none: only lo, and the sysctl nerdctl sets on every
		// container, net.ipv4.ip_unprivileged_port_start=0, holds (under
		// veil the pod set it in the VM: crun refused it in the container).
		out, err = env.Run(ctx, nerdctl("run", "--rm", "--net", "none", "--runtime", env.Handlers[handler].Type,
			env.Image(testimages.BusyboxImage), "sh", "-c", "ip -4 -o addr; cat /proc/sys/net/ipv4/ip_unprivileged_port_start"))
		if err != nil {
			t.Fatal(err)
		}
		addrs = map[string]string{}
		for _, m := range ipv4Line.FindAllStringSubmatch(out, -1) {
			addrs[m[1]] = m[2]
		}
		lines = strings.Split(strings.TrimSpace(out), "\n")
		if len(addrs) != 1 || addrs["lo"] != "127.0.0.1/8" || lines[len(lines)-1] != "0" {
			t.Errorf("nerdctl run --net none: IPv4 addresses %v, ip_unprivileged_port_start %q; want lo only, 0", addrs, lines[len(lines)-1])
		}
	})
}

// ipamEntriesOf lists the files of host-local's store in dir that hold an
// allocation for the CNI container id.
func ipamEntriesOf(t *testing.T, dir, id string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var found []string
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err == nil && strings.HasPrefix(string(b), id) {
			found = append(found, e.Name())
		}
	}
	return found
}

// mountsNaming lists the mount points of this mount namespace whose path
// holds s.
func mountsNaming(t *testing.T, s string) []string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var found []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 4 && strings.Contains(fields[4], s) {
			found = append(found, fields[4])
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return found
}

// cleanNerdctlNamespace removes what nerdctl's containers of containerd
// namespace ns leave on the host outside the environment's directory once
// they are gone, as a node keeps it: the namespace's cgroups and the runc
// shim's default root for it (nerdctl passes runc no root), both only
// when empty.
func cleanNerdctlNamespace(ns string) {
	cgs, _ := filepath.Glob("/sys/fs/cgroup/*/" + ns)
	for _, cg := range cgs {
		_ = unix.Rmdir(cg)
	}
	_ = os.Remove(filepath.Join("/run/containerd/runc", ns))
}

// removeNew returns a cleanup that removes, of the paths that do not
// exist now (when it runs, they do: the test made them), tree with what it
// holds (host-local's store of the "bridge" network) and each of dirs,
// in order, when empty (containerd's default runc and FIFO directories,
// which the runc shim and the nerdctl client make).
func removeNew(tree string, dirs ...string) func() {
	missing := func(p string) bool { _, err := os.Stat(p); return os.IsNotExist(err) }
	newTree := missing(tree)
	var newDirs []string
	for _, d := range dirs {
		if missing(d) {
			newDirs = append(newDirs, d)
		}
	}
	return func() {
		if newTree {
			_ = os.RemoveAll(tree)
		}
		for _, d := range newDirs {
			_ = os.Remove(d)
		}
	}
}
