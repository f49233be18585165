package tdx

import (
	"fmt"
)

// Inputs are the exact artifacts and settings of a TDX launch by QEMU
// (-bios, -kernel, -initrd, -append, -m).
type Inputs struct {
	Firmware []byte // the TDVF image (-bios)
	Kernel   []byte // the bzImage (-kernel); must have an EFI stub
	// Initrd is the -initrd file; nil means no -initrd (a non-nil empty
	// slice is an empty file).
	Initrd      []byte
	Cmdline     string // the -append string, exactly
	MemoryBytes uint64 // guest RAM (-m)
	// PageAddOrder is how the host's KVM builds the TD (MRTD only);
	// SinglePass (the zero value) is upstream KVM with QEMU 10.1+.
	PageAddOrder PageAddOrder
	// ACPI are the digests of the ACPI blobs QEMU generates for this
	// machine. RTMR0 is computed only when they are given; nothing here
	// can derive them (they need QEMU's ACPI builder for the exact machine,
	// devices, vCPU count and memory). Take them from the event log of a
	// reference boot of the same configuration.
	ACPI *ACPIDigests
}

// Values are a TD's launch measurements.
type Values struct {
	MRTD [48]byte
	// RTMR are the runtime measurement registers when the kernel starts
	// running: RTMR[0] (zero unless RTMR0Known), RTMR[1], RTMR[2]; RTMR[3]
	// is zero (veil's guest does not extend it).
	RTMR       [4][48]byte
	RTMR0Known bool
	// Events is the replayed log: RTMR0 (when known), RTMR1 and RTMR2.
	Events []Event
}

// Measure computes MRTD and the RTMRs of a TD that QEMU launches from in
// with a direct kernel boot through TDVF. See the package documentation for
// what each value depends on.
func Measure(in Inputs) (Values, error) {
	var v Values
	secs, err := ParseTDVF(in.Firmware)
	if err != nil {
		return v, fmt.Errorf("measuring the firmware: %w", err)
	}
	if v.MRTD, err = MRTD(in.Firmware, secs, in.PageAddOrder); err != nil {
		return v, err
	}
	if in.ACPI != nil {
		hob, err := QEMUTDHOB(secs, in.MemoryBytes)
		if err != nil {
			return v, err
		}
		cfv, err := CFVDigest(in.Firmware, secs)
		if err != nil {
			return v, err
		}
		v.Events = append(v.Events, RTMR0Events(hob, cfv, *in.ACPI)...)
		v.RTMR0Known = true
	}
	haveInitrd := in.Initrd != nil
	kernel, err := KernelDigest(in.Kernel, in.Cmdline, uint64(len(in.Initrd)), haveInitrd, in.MemoryBytes)
	if err != nil {
		return v, fmt.Errorf("measuring the kernel: %w", err)
	}
	v.Events = append(v.Events, RTMR1Events(kernel)...)
	v.Events = append(v.Events, RTMR2Events(in.Cmdline, in.Initrd, haveInitrd)...)
	if v.RTMR, err = Replay(v.Events); err != nil {
		return v, err
	}
	return v, nil
}
