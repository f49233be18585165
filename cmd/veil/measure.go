package main

import (
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/veil-runtime/veil/attestation/measure"
	"github.com/veil-runtime/veil/cmd/internal/cli"
	"github.com/veil-runtime/veil/hypervisor"
	"github.com/veil-runtime/veil/runtimeclass/install"
	"github.com/veil-runtime/veil/shim/config"
)

const measureUsage = `usage:
  veil measure --handler NAME [--prefix DIR | --config FILE] [--initdata FILE] [overrides] [--json | --for-kbs]
  veil measure --tee snp|tdx|sample --kernel FILE [--initrd FILE] --append CMDLINE [--firmware FILE]
               [--vcpus N] [--memory-mib M] [--cpu-type MODEL | --vcpu-sig HEX] [--guest-features HEX]
               [--init-data-digest HEX] [--json | --for-kbs]

Computes the launch measurement of a veil pod VM from the exact artifacts its
handler launches: SEV-SNP launch digest (OVMF pages and SEV metadata, the
kernel/initrd/command-line hashes table, one VMSA per vCPU), TDX MRTD and
RTMRs, and the init-data digest the guest reports.

With --handler the inputs are the installed handler config
(PREFIX/etc/NAME.toml) and guest image, through the same code the shim and
the QEMU driver launch a pod with: the kernel command line, firmware, vCPU
count (pinned for snp and tdx handlers) and the handler's init-data. The
guest image's manifest.json, when present, must list the same kernel and
initrd. --cpu-type, --vcpu-sig, --guest-features, --firmware and --memory-mib
override the handler's values (e.g. to measure for another host).

TDX: MRTD, RTMR 1 (kernel) and RTMR 2 (command line and initrd); RTMR 0
covers QEMU's ACPI tables and is not computed. RTMR 1 follows the VM's
memory size: for a pod without a memory limit the handler's
default_memory_mib (2048 by default), for a pod with one the handler's
memory_mib plus the limit (give it as --memory-mib).

The SNP digest covers the vCPU signature: QEMU runs SNP guests with
-cpu host, so the default is this machine's CPU (from /proc/cpuinfo); give
--cpu-type (EPYC-Milan, EPYC-Genoa, ...) or --vcpu-sig to measure for
another host.

--for-kbs prints the veil-kbs commands that pin the values in the broker's
attestation policy (add --url, --admin-token-file, --ca to each when the
broker is not veil-kbs's default https://127.0.0.1:8080).

flags:`

func measureCmd(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("measure", flag.ContinueOnError)
	fs.SetOutput(stdout)
	handler := fs.String("handler", "", "installed runtime handler to measure (veil-snp, veil-tdx, veil-dev)")
	prefix := fs.String("prefix", install.DefaultPrefix, "install prefix of --handler")
	cfgPath := fs.String("config", "", "handler config file (instead of PREFIX/etc/HANDLER.toml)")
	initdataFile := fs.String("initdata", "", "init-data document of the pod (default: the handler's confidential.initdata)")
	tee := fs.String("tee", "", "snp, tdx or sample (without --handler)")
	firmware := fs.String("firmware", "", "OVMF (AmdSev) or TDVF image")
	kernel := fs.String("kernel", "", "guest kernel (-kernel)")
	initrd := fs.String("initrd", "", "initrd (-initrd)")
	appendLine := fs.String("append", "", "kernel command line, exactly as QEMU gets it (-append)")
	vcpus := fs.Uint("vcpus", 1, "vCPU count")
	memMiB := fs.Uint("memory-mib", 256, "guest memory in MiB (TDX; with --handler: a pod without a memory limit, its default_memory_mib)")
	cpuType := fs.String("cpu-type", "", "QEMU vCPU model (EPYC-v4, EPYC-Milan, ...); default: this host's CPU")
	vcpuSig := fs.String("vcpu-sig", "", "vCPU signature (CPUID 1 EAX, hex) instead of --cpu-type")
	features := fs.String("guest-features", "", "SEV_FEATURES (hex; default 0x1)")
	idDigest := fs.String("init-data-digest", "", "init-data digest (hex) to report, without --handler")
	cpuinfo := fs.String("cpuinfo", "/proc/cpuinfo", "where this host's CPU is read for -cpu host")
	asJSON := fs.Bool("json", false, "print JSON")
	forKBS := fs.Bool("for-kbs", false, "print `veil-kbs reference add` commands")
	fs.Usage = func() {
		fmt.Fprintln(stdout, measureUsage)
		fs.PrintDefaults()
	}
	if err := cli.Parse(fs, args); err != nil {
		return helpIsNoError(err)
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("measure: unexpected arguments %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	var in measure.Inputs
	var source string
	if *handler != "" || *cfgPath != "" {
		for _, f := range []string{"tee", "kernel", "initrd", "append", "vcpus", "init-data-digest"} {
			if set[f] {
				return fmt.Errorf("measure: --%s comes from the handler config; edit the config or measure without --handler", f)
			}
		}
		path := *cfgPath
		if path == "" {
			path = install.HandlerConfigPath(*prefix, *handler)
		}
		cfg, err := config.Load(path)
		if err != nil {
			return fmt.Errorf("measure: %w", err)
		}
		if *initdataFile != "" {
			cfg.Confidential.InitData = *initdataFile
		}
		if in, err = measure.HandlerInputs(cfg); err != nil {
			return fmt.Errorf("measure: %w", err)
		}
		source = path
	} else {
		if *tee == "" || *kernel == "" {
			return fmt.Errorf("measure: give --handler, or --tee and --kernel (see veil measure --help)")
		}
		in = measure.Inputs{
			TEE: hypervisor.TEE(*tee), Firmware: *firmware, Kernel: *kernel, Initrd: *initrd, Append: *appendLine,
			VCPUs: uint32(*vcpus), MemoryMiB: uint32(*memMiB), CPUType: measure.HostCPU,
			InitDataDigest: strings.ToLower(*idDigest),
		}
		if in.TEE == hypervisor.TEESNP {
			in.GuestFeatures = measure.DefaultGuestFeatures
		}
		if *initdataFile != "" {
			return fmt.Errorf("measure: --initdata needs --handler; give --init-data-digest (veil initdata digest FILE)")
		}
		if d, err := hex.DecodeString(in.InitDataDigest); err != nil || (len(d) != 0 && len(d) != 32) {
			return fmt.Errorf("measure: --init-data-digest %q: want 64 hex digits (SHA-256)", *idDigest)
		}
	}
	if set["firmware"] {
		in.Firmware = *firmware
	}
	if set["memory-mib"] {
		in.MemoryMiB = uint32(*memMiB) // TDX: the pod's memory limit adds to the handler's base
	}
	if *cpuType != "" {
		in.CPUType = *cpuType
	}
	if *features != "" {
		v, err := strconv.ParseUint(strings.TrimPrefix(*features, "0x"), 16, 64)
		if err != nil {
			return fmt.Errorf("measure: --guest-features %q: want hex", *features)
		}
		in.GuestFeatures = v
	}
	cpuNote := ""
	switch {
	case *vcpuSig != "":
		v, err := strconv.ParseUint(strings.TrimPrefix(*vcpuSig, "0x"), 16, 32)
		if err != nil || v == 0 {
			return fmt.Errorf("measure: --vcpu-sig %q: want a non-zero hex value", *vcpuSig)
		}
		in.VCPUSig = uint32(v)
	case in.TEE == hypervisor.TEESNP && in.CPUType == measure.HostCPU:
		b, err := os.ReadFile(*cpuinfo)
		if err != nil {
			return fmt.Errorf("measure: the SNP digest covers the host CPU (-cpu host): %w; give --cpu-type or --vcpu-sig", err)
		}
		if in.VCPUSig, err = measure.HostVCPUSig(string(b)); err != nil {
			return fmt.Errorf("measure: %w; give --cpu-type or --vcpu-sig to measure for an SNP host", err)
		}
		cpuNote = "this host's CPU, " + *cpuinfo
	}

	r, err := measure.Measure(in)
	if err != nil {
		return fmt.Errorf("measure: %w", err)
	}
	manifest := ""
	if source != "" {
		m, ok, err := measure.ReadManifest(in.Kernel)
		switch {
		case err != nil:
			return fmt.Errorf("measure: %w", err)
		case !ok:
			manifest = "no manifest.json beside the kernel"
		default:
			if err := m.Check(r); err != nil {
				return fmt.Errorf("measure: %w", err)
			}
			manifest = "manifest.json lists this kernel and initrd"
		}
	}
	switch {
	case *asJSON:
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		return enc.Encode(r)
	case *forKBS:
		return writeForKBS(stdout, r)
	}
	return writeMeasureText(stdout, r, source, cpuNote, manifest)
}

// writeForKBS prints the veil-kbs commands that pin r in the broker's
// attestation policy.
func writeForKBS(w io.Writer, r measure.Result) error {
	var b strings.Builder
	switch {
	case r.SNP != nil:
		fmt.Fprintf(&b, "veil-kbs reference add snp.measurement %s\n", r.SNP.Measurement)
	case r.TDX != nil:
		fmt.Fprintf(&b, "veil-kbs reference add tdx.mrtd %s\n", r.TDX.MRTD)
		for i, v := range r.TDX.RTMR {
			if (i == 0 && !r.TDX.RTMR0Known) || i == 3 {
				continue
			}
			fmt.Fprintf(&b, "veil-kbs reference add tdx.rtmr%d %s\n", i, v)
		}
		if !r.TDX.RTMR0Known {
			b.WriteString("# tdx.rtmr0 not computed: it needs the digests of QEMU's ACPI tables (take them from a reference boot's event log)\n")
		}
	default:
		b.WriteString("# sample (veil-dev) evidence has no launch measurement: pin the init-data only (and run veil-kbs with --dev)\n")
	}
	if r.Inputs.InitDataDigest != "" {
		fmt.Fprintf(&b, "veil-kbs reference add init-data %s\n", r.Inputs.InitDataDigest)
	} else {
		b.WriteString("# no init-data: the handler binds none; pods bring their own (veil initdata digest FILE)\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func writeMeasureText(w io.Writer, r measure.Result, source, cpuNote, manifest string) error {
	in := r.Inputs
	var b strings.Builder
	row := func(k, format string, a ...any) { fmt.Fprintf(&b, "%-17s"+format+"\n", append([]any{k}, a...)...) }
	if source != "" {
		row("handler config", "%s", source)
	}
	row("tee", "%s", in.TEE)
	if in.Firmware != "" {
		row("firmware", "%s  sha256 %s", in.Firmware, r.FirmwareSHA256)
	}
	row("kernel", "%s  sha256 %s", in.Kernel, r.KernelSHA256)
	if in.Initrd != "" {
		row("initrd", "%s  sha256 %s", in.Initrd, r.InitrdSHA256)
	}
	row("append", "%q", in.Append)
	pinned := ""
	if in.TEE.Hardware() {
		pinned = " (pinned: the pod's CPU limit adds none)"
	}
	row("vcpus", "%d%s", in.VCPUs, pinned)
	if r.SNP != nil {
		note := in.CPUType
		if cpuNote != "" {
			note += ", " + cpuNote
		}
		row("vcpu signature", "%#x (%s)", r.SNP.VCPUSig, note)
		row("guest features", "%#x", in.GuestFeatures)
	}
	if in.InitDataDigest != "" {
		where := map[hypervisor.TEE]string{
			hypervisor.TEESNP:    "bound in HOSTDATA, not in the launch digest",
			hypervisor.TEETDX:    "bound in MRCONFIGID",
			hypervisor.TEESample: "on the kernel command line; the sample evidence reports it",
		}[in.TEE]
		row("init-data", "%s (%s)", in.InitDataDigest, where)
	} else {
		row("init-data", "none")
	}
	if manifest != "" {
		row("guest image", "%s", manifest)
	}
	b.WriteString("\n")
	switch {
	case r.SNP != nil:
		row("snp.measurement", "%s", r.SNP.Measurement)
	case r.TDX != nil:
		row("tdx.mrtd", "%s", r.TDX.MRTD)
		for i, v := range r.TDX.RTMR {
			if i == 0 && !r.TDX.RTMR0Known {
				v = "(not computed: needs the digests of QEMU's ACPI tables)"
			}
			row(fmt.Sprintf("tdx.rtmr%d", i), "%s", v)
		}
	default:
		row("measurement", "none (sample TEE: software evidence, INSECURE)")
	}
	_, err := io.WriteString(w, b.String())
	return err
}
