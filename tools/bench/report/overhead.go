package report

import (
	"bytes"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strings"
)

// overheadHeadroom is the margin RuntimeClassOverhead adds to the measured
// figure, and overheadStep what it rounds up to, MiB.
const (
	overheadHeadroom = 1.10
	overheadStep     = 32
)

// Overhead is a RuntimeClass's overhead.podFixed.memory derived from a
// run's idle-pod memory, with what it came from.
type Overhead struct {
	// Handler is the handler whose idle pods were measured.
	Handler string
	// Class is the handler of the RuntimeClass the figure is for, when it
	// is not Handler: a stand-in (StandIns), named TEE.
	Class, TEE string
	MemoryMiB  int
	// BaseMiB is the VM's memory beyond the pod's limits
	// (hypervisor.memory_mib), which the guest may fill.
	BaseMiB uint32
	// OwnMiB is QEMU's memory other than guest RAM plus the shim's,
	// resident, for one idle pod (TCG's cache included under TCG).
	OwnMiB float64
	// TCGMiB is the run's TCG translation cache (0 under KVM).
	TCGMiB uint32
	Accel  string
	Commit string
	Date   string
}

// RuntimeClass is the handler whose RuntimeClass the figure is for.
func (o Overhead) RuntimeClass() string {
	if o.Class != "" {
		return o.Class
	}
	return o.Handler
}

// Note says where the figure came from, for the manifest's annotation;
// for a stand-in, first that it was measured as another handler and what
// that leaves out.
func (o Overhead) Note() string {
	run := fmt.Sprintf("make bench %s, commit %s, accel %s (TCG cache %d MiB): guest base memory %d MiB + QEMU (not guest RAM) and shim resident %.0f MiB for one idle %s pod, +%.0f%%, rounded up to %d MiB",
		o.Date, o.Commit, o.Accel, o.TCGMiB, o.BaseMiB, o.OwnMiB, o.Handler, (overheadHeadroom-1)*100, overheadStep)
	if o.RuntimeClass() == o.Handler {
		return run
	}
	note := fmt.Sprintf("measured as %s (the same guest kernel build, initrd and agent) on a machine without %s: what %s itself costs (its firmware, encrypted guest memory) is not in it",
		o.Handler, o.TEE, o.TEE)
	if o.TCGMiB > 0 {
		note += fmt.Sprintf(", and the %d MiB TCG cache in it is not paid under KVM, where %s runs", o.TCGMiB, o.TEE)
	}
	return note + "; " + run
}

// StandIn is a RuntimeClass bench cannot measure on its machine and the
// handler whose idle pods stand in for it.
type StandIn struct {
	Class, MeasuredAs, TEE string
}

// StandIns are the hardware TEE handlers, measured as veil-dev: the same
// guest kernel build, initrd and agent, with the software TEE, on a machine
// without SEV-SNP or TDX.
var StandIns = []StandIn{
	{Class: "veil-snp", MeasuredAs: "veil-dev", TEE: "AMD SEV-SNP"},
	{Class: "veil-tdx", MeasuredAs: "veil-dev", TEE: "Intel TDX"},
}

// RuntimeClassOverhead derives the memory overhead of handler's
// RuntimeClass from the run. The kubelet sets a pod's cgroup limit to its
// containers' limits plus the overhead, and QEMU and the shim run in that
// cgroup; the VM has the pod's limits plus its base memory
// (hypervisor.memory_mib of handler's VM), which the guest may fill (kernel, agent, page
// cache), while the containers' limits hold inside the guest. So the
// overhead is the base memory plus what QEMU holds besides guest RAM (heap,
// TCG's cache under TCG, its files) and the shim, resident (a node's first
// pod is charged the shared pages too), measured on one idle pod (the
// fewest the run measured), plus 10%, rounded up to 32 MiB. ok is false
// when the run has no such measurement of handler or not its VM.
func (r *Result) RuntimeClassOverhead(handler string) (o Overhead, ok bool) {
	var best *Memory
	for i, m := range r.Memory {
		if m.Handler == handler && m.TotalRSS > 0 && len(m.QEMUParts) > 0 && (best == nil || m.Pods < best.Pods) {
			best = &r.Memory[i]
		}
	}
	vm, vmOK := r.Config.VM(handler)
	if best == nil || !vmOK || vm.BaseMemoryMiB == 0 {
		return Overhead{}, false
	}
	own := (float64(best.TotalRSS) - float64(best.QEMUParts[PartGuestRAM])) / float64(best.Pods) / (1 << 20)
	mib := int(math.Ceil((float64(vm.BaseMemoryMiB)+own)*overheadHeadroom/overheadStep)) * overheadStep
	tcg := vm.TCGTranslationCacheMiB
	if r.Machine.Accel != "tcg" {
		tcg = 0
	}
	return Overhead{
		Handler: handler, MemoryMiB: mib, BaseMiB: vm.BaseMemoryMiB, OwnMiB: own,
		TCGMiB: tcg, Accel: r.Machine.Accel, Commit: r.Machine.Commit, Date: r.Started.Format("2006-01-02"),
	}, true
}

// RuntimeClassOverheads is every RuntimeClass overhead the run gives: each
// veil handler whose idle pods it measured (IdleOrder), then each stand-in
// (StandIns) whose measured handler is among them, with the same figure.
func (r *Result) RuntimeClassOverheads() []Overhead {
	var out []Overhead
	byHandler := map[string]Overhead{}
	for _, h := range r.IdleOrder() {
		if o, ok := r.RuntimeClassOverhead(h); ok && strings.HasPrefix(h, "veil") {
			out = append(out, o)
			byHandler[h] = o
		}
	}
	for _, s := range StandIns {
		if o, ok := byHandler[s.MeasuredAs]; ok {
			o.Class, o.TEE = s.Class, s.TEE
			out = append(out, o)
		}
	}
	return out
}

var (
	handlerLine    = regexp.MustCompile(`(?m)^handler:[ \t]*(\S+)[ \t]*$`)
	memoryLine     = regexp.MustCompile(`(?m)^([ \t]+memory:[ \t]*)\S+[ \t]*$`)
	annotationLine = regexp.MustCompile(`(?m)^([ \t]+veil\.io/overhead:[ \t]*).*$`)
)

// ApplyOverhead rewrites, in a RuntimeClass manifest (runtimeclass/
// runtimeclasses.yaml), the overhead.podFixed.memory and the
// veil.io/overhead annotation (o.Note) of the RuntimeClasses of handlers to o,
// leaving every other line (comments included) as it was. Each handler
// must have a RuntimeClass with both lines.
func ApplyOverhead(manifest []byte, handlers []string, o Overhead) ([]byte, error) {
	docs := bytes.Split(manifest, []byte("\n---\n"))
	seen := map[string]bool{}
	for i, d := range docs {
		m := handlerLine.FindSubmatch(d)
		if m == nil || !slices.Contains(handlers, string(m[1])) {
			continue
		}
		h := string(m[1])
		if !memoryLine.Match(d) || !annotationLine.Match(d) {
			return nil, fmt.Errorf("RuntimeClass of handler %s: no overhead memory line or no veil.io/overhead annotation to rewrite", h)
		}
		d = replaceValue(d, memoryLine, fmt.Sprintf("%dMi", o.MemoryMiB))
		d = replaceValue(d, annotationLine, yamlQuote(o.Note()))
		docs[i] = d
		seen[h] = true
	}
	var missing []string
	for _, h := range handlers {
		if !seen[h] {
			missing = append(missing, h)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("no RuntimeClass for handler(s) %s in the manifest", strings.Join(missing, ", "))
	}
	return bytes.Join(docs, []byte("\n---\n")), nil
}

// replaceValue replaces what follows the key (re's first group) on each
// line re matches with value.
func replaceValue(doc []byte, re *regexp.Regexp, value string) []byte {
	return re.ReplaceAllFunc(doc, func(line []byte) []byte {
		key := re.FindSubmatch(line)[1]
		return append(append([]byte(nil), key...), value...)
	})
}

// yamlQuote is s as a double-quoted YAML scalar (s has no control
// characters).
func yamlQuote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}
