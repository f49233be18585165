//go:build e2e

package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/veil-runtime/veil/tools/e2e/harness"
	"github.com/veil-runtime/veil/tools/e2e/testimages"
)

// bridgeIP is the CNI bridge's address in the harness namespace (the
// "node" address a hostPort is reached at).
const bridgeIP = "10.88.0.1"

// TestPodNetworking checks a pod's network as Kubernetes sees it, under
// every handler: a web server pod answers at its pod IP from the harness
// (node) namespace; a second pod reaches it; the containers'
// /etc/resolv.conf is the CRI's DNS config; a hostPort reaches it through
// CNI's portmap. Under veil the pod's netns holds the VM's tap while the
// pod runs, and none once the pod is removed.
func TestPodNetworking(t *testing.T) {
	for i, h := range handlers {
		hostPort := 18080 + i
		t.Run(h, func(t *testing.T) {
			if err := env.CheckHandler(h); err != nil {
				t.Fatal(err)
			}
			podNetworking(t, h, hostPort)
		})
	}
}

func podNetworking(t *testing.T, handler string, hostPort int) {
	ctx := testContext(t, 15*time.Minute)
	dns := map[string]any{
		"servers":  []string{"10.96.0.10", "10.96.0.11"},
		"searches": []string{"veil-e2e.svc.cluster.local", "svc.cluster.local"},
		"options":  []string{"ndots:5", "timeout:2"},
	}
	wantResolv := []string{
		"search veil-e2e.svc.cluster.local svc.cluster.local",
		"nameserver 10.96.0.10",
		"nameserver 10.96.0.11",
		"options ndots:5 timeout:2",
	}

	server, err := env.RunPodWith(ctx, handler, "web-"+handler, func(c map[string]any) {
		c["port_mappings"] = []map[string]any{{"container_port": 80, "host_port": hostPort}} // protocol 0: TCP
		c["dns_config"] = dns
	})
	if err != nil {
		t.Fatal(err)
	}
	removeLater(t, server)
	web, err := env.StartContainer(ctx, server, harness.ContainerConfig("web", env.Image("e2e-test-images/httpd:2.4.39-4"), nil, false))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.WaitContainer(ctx, web, "CONTAINER_RUNNING", 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	info := inspectPod(t, server)
	t.Logf("pod %s: IP %s, netns %s", server.Name, info.ip, info.netns)

	// Under veil the pod's namespace holds the VM's tap; hold the namespace
	// open to look into it again once containerd has removed its mount.
	nsFD := openNetNS(t, info.netns)
	if links := linkNames(t, nsFD); handler == harness.Runc {
		if slices.ContainsFunc(links, isTap) {
			t.Errorf("runc pod's namespace has a tap: %v", links)
		}
	} else if !slices.Contains(links, "veil-tap0") || !slices.Contains(links, "eth0") {
		t.Errorf("pod namespace links %v, want eth0 and the VM's veil-tap0", links)
	}

	// The node reaches the pod IP.
	start := time.Now()
	page, err := httpGetFromNode(net.JoinHostPort(info.ip, "80"), time.Minute)
	if err != nil || !strings.Contains(page, "httpd") {
		t.Fatalf("GET http://%s/ from the node: %q, %v", info.ip, page, err)
	}
	t.Logf("pod IP answers HTTP from the node (%s after the container ran)", time.Since(start).Round(time.Millisecond))
	start = time.Now()
	if _, err := httpGetFromNode(net.JoinHostPort(info.ip, "80"), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("one HTTP round trip node -> pod IP: %s", time.Since(start).Round(time.Microsecond))

	// hostPort through portmap's DNAT on the node.
	page, err = httpGetFromNode(net.JoinHostPort(bridgeIP, fmt.Sprint(hostPort)), time.Minute)
	if err != nil || !strings.Contains(page, "httpd") {
		t.Errorf("GET http://%s:%d/ (hostPort) from the node: %q, %v", bridgeIP, hostPort, page, err)
	}

	// A second pod reaches the first at its pod IP; its containers get
	// the CRI's DNS config.
	client, err := env.RunPodWith(ctx, handler, "client-"+handler, func(c map[string]any) { c["dns_config"] = dns })
	if err != nil {
		t.Fatal(err)
	}
	removeLater(t, client)
	cli, err := env.StartContainer(ctx, client, harness.ContainerConfig("cli", env.Image(testimages.BusyboxImage), []string{"sleep", "3600"}, false))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.WaitContainer(ctx, cli, "CONTAINER_RUNNING", 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	// (no -T: Debian's busybox 1.35 wget segfaults with it)
	out, err := env.Run(ctx, env.Crictl(ctx, "exec", cli, "wget", "-qO-", "http://"+info.ip+":80/"))
	if err != nil || !strings.Contains(out, "httpd") {
		t.Errorf("pod %s fetching http://%s/ from pod %s: %q, %v", client.Name, info.ip, server.Name, out, err)
	}
	out = crictl(t, ctx, "exec", cli, "cat", "/etc/resolv.conf")
	if got := nonEmptyLines(out); !slices.Equal(got, wantResolv) {
		t.Errorf("/etc/resolv.conf in the container:\n%s\nwant the CRI's DNS config:\n%s", out, strings.Join(wantResolv, "\n"))
	}
	out = crictl(t, ctx, "exec", cli, "ip", "-o", "-4", "addr", "show", "eth0")
	clientInfo := inspectPod(t, client)
	if !strings.Contains(out, " "+clientInfo.ip+"/") {
		t.Errorf("eth0 in the container: %q, want the pod IP %s", out, clientInfo.ip)
	}

	// Removing the pod leaves no tap in its namespace, and the namespace
	// mount goes (CNI's and containerd's part).
	if err := env.RemovePod(ctx, server); err != nil {
		t.Fatal(err)
	}
	if links := linkNames(t, nsFD); slices.ContainsFunc(links, isTap) {
		t.Errorf("pod namespace keeps %v after the pod was removed", links)
	}
	if _, err := os.Stat(info.netns); !os.IsNotExist(err) {
		t.Errorf("pod netns %s still there after the pod was removed (%v)", info.netns, err)
	}
}

// removeLater removes pod when the test ends (unless the test did).
func removeLater(t *testing.T, pod *harness.Pod) {
	t.Cleanup(func() {
		ctx := testContext(t, 2*time.Minute)
		_, _ = env.Run(ctx, env.Crictl(ctx, "rmp", "--force", pod.ID))
	})
}

type podInfo struct{ ip, netns string }

// inspectPod returns a pod's IP and network namespace path.
func inspectPod(t *testing.T, pod *harness.Pod) podInfo {
	t.Helper()
	ctx := testContext(t, time.Minute)
	var v struct {
		Status struct {
			Network struct{ IP string }
		}
		Info struct {
			RuntimeSpec struct {
				Linux struct {
					Namespaces []struct{ Type, Path string }
				}
			}
		}
	}
	if err := json.Unmarshal([]byte(crictl(t, ctx, "inspectp", "-o", "json", pod.ID)), &v); err != nil {
		t.Fatal(err)
	}
	info := podInfo{ip: v.Status.Network.IP}
	for _, ns := range v.Info.RuntimeSpec.Linux.Namespaces {
		if ns.Type == "network" {
			info.netns = ns.Path
		}
	}
	if info.ip == "" || info.netns == "" {
		t.Fatalf("pod %s: IP %q, netns %q; want both", pod.Name, info.ip, info.netns)
	}
	return info
}

// openNetNS holds the namespace at path open until the test ends.
func openNetNS(t *testing.T, path string) netns.NsHandle {
	t.Helper()
	ns, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

// linkNames lists the links in the namespace.
func linkNames(t *testing.T, ns netns.NsHandle) []string {
	t.Helper()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range links {
		names = append(names, l.Attrs().Name)
	}
	return names
}

func isTap(name string) bool { return strings.HasPrefix(name, "veil-tap") }

// httpGetFromNode fetches http://addr/ from the harness namespace (the
// node), retrying a refused or unanswered connection until timeout (the
// server may still be starting).
func httpGetFromNode(addr string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		page, err := httpGetOnce(addr)
		if err == nil || time.Now().After(deadline) {
			return page, err
		}
		time.Sleep(200 * time.Millisecond) // poll interval while the server starts
	}
}

func httpGetOnce(addr string) (string, error) {
	var conn net.Conn
	// The socket is made in the namespace and stays there.
	err := env.NetNS.Do(func() error {
		var err error
		conn, err = net.DialTimeout("tcp", addr, 5*time.Second)
		return err
	})
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/", nil)
	req.Close = true
	if err := req.Write(conn); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return string(body), fmt.Errorf("GET http://%s/: %s", addr, resp.Status)
	}
	return string(body), nil
}

func nonEmptyLines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}
