package hypervisor

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The real-host rows: a kernel with KVM built in has no kvm_intel in
// /proc/modules (only /sys/module/kvm_intel, for its parameters); this
// development machine has a working /dev/kvm from kvm_pvm and no vmx.
var (
	intelBuiltin = KVMHost{DevKVM: true, APIVersion: 12, VMX: true, Modules: []string{"kvm", "kvm_intel"}}
	amdModule    = KVMHost{DevKVM: true, APIVersion: 12, SVM: true, Modules: []string{"ccp", "kvm", "kvm_amd"}}
	pvmHost      = KVMHost{DevKVM: true, APIVersion: 12, Modules: []string{"kvm", "kvm_pvm"}}
	noDevKVM     = KVMHost{VMX: true}
)

func TestChooseAccel(t *testing.T) {
	tests := []struct {
		name      string
		requested Accel
		host      KVMHost
		want      Accel
		reason    string
	}{
		{"intel, kvm built in (no module)", AccelAuto, KVMHost{DevKVM: true, APIVersion: 12, VMX: true}, AccelKVM, "vmx"},
		{"intel, kvm_intel built in with parameters", AccelAuto, intelBuiltin, AccelKVM, "KVM API 12"},
		{"amd with kvm_amd module", AccelAuto, amdModule, AccelKVM, "svm"},
		{"empty means auto", "", amdModule, AccelKVM, "svm"},
		{"paravirtual kvm (this machine)", AccelAuto, pvmHost, AccelTCG, "kvm_pvm"},
		{"paravirtual kvm even with vmx shown", AccelAuto, KVMHost{DevKVM: true, APIVersion: 12, VMX: true, Modules: []string{"kvm_pvm"}}, AccelTCG, "kvm_pvm"},
		{"no /dev/kvm", AccelAuto, noDevKVM, AccelTCG, "no /dev/kvm"},
		{"/dev/kvm not openable", AccelAuto, KVMHost{DevKVM: true, VMX: true, APIErr: "opening /dev/kvm: permission denied"}, AccelTCG, "permission denied"},
		{"/dev/kvm with a strange API", AccelAuto, KVMHost{DevKVM: true, APIVersion: 11, VMX: true}, AccelTCG, "answered 11"},
		{"/dev/kvm without cpu flags", AccelAuto, KVMHost{DevKVM: true, APIVersion: 12, Modules: []string{"kvm"}}, AccelTCG, "neither vmx nor svm"},
		{"lookalike module names are not kvm_pvm", AccelAuto, KVMHost{DevKVM: true, APIVersion: 12, VMX: true, Modules: []string{"kvm_pvm_helper"}}, AccelKVM, "vmx"},
		{"explicit tcg on a kvm host", AccelTCG, intelBuiltin, AccelTCG, "requested"},
		{"explicit kvm is honoured", AccelKVM, pvmHost, AccelKVM, "requested"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, reason := ChooseAccel(tt.requested, tt.host)
			if got != tt.want || !strings.Contains(reason, tt.reason) {
				t.Fatalf("ChooseAccel(%q, %+v) = %q (%s), want %q with %q", tt.requested, tt.host, got, reason, tt.want, tt.reason)
			}
		})
	}
}

// fakeHostRoot writes the files ReadKVMHost reads under a temporary root.
func fakeHostRoot(t *testing.T, files map[string]string, dirs ...string) func(string) string {
	t.Helper()
	root := t.TempDir()
	for name, content := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range dirs {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return func(p string) string { return filepath.Join(root, p) }
}

const (
	intelCPUInfo = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu vme de pse tsc msr pae mce cx8 apic vmx smx est tm2 ssse3 avx2\n\nprocessor\t: 1\nflags\t\t: fpu vmx\n"
	amdCPUInfo   = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu vme de pse tsc msr pae mce cx8 apic svm extapic cr8_legacy sev sev_es sev_snp\n"
	// this machine's: a KVM guest CPU without nested virtualisation.
	pvmCPUInfo = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge hypervisor lahf_lm abm\n"
)

// TestReadKVMHost reads the four kinds of host from files laid out as the
// kernel shows them; the ioctl on /dev/kvm (a plain file here) is faked
// and its arguments checked.
func TestReadKVMHost(t *testing.T) {
	api12 := func(t *testing.T) func(string) (int, error) {
		return func(dev string) (int, error) {
			if !strings.HasSuffix(dev, "/dev/kvm") {
				t.Errorf("api version asked of %s, want .../dev/kvm", dev)
			}
			return 12, nil
		}
	}
	tests := []struct {
		name   string
		files  map[string]string
		dirs   []string
		want   Accel
		reason string
	}{
		{"intel host, kvm built into the kernel (no /proc/modules)",
			map[string]string{"dev/kvm": "", "proc/cpuinfo": intelCPUInfo},
			[]string{"sys/module/kvm_intel/parameters", "sys/module/kvm/parameters"}, AccelKVM, "vmx"},
		{"amd host with kvm_amd as a module",
			map[string]string{"dev/kvm": "", "proc/cpuinfo": amdCPUInfo, "proc/modules": "kvm_amd 200704 0 - Live 0x0\nkvm 1384448 1 kvm_amd, Live 0x0\nccp 118784 1 kvm_amd, Live 0x0\n"},
			[]string{"sys/module/kvm_amd", "sys/module/kvm"}, AccelKVM, "svm"},
		{"this machine: kvm_pvm",
			map[string]string{"dev/kvm": "", "proc/cpuinfo": pvmCPUInfo, "proc/modules": "kvm_pvm 81920 0 - Live 0x0\nkvm 1384448 1 kvm_pvm, Live 0x0\n"},
			[]string{"sys/module/kvm_pvm", "sys/module/kvm"}, AccelTCG, "kvm_pvm"},
		{"no /dev/kvm",
			map[string]string{"proc/cpuinfo": pvmCPUInfo, "proc/modules": ""},
			nil, AccelTCG, "no /dev/kvm"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := ReadKVMHost(fakeHostRoot(t, tt.files, tt.dirs...), api12(t))
			got, reason := ChooseAccel(AccelAuto, h)
			if got != tt.want || !strings.Contains(reason, tt.reason) {
				t.Fatalf("host %+v: %q (%s), want %q with %q", h, got, reason, tt.want, tt.reason)
			}
		})
	}
}

// TestKVMAPIVersionOnAPlainFile: the real ioctl on something that is not
// a KVM device fails and the host gets TCG with the reason.
func TestKVMAPIVersionOnAPlainFile(t *testing.T) {
	path := fakeHostRoot(t, map[string]string{"dev/kvm": "", "proc/cpuinfo": intelCPUInfo})
	h := ReadKVMHost(path, nil)
	if h.APIVersion != 0 || !strings.Contains(h.APIErr, "KVM_GET_API_VERSION") {
		t.Fatalf("plain file as /dev/kvm: %+v, want API error from the ioctl", h)
	}
	if got, reason := ChooseAccel(AccelAuto, h); got != AccelTCG || !strings.Contains(reason, "not usable") {
		t.Fatalf("ChooseAccel = %q (%s), want tcg: not usable", got, reason)
	}
}

func TestChooseTransport(t *testing.T) {
	tests := []struct {
		requested Transport
		vsock     bool
		want      Transport
	}{
		{TransportAuto, true, TransportVsock},
		{TransportAuto, false, TransportSerial},
		{"", true, TransportVsock},
		{"", false, TransportSerial},
		{TransportSerial, true, TransportSerial},
		{TransportVsock, false, TransportVsock},
	}
	for _, tt := range tests {
		if got := ChooseTransport(tt.requested, tt.vsock); got != tt.want {
			t.Errorf("ChooseTransport(%q, vhost-vsock=%v) = %q, want %q", tt.requested, tt.vsock, got, tt.want)
		}
	}
}

func TestValid(t *testing.T) {
	for _, a := range []Accel{"", AccelAuto, AccelKVM, AccelTCG} {
		if !ValidAccel(a) {
			t.Errorf("ValidAccel(%q) = false", a)
		}
	}
	if ValidAccel("hvf") {
		t.Error(`ValidAccel("hvf") = true`)
	}
	for _, tr := range []Transport{"", TransportAuto, TransportSerial, TransportVsock} {
		if !ValidTransport(tr) {
			t.Errorf("ValidTransport(%q) = false", tr)
		}
	}
	if ValidTransport("tcp") {
		t.Error(`ValidTransport("tcp") = true`)
	}
}
