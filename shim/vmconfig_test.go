package shim

import (
	"encoding/hex"
	"net"
	"reflect"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/veil-runtime/veil/attestation/initdata"
	"github.com/veil-runtime/veil/guest-agent/api"
	"github.com/veil-runtime/veil/hypervisor"
	"github.com/veil-runtime/veil/shim/config"
)

// TestPodVM is the table of what a pod's VM is launched with: size from
// the CRI annotations and the handler's caps, the TEE and its kernel
// parameters, the share, transport, NICs and hotplug slots.
func TestPodVM(t *testing.T) {
	host := podVMHost{ID: "sb", StateDir: "/run/veil/k8s.io/sb", SharedDir: "/run/veil/k8s.io/sb/shared", HostCPUs: 8, Transport: hypervisor.TransportSerial}
	// base is what the default handler launches a pod without limits with
	// (default_memory_mib: a pod without a memory limit).
	base := func(mod func(*hypervisor.Config)) hypervisor.Config {
		vm := hypervisor.Config{
			ID: "sb", StateDir: host.StateDir, SharedDir: host.SharedDir,
			Kernel: config.DirectKernel, Initrd: "/opt/veil/share/veil/initrd.img",
			VCPUs: 1, MemoryMiB: config.DefaultPodMemoryMiB, Accel: hypervisor.AccelAuto, Transport: hypervisor.TransportSerial,
			DebugConsole: true, Console: hypervisor.Console{MaxBytes: 1 << 20, Files: 2}, BlockSlots: blockSlots,
		}
		if mod != nil {
			mod(&vm)
		}
		return vm
	}
	limits := map[string]string{annotationCPUQuota: "150000", annotationCPUPeriod: "100000", annotationMemory: "536870913"}
	doc := []byte("version = \"0.1.0\"\nalgorithm = \"sha256\"\n")
	digest := initdata.Digest(doc)
	mac := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	withConf := func(tee string, mod func(*config.Config)) config.Config {
		c := config.Default()
		c.Confidential.TEE = tee
		c.Hypervisor.VCPUs = 2
		if mod != nil {
			mod(&c)
		}
		return c
	}
	noPull := false
	tests := []struct {
		name string
		cfg  config.Config
		ann  map[string]string
		conf *confidentialPod
		host func(*podVMHost)
		want hypervisor.Config
	}{
		{name: "no limits: the handler's base size", cfg: config.Default(), want: base(nil)},
		{name: "CPU and memory limits are added, rounded up", cfg: config.Default(), ann: limits,
			want: base(func(vm *hypervisor.Config) { vm.VCPUs, vm.MemoryMiB = 3, 256+513 })},
		{name: "max_vcpus and max_memory_mib cap them", cfg: func() config.Config {
			c := config.Default()
			c.Hypervisor.MaxVCPUs, c.Hypervisor.MaxMemoryMiB = 2, 300
			return c
		}(), ann: limits, want: base(func(vm *hypervisor.Config) { vm.VCPUs, vm.MemoryMiB = 2, 300 })},
		{name: "max_vcpus 0: the host's CPUs cap", cfg: config.Default(), ann: limits, host: func(h *podVMHost) { h.HostCPUs = 2 },
			want: base(func(vm *hypervisor.Config) { vm.VCPUs, vm.MemoryMiB = 2, 256+513 })},
		{name: "kernel_args, then the agent's log level", cfg: func() config.Config {
			c := config.Default()
			c.Hypervisor.KernelArgs, c.Agent.LogLevel, c.Debug, c.DebugConsole = []string{"veil.extra=1"}, "debug", true, false
			return c
		}(), want: base(func(vm *hypervisor.Config) {
			vm.KernelArgs, vm.Debug, vm.DebugConsole = []string{"veil.extra=1", "veil.log=debug"}, true, false
		})},
		{name: "vsock with the allocated CID, NICs in order", cfg: config.Default(),
			host: func(h *podVMHost) {
				h.Transport, h.VsockCID, h.NICs = hypervisor.TransportVsock, 7, []hypervisor.NIC{{MAC: mac}}
			},
			want: base(func(vm *hypervisor.Config) {
				vm.Transport, vm.VsockCID, vm.NICs = hypervisor.TransportVsock, 7, []hypervisor.NIC{{MAC: mac}}
			})},
		{name: "sample TEE: digest on the command line, no share with guest pull, no block slots",
			cfg: withConf("sample", nil), ann: limits, conf: &confidentialPod{tee: hypervisor.TEESample, doc: doc},
			want: base(func(vm *hypervisor.Config) {
				vm.VCPUs, vm.MemoryMiB = 4, 256+513
				vm.KernelArgs = []string{"veil.tee=sample", "veil.initdata_digest=" + hex.EncodeToString(digest[:])}
				vm.TEE = hypervisor.TEEConfig{Kind: hypervisor.TEESample, InitDataDigest: digest[:]}
				vm.SharedDir, vm.BlockSlots = "", 0
			})},
		{name: "SNP: exactly hypervisor.vcpus whatever the CPU limit, digest bound in the TEE",
			cfg: withConf("snp", func(c *config.Config) { c.Confidential.Firmware = "/fw.igvm" }), ann: limits,
			conf: &confidentialPod{tee: hypervisor.TEESNP, doc: doc},
			want: base(func(vm *hypervisor.Config) {
				vm.VCPUs, vm.MemoryMiB = 2, 256+513
				vm.KernelArgs = []string{"veil.tee=snp"}
				vm.TEE = hypervisor.TEEConfig{Kind: hypervisor.TEESNP, InitDataDigest: digest[:], Firmware: "/fw.igvm"}
				vm.SharedDir, vm.BlockSlots = "", 0
			})},
		{name: "confidential without guest pull keeps the share", cfg: withConf("sample", func(c *config.Config) { c.Confidential.GuestPull = &noPull }),
			conf: &confidentialPod{tee: hypervisor.TEESample},
			want: base(func(vm *hypervisor.Config) {
				vm.VCPUs = 2 // no limits: default_memory_mib
				vm.KernelArgs = []string{"veil.tee=sample"}
				vm.TEE = hypervisor.TEEConfig{Kind: hypervisor.TEESample}
				vm.BlockSlots = 0
			})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := host
			if tt.host != nil {
				tt.host(&h)
			}
			got := podVM(tt.cfg, &specs.Spec{Annotations: tt.ann}, tt.conf, h)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("podVM:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestShareStorage(t *testing.T) {
	const dir = "/run/veil/k8s.io/sb/shared"
	ninep := hypervisor.Share{HostPath: dir, Kind: hypervisor.Share9P, Tag: "veilshare", FSType: "9p", Options: []string{"trans=virtio", "cache=mmap"}}
	other := hypervisor.Share{HostPath: "/images/guest.erofs", Kind: hypervisor.SharePmem, Device: "/dev/pmem0", FSType: "erofs"}
	fs := ninep
	fs.Kind, fs.FSType, fs.Options = hypervisor.ShareVirtioFS, "virtiofs", nil
	tests := []struct {
		name    string
		shares  []hypervisor.Share
		dir     string
		want    *api.Storage
		wantErr string
	}{
		{name: "no shared directory", dir: "", shares: []hypervisor.Share{ninep}},
		{name: "9p: the driver's tag, fstype and options", dir: dir, shares: []hypervisor.Share{other, ninep},
			want: &api.Storage{Driver: "9p", Source: "veilshare", MountPoint: guestSharedDir, Fstype: "9p", Options: []string{"trans=virtio", "cache=mmap"}}},
		{name: "virtio-fs: the agent cannot mount it", dir: dir, shares: []hypervisor.Share{fs}, wantErr: "exports it over virtio-fs, the guest agent mounts shares over 9p only"},
		{name: "the driver does not export it", dir: dir, shares: []hypervisor.Share{other}, wantErr: "does not export it"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := shareStorage(tt.shares, tt.dir)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), dir) {
					t.Fatalf("shareStorage = %v, %v; want an error naming %s and containing %q", got, err, dir, tt.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Errorf("shareStorage = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}
