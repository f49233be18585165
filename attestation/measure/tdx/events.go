package tdx

import (
	"crypto/sha512"
	"encoding/binary"
	"fmt"
	"unicode/utf16"
)

// TCG event types TDVF logs (TCG PC Client Platform Firmware Profile).
const (
	EvSeparator                      uint32 = 0x00000004
	EvEventTag                       uint32 = 0x00000006
	EvPlatformConfigFlags            uint32 = 0x0000000A
	EvEFIVariableDriverConfig        uint32 = 0x80000001
	EvEFIVariableBoot                uint32 = 0x80000002
	EvEFIBootServicesApplication     uint32 = 0x80000003
	EvEFIAction                      uint32 = 0x80000007
	EvEFIPlatformFirmwareBlob2       uint32 = 0x8000000A
	EvEFIHandoffTables2              uint32 = 0x8000000B
	efiGlobalVariable                       = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
	efiImageSecurityDatabase                = "d719b2cb-3d3a-4596-a3bc-dad00e67656f"
	actionCallingEFIApplication             = "Calling EFI Application from Boot Option"
	actionExitBootServicesInvocation        = "Exit Boot Services Invocation"
	actionExitBootServicesReturned          = "Exit Boot Services Returned with Success"
	initrdCmdlineSuffix                     = " initrd=initrd"
	ovmfDXEFVName                           = "7cb8bdc9-f8eb-4f34-aaea-3ee4af6516a1"
	ovmfUiAppFile                           = "462caa21-7614-4503-836e-8ab6f4662331"
	loadOptionActiveHiddenApp               = 0x00000109 // ACTIVE | HIDDEN | CATEGORY_APP
	devicePathMediaFV                       = 0x0704     // type 4 (media), subtype 7 (PIWG firmware volume)
	devicePathMediaFVFile                   = 0x0604     // type 4, subtype 6 (PIWG firmware file)
)

// Event is one measurement TDVF (or the kernel's EFI stub) extends into an
// RTMR: RTMR[Register] = SHA-384(RTMR[Register] || Digest).
type Event struct {
	Register int    // RTMR index 0..3 (CC MR index minus 1)
	Type     uint32 // TCG event type
	Name     string // what was measured
	Digest   [48]byte
}

// Replay extends four zeroed RTMRs with the events in order.
func Replay(events []Event) ([4][48]byte, error) {
	var r [4][48]byte
	for i, e := range events {
		if e.Register < 0 || e.Register > 3 {
			return r, fmt.Errorf("replaying event %d (%s): RTMR index %d, want 0..3", i, e.Name, e.Register)
		}
		h := sha512.New384()
		h.Write(r[e.Register][:])
		h.Write(e.Digest[:])
		h.Sum(r[e.Register][:0])
	}
	return r, nil
}

func sha384(parts ...[]byte) [48]byte {
	h := sha512.New384()
	for _, p := range parts {
		h.Write(p)
	}
	var d [48]byte
	h.Sum(d[:0])
	return d
}

// utf16LE encodes s as UTF-16LE without a terminator.
func utf16LE(s string) []byte {
	u := utf16.Encode([]rune(s))
	b := make([]byte, 2*len(u))
	for i, c := range u {
		binary.LittleEndian.PutUint16(b[2*i:], c)
	}
	return b
}

// EFIVariableData is the UEFI_VARIABLE_DATA TDVF hashes for an
// EV_EFI_VARIABLE_* event: vendor GUID, u64 name length in UTF-16 code
// units, u64 data length, the UTF-16LE name (no terminator), the data.
func EFIVariableData(vendor [16]byte, name string, data []byte) []byte {
	n := utf16LE(name)
	b := make([]byte, 0, 32+len(n)+len(data))
	b = append(b, vendor[:]...)
	b = binary.LittleEndian.AppendUint64(b, uint64(len(n)/2))
	b = binary.LittleEndian.AppendUint64(b, uint64(len(data)))
	b = append(b, n...)
	return append(b, data...)
}

// SeparatorDigest is EV_SEPARATOR's digest: SHA-384 of four zero bytes.
func SeparatorDigest() [48]byte { return sha384([]byte{0, 0, 0, 0}) }

// CmdlineDigest is the RTMR2 digest of the kernel command line as the
// Linux EFI stub measures its LoadOptions (EV_EVENT_TAG): OVMF appends
// " initrd=initrd" when QEMU passes an initrd and hands the line over as
// UTF-16LE with its terminating NUL, and the stub measures those bytes.
func CmdlineDigest(cmdline string, withInitrd bool) [48]byte {
	if withInitrd {
		cmdline += initrdCmdlineSuffix
	}
	return sha384(utf16LE(cmdline), []byte{0, 0})
}

// uiAppBootOption is OVMF's Boot0000 on a direct kernel boot: the
// EFI_LOAD_OPTION for the built-in UiApp, a hidden application in the DXE
// firmware volume.
func uiAppBootOption() []byte {
	var dp []byte
	fv := mustGUID(ovmfDXEFVName)
	file := mustGUID(ovmfUiAppFile)
	dp = binary.LittleEndian.AppendUint16(dp, devicePathMediaFV)
	dp = binary.LittleEndian.AppendUint16(dp, 20)
	dp = append(dp, fv[:]...)
	dp = binary.LittleEndian.AppendUint16(dp, devicePathMediaFVFile)
	dp = binary.LittleEndian.AppendUint16(dp, 20)
	dp = append(dp, file[:]...)
	dp = append(dp, 0x7f, 0xff, 0x04, 0x00) // end of device path
	var b []byte
	b = binary.LittleEndian.AppendUint32(b, loadOptionActiveHiddenApp)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(dp)))
	b = append(b, utf16LE("UiApp")...)
	b = append(b, 0, 0)
	return append(b, dp...)
}

// ACPIDigests are the SHA-384 digests of the three fw_cfg files OVMF
// downloads and measures into RTMR0 (EV_PLATFORM_CONFIG_FLAGS, "ACPI
// DATA"): etc/table-loader, etc/acpi/rsdp and etc/acpi/tables, as QEMU
// generated them for this machine (devices, vCPUs, memory).
type ACPIDigests struct {
	TableLoader, RSDP, Tables [48]byte
}

// ACPIDigestsOf hashes the three fw_cfg blobs.
func ACPIDigestsOf(tableLoader, rsdp, tables []byte) ACPIDigests {
	return ACPIDigests{TableLoader: sha384(tableLoader), RSDP: sha384(rsdp), Tables: sha384(tables)}
}

// CFVDigest is the digest of TDVF's EV_EFI_PLATFORM_FIRMWARE_BLOB2 event:
// SHA-384 of the raw bytes of the firmware's CFV section (the variable
// store QEMU maps with the image).
func CFVDigest(fw []byte, sections []Section) ([48]byte, error) {
	for i, s := range sections {
		if s.Type != SectionCFV {
			continue
		}
		if err := s.check(len(fw)); err != nil {
			return [48]byte{}, fmt.Errorf("hashing the CFV: section %d: %w", i, err)
		}
		return sha384(fw[s.DataOffset : uint64(s.DataOffset)+uint64(s.RawDataSize)]), nil
	}
	return [48]byte{}, fmt.Errorf("hashing the CFV: the firmware has no CFV section")
}

// RTMR0Events are TDVF's RTMR0 events on a QEMU direct kernel boot with
// Secure Boot off, in log order: the TD HOB, the CFV (the firmware's
// variable store section), the five Secure Boot variables (empty), a
// separator, the three ACPI blobs, BootOrder (0000) and Boot0000 (UiApp).
// This is the sequence of OVMF before edk2-stable202505 as the dstack
// tdx-lite hardware quote shows it.
func RTMR0Events(tdHOB []byte, cfvDigest [48]byte, acpi ACPIDigests) []Event {
	global := mustGUID(efiGlobalVariable)
	secdb := mustGUID(efiImageSecurityDatabase)
	ev := []Event{
		{0, EvEFIHandoffTables2, "TD HOB", sha384(tdHOB)},
		{0, EvEFIPlatformFirmwareBlob2, "CFV (variable store)", cfvDigest},
	}
	for _, v := range []struct {
		vendor [16]byte
		name   string
	}{{global, "SecureBoot"}, {global, "PK"}, {global, "KEK"}, {secdb, "db"}, {secdb, "dbx"}} {
		ev = append(ev, Event{0, EvEFIVariableDriverConfig, "EFI variable " + v.name, sha384(EFIVariableData(v.vendor, v.name, nil))})
	}
	return append(ev,
		Event{0, EvSeparator, "separator", SeparatorDigest()},
		Event{0, EvPlatformConfigFlags, "ACPI etc/table-loader", acpi.TableLoader},
		Event{0, EvPlatformConfigFlags, "ACPI etc/acpi/rsdp", acpi.RSDP},
		Event{0, EvPlatformConfigFlags, "ACPI etc/acpi/tables", acpi.Tables},
		// EV_EFI_VARIABLE_BOOT measures the variable's data only.
		Event{0, EvEFIVariableBoot, "BootOrder", sha384([]byte{0, 0})},
		Event{0, EvEFIVariableBoot, "Boot0000 (UiApp)", sha384(uiAppBootOption())},
	)
}

// RTMR1Events are the RTMR1 events of a direct kernel boot: the kernel's
// PE image digest (see KernelDigest), then the boot manager's actions
// around ExitBootServices.
func RTMR1Events(kernelDigest [48]byte) []Event {
	return []Event{
		{1, EvEFIBootServicesApplication, "kernel (PE image)", kernelDigest},
		{1, EvEFIAction, actionCallingEFIApplication, sha384([]byte(actionCallingEFIApplication))},
		{1, EvSeparator, "separator", SeparatorDigest()},
		{1, EvEFIAction, actionExitBootServicesInvocation, sha384([]byte(actionExitBootServicesInvocation))},
		{1, EvEFIAction, actionExitBootServicesReturned, sha384([]byte(actionExitBootServicesReturned))},
	}
}

// RTMR2Events are the events the Linux EFI stub (Linux 6.1 and later)
// measures into PCR 9, which TDVF maps to RTMR2: its LoadOptions (the
// command line, see CmdlineDigest) and the initrd it loads through
// LoadFile2, hashed as the file's bytes. Without an initrd there is no
// initrd event.
func RTMR2Events(cmdline string, initrd []byte, haveInitrd bool) []Event {
	ev := []Event{{2, EvEventTag, "kernel command line", CmdlineDigest(cmdline, haveInitrd)}}
	if haveInitrd {
		ev = append(ev, Event{2, EvEventTag, "initrd", sha384(initrd)})
	}
	return ev
}
