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
	overheadHeadroom = 1.25
	overheadStep     = 32
)

// Overhead is a RuntimeClass's overhead.podFixed.memory derived from a
// run's idle-pod memory, with what it came from.
type Overhead struct {
	Handler   string
	MemoryMiB int
	// RSSPerPodMiB is the measured figure: the resident memory of a pod's
	// shim and its descendants (QEMU), with Pods idle pods on the node.
	RSSPerPodMiB float64
	Pods         int
	// TCGMiB is the run's TCG translation cache (0 under KVM).
	TCGMiB uint32
	Accel  string
	Commit string
	Date   string
}

// Note says where the figure came from, for the manifest's annotation.
func (o Overhead) Note() string {
	return fmt.Sprintf("make bench %s, commit %s, accel %s (TCG cache %d MiB): %d idle %s pod(s), QEMU + shim resident %.0f MiB per pod, +%.0f%% rounded up to %d MiB",
		o.Date, o.Commit, o.Accel, o.TCGMiB, o.Pods, o.Handler, o.RSSPerPodMiB, (overheadHeadroom-1)*100, overheadStep)
}

// RuntimeClassOverhead derives the memory overhead of handler's
// RuntimeClass from the run: the resident memory of one idle pod's shim and
// QEMU (the fewest idle pods the run measured: with more, shared pages are
// counted in each), the memory a node's first pod is charged beyond its
// containers' limits, plus 25%, rounded up to 32 MiB. Resident, not PSS:
// the kubelet puts the overhead into the pod's cgroup limit, which charges
// pages to the pod that touched them first. ok is false when the run has
// no such measurement.
func (r *Result) RuntimeClassOverhead(handler string) (o Overhead, ok bool) {
	var best *Memory
	for i, m := range r.Memory {
		if m.Handler == handler && m.TotalRSS > 0 && (best == nil || m.Pods < best.Pods) {
			best = &r.Memory[i]
		}
	}
	if best == nil {
		return Overhead{}, false
	}
	perPod := float64(best.TotalRSS) / float64(best.Pods) / (1 << 20)
	mib := int(math.Ceil(perPod*overheadHeadroom/overheadStep)) * overheadStep
	tcg := r.Config.TCGTranslationCacheMiB
	if r.Machine.Accel != "tcg" {
		tcg = 0
	}
	return Overhead{
		Handler: handler, MemoryMiB: mib, RSSPerPodMiB: perPod, Pods: best.Pods,
		TCGMiB: tcg, Accel: r.Machine.Accel, Commit: r.Machine.Commit, Date: r.Started.Format("2006-01-02"),
	}, true
}

var (
	handlerLine    = regexp.MustCompile(`(?m)^handler:[ \t]*(\S+)[ \t]*$`)
	memoryLine     = regexp.MustCompile(`(?m)^([ \t]+memory:[ \t]*)\S+[ \t]*$`)
	annotationLine = regexp.MustCompile(`(?m)^([ \t]+veil\.io/overhead:[ \t]*).*$`)
)

// ApplyOverhead rewrites, in a RuntimeClass manifest (runtimeclass/
// runtimeclasses.yaml), the overhead.podFixed.memory and the
// veil.io/overhead annotation of the RuntimeClasses of handlers to o,
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
