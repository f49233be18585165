package hypervisor

import (
	"bufio"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// KVMAPIVersion is the only KVM API version there has ever been
// (KVM_GET_API_VERSION answers 12 on every kernel since 2.6.22).
const KVMAPIVersion = 12

// KVMHost is what the accelerator choice reads from a host: whether
// /dev/kvm is usable, the CPU's virtualisation flags and the kvm modules.
// ReadKVMHost gathers it; ChooseAccel decides from it alone, so every kind
// of host is a table row in a test.
type KVMHost struct {
	// DevKVM: /dev/kvm exists.
	DevKVM bool `json:"dev_kvm"`
	// APIVersion is what KVM_GET_API_VERSION on /dev/kvm answered; 0 when
	// /dev/kvm could not be opened or asked, and APIErr says why.
	APIVersion int    `json:"api_version"`
	APIErr     string `json:"api_err,omitempty"`
	// VMX and SVM are the CPU flags of Intel VT-x and AMD-V in
	// /proc/cpuinfo. A guest without nested virtualisation (and a
	// paravirtual KVM's host) shows neither.
	VMX bool `json:"vmx"`
	SVM bool `json:"svm"`
	// Modules are the kvm* modules, loaded (/proc/modules) or built in
	// with parameters (/sys/module), sorted. A kernel with KVM built in and
	// no module support has no /proc/modules: this list is then only a hint.
	Modules []string `json:"modules"`
}

// HasModule reports whether the kvm module name is loaded or built in.
func (h KVMHost) HasModule(name string) bool { return slices.Contains(h.Modules, name) }

// ChooseAccel resolves the requested accelerator against the host.
// AccelAuto (or "") picks KVM when /dev/kvm is usable (it opens and answers
// KVM_GET_API_VERSION with KVMAPIVersion) and the CPU has hardware
// virtualisation (vmx or svm), whether KVM is a module or built into the
// kernel. A paravirtual KVM (module kvm_pvm) also provides a working
// /dev/kvm, but boots only specially built guests and hangs ordinary ones:
// it gets TCG. An explicit AccelKVM or AccelTCG is honoured as asked. The
// reason says why, for the log and `veil check`.
func ChooseAccel(requested Accel, h KVMHost) (Accel, string) {
	switch requested {
	case AccelKVM, AccelTCG:
		return requested, "requested in the configuration"
	}
	flag := "vmx"
	if !h.VMX {
		flag = "svm"
	}
	switch {
	case h.HasModule("kvm_pvm"):
		return AccelTCG, "the host's KVM is kvm_pvm, a paravirtual KVM that boots only specially built guests: software emulation (TCG)"
	case !h.DevKVM:
		return AccelTCG, "no /dev/kvm: software emulation (TCG)"
	case h.APIVersion != KVMAPIVersion:
		why := h.APIErr
		if why == "" {
			why = fmt.Sprintf("KVM_GET_API_VERSION answered %d, want %d", h.APIVersion, KVMAPIVersion)
		}
		return AccelTCG, "/dev/kvm is not usable (" + why + "): software emulation (TCG)"
	case !h.VMX && !h.SVM:
		return AccelTCG, "/dev/kvm answers but the CPU has neither vmx nor svm in /proc/cpuinfo: not hardware KVM, software emulation (TCG)"
	}
	return AccelKVM, fmt.Sprintf("/dev/kvm answers KVM API %d and the CPU has %s: hardware virtualisation", KVMAPIVersion, flag)
}

// ReadKVMHost reads the host's KVM facts. path maps a host path
// (/dev/kvm, /proc/cpuinfo, /proc/modules, /sys/module) to where this
// process reads it (nil: as is); apiVersion asks a /dev/kvm for its API
// version (nil: open it and ioctl KVM_GET_API_VERSION). Tests pass a
// temporary root and a fake ioctl.
func ReadKVMHost(path func(string) string, apiVersion func(dev string) (int, error)) KVMHost {
	if path == nil {
		path = func(p string) string { return p }
	}
	if apiVersion == nil {
		apiVersion = kvmAPIVersion
	}
	var h KVMHost
	dev := path("/dev/kvm")
	if _, err := os.Stat(dev); err == nil {
		h.DevKVM = true
		v, err := apiVersion(dev)
		if err != nil {
			h.APIErr = err.Error()
		} else {
			h.APIVersion = v
		}
	}
	if b, err := os.ReadFile(path("/proc/cpuinfo")); err == nil {
		h.VMX, h.SVM = cpuVirtFlags(string(b))
	}
	if b, err := os.ReadFile(path("/proc/modules")); err == nil {
		sc := bufio.NewScanner(strings.NewReader(string(b)))
		for sc.Scan() {
			name, _, _ := strings.Cut(sc.Text(), " ")
			h.Modules = addKVMModule(h.Modules, name)
		}
	}
	if ents, err := os.ReadDir(path("/sys/module")); err == nil {
		for _, e := range ents {
			h.Modules = addKVMModule(h.Modules, e.Name())
		}
	}
	slices.Sort(h.Modules)
	return h
}

func addKVMModule(mods []string, name string) []string {
	if (name == "kvm" || strings.HasPrefix(name, "kvm_")) && !slices.Contains(mods, name) {
		return append(mods, name)
	}
	return mods
}

// cpuVirtFlags reads the vmx and svm flags from /proc/cpuinfo's "flags"
// lines (the first processor's: every CPU of a host has the same).
func cpuVirtFlags(cpuinfo string) (vmx, svm bool) {
	sc := bufio.NewScanner(strings.NewReader(cpuinfo))
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok || strings.TrimSpace(key) != "flags" {
			continue
		}
		for _, f := range strings.Fields(val) {
			switch f {
			case "vmx":
				vmx = true
			case "svm":
				svm = true
			}
		}
		return vmx, svm
	}
	return false, false
}

// kvmAPIVersion opens dev and asks KVM_GET_API_VERSION.
func kvmAPIVersion(dev string) (int, error) {
	fd, err := unix.Open(dev, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("opening %s: %w", dev, err)
	}
	defer unix.Close(fd)
	const kvmGetAPIVersion = 0xAE00 // _IO(KVMIO, 0x00)
	v, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), kvmGetAPIVersion, 0)
	if errno != 0 {
		return 0, fmt.Errorf("KVM_GET_API_VERSION on %s: %w", dev, errno)
	}
	return int(v), nil
}

// ChooseTransport resolves the requested agent transport: TransportAuto (or
// "") picks vsock when the host has /dev/vhost-vsock, else virtio-serial.
func ChooseTransport(requested Transport, haveVhostVsock bool) Transport {
	switch requested {
	case TransportSerial, TransportVsock:
		return requested
	}
	if haveVhostVsock {
		return TransportVsock
	}
	return TransportSerial
}

// ValidAccel reports whether a is a known accelerator ("" counts as auto).
func ValidAccel(a Accel) bool {
	switch a {
	case "", AccelAuto, AccelKVM, AccelTCG:
		return true
	}
	return false
}

// ValidTransport reports whether t is a known transport ("" counts as auto).
func ValidTransport(t Transport) bool {
	switch t {
	case "", TransportAuto, TransportSerial, TransportVsock:
		return true
	}
	return false
}

// HostAccel reads this host's KVM facts (ReadKVMHost), chooses the
// accelerator for requested and logs the choice with its reason.
func HostAccel(requested Accel, logger *slog.Logger) Accel {
	h := ReadKVMHost(nil, nil)
	accel, reason := ChooseAccel(requested, h)
	logger.Info("accelerator chosen", "accel", accel, "requested", requested, "reason", reason)
	return accel
}

// HostTransport chooses the agent transport for requested on this host and
// logs the choice.
func HostTransport(requested Transport, logger *slog.Logger) Transport {
	_, err := os.Stat("/dev/vhost-vsock")
	t := ChooseTransport(requested, err == nil)
	logger.Info("agent transport chosen", "transport", t, "requested", requested, "vhost_vsock", err == nil)
	return t
}
