package config

import (
	"encoding/hex"
	"slices"
	"strings"
	"testing"

	"github.com/veil-runtime/veil/hypervisor"
)

func TestVM(t *testing.T) {
	digest := make([]byte, 32)
	digest[0] = 0xab
	hexDigest := hex.EncodeToString(digest)
	for _, tt := range []struct {
		name     string
		tee      string
		digest   []byte
		wantArgs []string
		wantKind hypervisor.TEE
		pinned   bool
	}{
		{"ordinary", "none", nil, []string{"extra=1"}, "", false},
		{"sample with init-data: digest on the command line", "sample", digest, []string{"extra=1", "veil.tee=sample", "veil.initdata_digest=" + hexDigest}, hypervisor.TEESample, false},
		{"sample without init-data", "sample", nil, []string{"extra=1", "veil.tee=sample"}, hypervisor.TEESample, false},
		{"snp binds the digest in HOSTDATA, not on the command line", "snp", digest, []string{"extra=1", "veil.tee=snp"}, hypervisor.TEESNP, true},
		{"tdx binds it in MRCONFIGID", "tdx", digest, []string{"extra=1", "veil.tee=tdx"}, hypervisor.TEETDX, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			c.Hypervisor.KernelArgs = []string{"extra=1"}
			c.Hypervisor.Binary = "/q"
			c.Hypervisor.BIOS = "/q.rom"
			c.Debug = true
			c.Confidential.TEE = tt.tee
			c.Confidential.Firmware = map[bool]string{true: "/fw"}[tt.wantKind.Hardware()]
			vm := c.VM(tt.digest, 3, 300)
			if !slices.Equal(vm.KernelArgs, tt.wantArgs) || !slices.Equal(c.GuestKernelArgs(tt.digest), tt.wantArgs) {
				t.Errorf("kernel args %q, want %q", vm.KernelArgs, tt.wantArgs)
			}
			if vm.TEE.Kind != tt.wantKind || (tt.wantKind != "" && !slices.Equal(vm.TEE.InitDataDigest, tt.digest)) {
				t.Errorf("TEE %+v, want kind %q with the digest", vm.TEE, tt.wantKind)
			}
			if vm.Kernel != c.Hypervisor.Kernel || vm.Initrd != c.Hypervisor.Initrd || vm.Binary != "/q" || vm.BIOS != "/q.rom" || !vm.Debug || vm.VCPUs != 3 || vm.MemoryMiB != 300 {
				t.Errorf("VM = %+v", vm)
			}
			if c.PinnedVCPUs() != tt.pinned {
				t.Errorf("PinnedVCPUs = %v, want %v", c.PinnedVCPUs(), tt.pinned)
			}
			// The handler's own kernel_args are not aliased.
			vm.KernelArgs[0] = "changed"
			if c.Hypervisor.KernelArgs[0] != "extra=1" {
				t.Error("VM's kernel args alias the config's")
			}
		})
	}
}

// TestVMRootfsImage: rootfs_image replaces the initrd in the VM config,
// and a confidential handler refuses it (its root is the measured
// initramfs).
func TestVMRootfsImage(t *testing.T) {
	cfg, err := Parse([]byte("[hypervisor]\nrootfs_image = \"/opt/veil/share/veil/rootfs.erofs\"\n"), "veil.toml")
	if err != nil {
		t.Fatal(err)
	}
	vm := cfg.VM(nil, 1, 256)
	if vm.RootImage != "/opt/veil/share/veil/rootfs.erofs" || vm.Initrd != "" {
		t.Errorf("VM: RootImage %q, Initrd %q; want the image and no initrd", vm.RootImage, vm.Initrd)
	}
	if vm := Default().VM(nil, 1, 256); vm.RootImage != "" || vm.Initrd != "/opt/veil/share/veil/initrd.img" {
		t.Errorf("default VM: RootImage %q, Initrd %q; want the initrd", vm.RootImage, vm.Initrd)
	}
	_, err = Parse([]byte("[hypervisor]\nrootfs_image = \"/r.erofs\"\n[confidential]\ntee = \"sample\"\n"), "veil-dev.toml")
	if err == nil || !strings.Contains(err.Error(), `key hypervisor.rootfs_image: must be empty with confidential.tee "sample"`) {
		t.Errorf("rootfs_image with a TEE: %v", err)
	}
}
