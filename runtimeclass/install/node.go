package install

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"

	"github.com/veil-runtime/veil/runtimeclass/hostcheck"
	shimconfig "github.com/veil-runtime/veil/shim/config"
)

// ReadyFile is written, in the installer's own container (not on the node),
// once `veil install --wait` or `veil uninstall --wait` finished everything,
// node labels included: the DaemonSet's readiness probe tests for it, so a
// Ready installer pod means a labelled node. A restarted installer pod is
// not Ready again until it ran again.
const ReadyFile = "/tmp/veil-installer-done"

// teeHandlers maps a TEE (hostcheck.TEE) to the handler that runs it.
var teeHandlers = map[string]string{"snp": "veil-snp", "tdx": "veil-tdx"}

// SelectHandlers picks the handlers to install from the check of the node
// (r, gathered before install). With explicit false (no --handlers) it is
// veil and veil-dev everywhere, and veil-snp or veil-tdx only where the
// host kernel, QEMU and KVM can run that TEE (r.TEE): the others would
// point at firmware and a QEMU the node does not have. An explicit list is
// installed as given; its TEE handlers the node cannot run get a note
// (they are not labelled: LabelsFor). notes say what was left out and why.
func SelectHandlers(r hostcheck.Report, requested []string, explicit bool) (handlers, notes []string) {
	for _, h := range requested {
		tee := strings.TrimPrefix(h, "veil-")
		if _, isTEE := teeHandlers[tee]; !isTEE || r.TEE == tee {
			handlers = append(handlers, h)
			continue
		}
		why := fmt.Sprintf("veil check found no %s on this node (tee %s: %s)", strings.ToUpper(tee), r.TEE, teeWhy(r, tee))
		if explicit {
			handlers = append(handlers, h)
			notes = append(notes, fmt.Sprintf("%s installed as --handlers asks, but %s: the node is not labelled %s=%s", h, why, LabelTEE, tee))
			continue
		}
		notes = append(notes, fmt.Sprintf("%s not installed: %s", h, why))
	}
	return handlers, notes
}

// teeWhy says which part of the TEE check failed.
func teeWhy(r hostcheck.Report, tee string) string {
	var missing []string
	switch tee {
	case "snp":
		if !r.HostTEE.SEVSNP {
			missing = append(missing, "host kernel without SEV-SNP (kvm_amd sev_snp)")
		}
		if !r.QEMU.SNP {
			missing = append(missing, "QEMU without sev-snp-guest")
		}
	case "tdx":
		if !r.HostTEE.TDX {
			missing = append(missing, "host kernel without TDX (kvm_intel tdx)")
		}
		if !r.QEMU.TDX {
			missing = append(missing, "QEMU without tdx-guest")
		}
	}
	if !r.KVM.Hardware {
		missing = append(missing, "no usable KVM ("+r.KVM.Note+")")
	}
	if len(missing) == 0 {
		return "the KVM module does not match"
	}
	return strings.Join(missing, "; ")
}

// LabelsFor decides the node labels from the check run after install (r)
// and teeProblem, why the installed handler of r.TEE cannot run ("" when it
// can): veil.io/runtime=true only when the check found no problem, and
// veil.io/tee=snp|tdx only when, besides, that TEE's handler can run (else
// none). Labels it does not set are in remove (a merge patch deletes them,
// so a node that no longer passes loses them); notes say why.
func LabelsFor(r hostcheck.Report, teeProblem string) (set map[string]string, remove, notes []string) {
	if len(r.Problems) > 0 {
		notes = append(notes, fmt.Sprintf("node not labelled %s=true: veil check found: %s", LabelRuntime, strings.Join(r.Problems, "; ")))
		return map[string]string{}, []string{LabelRuntime, LabelTEE}, notes
	}
	tee := r.TEE
	if tee != "none" && teeProblem != "" {
		notes = append(notes, fmt.Sprintf("node labelled %s=none, not %s: %s", LabelTEE, tee, teeProblem))
		tee = "none"
	}
	return NodeLabels(tee), nil, notes
}

// teeProblem says why the installed handler of tee cannot run on this
// node: not installed, its config (with the admin's drop-ins) unreadable, or
// its firmware missing. "" when it can (or tee is none).
func (o *Options) teeProblem(tee string) string {
	h, ok := teeHandlers[tee]
	if !ok {
		return ""
	}
	if !slices.Contains(o.Handlers, h) {
		return "handler " + h + " is not installed"
	}
	path := HandlerConfigPath(o.Prefix, h)
	cfg, err := shimconfig.Load(o.h(path))
	if err != nil {
		return fmt.Sprintf("handler %s: %v", h, err)
	}
	fw := cfg.Confidential.Firmware
	if _, err := os.Stat(o.h(fw)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Sprintf("handler %s: firmware %s (key confidential.firmware of %s or %s/*.toml) does not exist: veil does not ship it", h, fw, path, shimconfig.DropInDir(path))
		}
		return fmt.Sprintf("handler %s: firmware %s: %v", h, fw, err)
	}
	return ""
}
