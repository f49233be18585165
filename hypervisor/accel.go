package hypervisor

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"
)

// ChooseAccel resolves the requested accelerator against the host. procModules
// is the text of /proc/modules. AccelAuto (or "") picks KVM only when a
// hardware KVM module (kvm_intel or kvm_amd) is loaded: /dev/kvm alone is not
// enough, since a paravirtual KVM (kvm_pvm) also provides it and hangs normal
// guests. An explicit AccelKVM or AccelTCG is honoured as asked. The reason
// says why, for the log.
func ChooseAccel(requested Accel, procModules string) (Accel, string) {
	switch requested {
	case AccelKVM, AccelTCG:
		return requested, "requested in the configuration"
	}
	sc := bufio.NewScanner(strings.NewReader(procModules))
	for sc.Scan() {
		name, _, _ := strings.Cut(sc.Text(), " ")
		if name == "kvm_intel" || name == "kvm_amd" {
			return AccelKVM, name + " is loaded"
		}
	}
	return AccelTCG, "neither kvm_intel nor kvm_amd is loaded: software emulation"
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

// HostAccel reads /proc/modules, chooses the accelerator for requested and
// logs the choice with its reason. A missing /proc/modules (a kernel built
// without module support) counts as no KVM module loaded.
func HostAccel(requested Accel, logger *slog.Logger) (Accel, error) {
	b, err := os.ReadFile("/proc/modules")
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("reading /proc/modules: %w", err)
	}
	accel, reason := ChooseAccel(requested, string(b))
	logger.Info("accelerator chosen", "accel", accel, "requested", requested, "reason", reason)
	return accel, nil
}

// HostTransport chooses the agent transport for requested on this host and
// logs the choice.
func HostTransport(requested Transport, logger *slog.Logger) Transport {
	_, err := os.Stat("/dev/vhost-vsock")
	t := ChooseTransport(requested, err == nil)
	logger.Info("agent transport chosen", "transport", t, "requested", requested, "vhost_vsock", err == nil)
	return t
}
