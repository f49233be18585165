package hostcheck

import (
	"fmt"
	"io"
	"strings"
)

// WriteText writes the report for people: one line per check.
func WriteText(w io.Writer, r Report) error {
	yes := func(b bool) string {
		if b {
			return "yes"
		}
		return "no"
	}
	var b strings.Builder
	mods := strings.Join(r.KVM.Modules, ", ")
	if mods == "" {
		mods = "none"
	}
	dev := yes(r.KVM.DevKVM)
	if r.KVM.APIVersion != 0 {
		dev += fmt.Sprintf(", API %d", r.KVM.APIVersion)
	}
	flag := r.KVM.CPUFlag
	if flag == "" {
		flag = "neither vmx nor svm"
	}
	fmt.Fprintf(&b, "kvm:          %s (/dev/kvm %s; cpu %s; modules: %s; accel %s)\n", r.KVM.Note, dev, flag, mods, r.KVM.Accel)
	transport := "virtio-serial"
	if r.VhostVsock {
		transport = "vsock, a guest CID per pod locked under /run/veil/vsock"
	}
	fmt.Fprintf(&b, "vhost-vsock:  %s (agent transport %s)\n", yes(r.VhostVsock), transport)
	if r.QEMU.Version != "" {
		fmt.Fprintf(&b, "qemu:         %s %s; launches SEV-SNP %s, TDX %s", r.QEMU.Path, r.QEMU.Version, yes(r.QEMU.SNP), yes(r.QEMU.TDX))
		if r.QEMU.Note != "" {
			fmt.Fprintf(&b, " (%s)", r.QEMU.Note)
		}
		b.WriteString("\n")
	} else {
		fmt.Fprintf(&b, "qemu:         %s\n", r.QEMU.Note)
	}
	fmt.Fprintf(&b, "host TEE:     SEV-SNP %s, TDX %s\n", yes(r.HostTEE.SEVSNP), yes(r.HostTEE.TDX))
	fmt.Fprintf(&b, "cgroups:      %s\n", r.Cgroups)
	driver := r.CgroupDriver.Kubelet
	if driver == "" {
		driver = "no kubelet"
	} else {
		driver = "kubelet " + driver + " (" + r.CgroupDriver.Source + ")"
	}
	fmt.Fprintf(&b, "cgroup driver: %s; systemd is PID 1: %s; %s\n", driver, yes(r.CgroupDriver.SystemdBooted), r.CgroupDriver.Note)
	if r.Containerd.Version != "" {
		fmt.Fprintf(&b, "containerd:   %s %s, supported %s", r.Containerd.Path, r.Containerd.Version, yes(r.Containerd.Supported))
		if r.Containerd.Note != "" {
			fmt.Fprintf(&b, " (%s)", r.Containerd.Note)
		}
		b.WriteString("\n")
	} else {
		fmt.Fprintf(&b, "containerd:   %s\n", r.Containerd.Note)
	}
	if r.GuestImage.Matches {
		fmt.Fprintf(&b, "guest image:  %s matches its manifest\n", r.GuestImage.Dir)
	} else {
		fmt.Fprintf(&b, "guest image:  %s: %s\n", r.GuestImage.Dir, strings.Join(r.GuestImage.Problems, "; "))
	}
	fmt.Fprintf(&b, "tee label:    veil.io/tee=%s\n", r.TEE)
	if len(r.Problems) == 0 {
		b.WriteString("result:       veil can run pods here\n")
	} else {
		b.WriteString("result:       veil cannot run pods here:\n")
		for _, p := range r.Problems {
			fmt.Fprintf(&b, "  - %s\n", p)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
