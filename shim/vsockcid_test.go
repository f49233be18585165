package shim

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"golang.org/x/sys/unix"

	"github.com/veil-runtime/veil/hypervisor"
	"github.com/veil-runtime/veil/hypervisor/qemu"
)

// fakeVhostHost is a host root with /dev/vhost-vsock (presence is all the
// transport choice reads) and a probe standing in for the ioctl: the CIDs
// in taken belong to another hypervisor's VMs.
type fakeVhostHost struct {
	root   string
	mu     sync.Mutex
	taken  []uint32
	probed []uint32
}

func newFakeVhostHost(t *testing.T, taken ...uint32) *fakeVhostHost {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "dev"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, vhostVsockDev), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	return &fakeVhostHost{root: root, taken: taken}
}

func (f *fakeVhostHost) inUse(cid uint32) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.probed = append(f.probed, cid)
	return slices.Contains(f.taken, cid), nil
}

// onVhostHost points h's shim at host and at a state root shared with the
// other shims of the test (one host: one lock directory).
func onVhostHost(h *harness, host *fakeVhostHost, stateRoot string) {
	h.s.hostRoot = host.root
	h.s.cids = &cidAllocator{dir: filepath.Join(stateRoot, vsockDirName), inUse: host.inUse}
}

func startSandbox(t *testing.T, h *harness) hypervisor.Config {
	t.Helper()
	must(h.s.Create(context.Background(), &taskAPI.CreateTaskRequest{ID: "sb", Bundle: bundle(t, sandboxAnn)}))
	return h.hv.cfg
}

func stopSandbox(t *testing.T, h *harness) {
	t.Helper()
	ctx := context.Background()
	must(h.s.Kill(ctx, &taskAPI.KillRequest{ID: "sb", Signal: 9}))
	must(h.s.Delete(ctx, &taskAPI.DeleteRequest{ID: "sb"}))
}

// TestVsockCIDAllocatedOnVhostHost pins issue 15's first real-host bug: on
// a host with /dev/vhost-vsock the default transport (auto) is vsock, and
// the shim gave QEMU no CID ("vsock transport needs VsockCID >= 3, have
// 0"). Each pod now gets a CID >= 3 unique on the host, skipping CIDs other
// hypervisors hold, and a released CID is reused.
func TestVsockCIDAllocatedOnVhostHost(t *testing.T) {
	host := newFakeVhostHost(t, 3) // CID 3: someone else's VM
	stateRoot := t.TempDir()
	h1, h2, h3 := newHarness(t), newHarness(t), newHarness(t)
	for _, h := range []*harness{h1, h2, h3} {
		onVhostHost(h, host, stateRoot)
	}

	c1 := startSandbox(t, h1)
	c2 := startSandbox(t, h2)
	if c1.Transport != hypervisor.TransportVsock || c2.Transport != hypervisor.TransportVsock {
		t.Fatalf("transports %q, %q with /dev/vhost-vsock and transport auto, want vsock", c1.Transport, c2.Transport)
	}
	if c1.VsockCID != 4 || c2.VsockCID != 5 {
		t.Fatalf("guest CIDs %d, %d; want 4 and 5 (3 is taken by another hypervisor, then unique per pod)", c1.VsockCID, c2.VsockCID)
	}
	if !slices.Contains(host.probed, 3) {
		t.Errorf("CID 3 never probed on vhost-vsock (probed %v)", host.probed)
	}
	// The config is one QEMU launches: the vhost-vsock device with the CID.
	args := strings.Join(qemu.Args(qemu.Launch{Transport: c1.Transport, VsockCID: c1.VsockCID, Accel: hypervisor.AccelTCG}), " ")
	if !strings.Contains(args, "vhost-vsock-pci,guest-cid=4") {
		t.Errorf("qemu args lack vhost-vsock-pci,guest-cid=4: %s", args)
	}

	stopSandbox(t, h1)
	if _, err := os.Stat(filepath.Join(stateRoot, vsockDirName, "4")); !os.IsNotExist(err) {
		t.Errorf("lock file of released CID 4: %v, want it removed", err)
	}
	if c3 := startSandbox(t, h3); c3.VsockCID != 4 {
		t.Errorf("third pod got CID %d, want the released 4", c3.VsockCID)
	}
	stopSandbox(t, h2)
	stopSandbox(t, h3)
}

func TestVirtioSerialNeedsNoCID(t *testing.T) {
	h := newHarness(t) // its host root has no /dev/vhost-vsock
	cfg := startSandbox(t, h)
	if cfg.Transport != hypervisor.TransportSerial || cfg.VsockCID != 0 {
		t.Errorf("without vhost-vsock: transport %q CID %d, want virtio-serial and no CID", cfg.Transport, cfg.VsockCID)
	}
	stopSandbox(t, h)
}

// cidHolderEnv makes the test binary a stand-in shim that locks a CID's
// file and waits to be killed (TestMain).
const cidHolderEnv = "VEIL_TEST_HOLD_CID_LOCK"

func holdCIDLock(path string) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err == nil {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
	}
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	fmt.Fprintf(f, "pid %d pod dead-shim\n", os.Getpid())
	fmt.Println("locked")
	select {}
}

// TestVsockCIDOfDeadShimIsReclaimed: a shim holding CID 3 blocks it from
// other shims while it lives; once it is killed (SIGKILL: no cleanup, the
// lock file stays) the kernel has dropped its lock and the CID is taken
// again.
func TestVsockCIDOfDeadShimIsReclaimed(t *testing.T) {
	dir := t.TempDir()
	a := &cidAllocator{dir: dir}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	holder := exec.Command(os.Args[0], "-test.run=^$")
	holder.Env = append(os.Environ(), cidHolderEnv+"="+filepath.Join(dir, "3"))
	out, err := holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	if line != "locked\n" {
		_ = holder.Process.Kill()
		_ = holder.Wait()
		t.Fatalf("stand-in shim: %q", line)
	}

	l, err := a.Allocate("pod-a")
	if err != nil || l.CID() != 4 {
		t.Fatalf("while another shim holds 3: CID %d, %v; want 4", l.CID(), err)
	}
	if err := holder.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = holder.Wait()
	if _, err := os.Stat(filepath.Join(dir, "3")); err != nil {
		t.Fatalf("the dead shim's lock file should still be there: %v", err)
	}
	l2, err := a.Allocate("pod-b")
	if err != nil || l2.CID() != 3 {
		t.Fatalf("after the holder died: CID %d, %v; want its 3 back", l2.CID(), err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "3"))
	if !strings.Contains(string(b), "pod pod-b") || strings.Contains(string(b), "dead-shim") {
		t.Errorf("reclaimed lock file says %q, want the new owner only", b)
	}
	for _, l := range []*cidLease{l, l2} {
		if err := l.Release(); err != nil {
			t.Error(err)
		}
	}
	if err := l.Release(); err != nil {
		t.Errorf("second release: %v", err)
	}
}

// TestVsockCIDsUniqueUnderConcurrency: shims allocating at once never share
// a CID.
func TestVsockCIDsUniqueUnderConcurrency(t *testing.T) {
	a := &cidAllocator{dir: t.TempDir()}
	const n = 16
	leases := make([]*cidLease, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			leases[i], errs[i] = a.Allocate(fmt.Sprint("pod", i))
		}()
	}
	wg.Wait()
	seen := map[uint32]bool{}
	for i, l := range leases {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if l.CID() < 3 || seen[l.CID()] {
			t.Errorf("CID %d given twice or below 3", l.CID())
		}
		seen[l.CID()] = true
	}
	// Release half while the other half allocates again: still unique.
	for i := 0; i < n; i += 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = leases[i].Release()
			leases[i], errs[i] = a.Allocate("again")
		}()
	}
	wg.Wait()
	seen = map[uint32]bool{}
	for i, l := range leases {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if seen[l.CID()] {
			t.Errorf("CID %d given twice after releases", l.CID())
		}
		seen[l.CID()] = true
		_ = l.Release()
	}
}

// TestVhostVsockProbeOnAPlainFile: the real ioctl against something that
// is not the vhost-vsock device fails with the device and CID named.
func TestVhostVsockProbeOnAPlainFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "vhost-vsock")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := vhostVsockInUse(p)(7)
	if err == nil || !strings.Contains(err.Error(), "VHOST_VSOCK_SET_GUEST_CID") || !strings.Contains(err.Error(), "CID 7") {
		t.Errorf("probe of a plain file: %v", err)
	}
	a := &cidAllocator{dir: t.TempDir(), inUse: vhostVsockInUse(p)}
	if _, err := a.Allocate("pod"); err == nil {
		t.Error("allocation succeeded although the probe failed")
	}
	if ents, _ := os.ReadDir(a.dir); len(ents) != 0 {
		t.Errorf("failed allocation left %d lock files", len(ents))
	}
}
