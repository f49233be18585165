package report

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
)

// Figure is one number a run reports.
type Figure struct {
	Name  string
	Value float64
	Unit  string // "s", "MiB" or "x"
}

// Figures lists the run's headline numbers in a stable order: start
// min/median/max per handler, bare boot, shim overhead, veil's segment
// medians, PSS per idle pod, concurrency wall times and ratios, and per
// pull kind the median pull time and the memory peak and growth.
func (r *Result) Figures() []Figure {
	var out []Figure
	add := func(name string, v float64, unit string) { out = append(out, Figure{name, v, unit}) }
	for _, h := range r.Config.Handlers {
		st := Summarize(r.StartTotals(h))
		if st.N == 0 {
			continue
		}
		add("start "+h+" min", st.Min, "s")
		add("start "+h+" median", st.Median, "s")
		add("start "+h+" max", st.Max, "s")
	}
	bare := Summarize(r.BareReady())
	if bare.N > 0 {
		add("bare boot to agent-ready median", bare.Median, "s")
	}
	if v := Summarize(r.StartTotals("veil")); v.N > 0 && bare.N > 0 {
		add("veil start - bare boot (median)", v.Median-bare.Median, "s")
	}
	if Summarize(r.StartTotals("veil")).N > 0 {
		for i, m := range r.SegmentMedians("veil") {
			add("veil phase "+Segments[i].Name, m, "s")
		}
	}
	for _, m := range r.Memory {
		add(fmt.Sprintf("PSS per pod %s %d idle", m.Handler, m.Pods), m.PerPod()/(1<<20), "MiB")
		if m.QEMUParts[PartTCG] > 0 {
			add(fmt.Sprintf("PSS per pod %s %d idle without TCG cache", m.Handler, m.Pods), m.PerPodWithoutTCG()/(1<<20), "MiB")
		}
		if m.IdleCPU > 0 {
			add(fmt.Sprintf("CPU per pod %s %d idle", m.Handler, m.Pods), m.IdleMillicoresPerPod(), "millicores")
		}
	}
	for _, c := range r.Concurrency {
		wall, ratio := r.ConcurrencyWall(c.Handler, c.N)
		add(fmt.Sprintf("concurrency %s %d pods wall", c.Handler, c.N), wall, "s")
		if c.N != 1 && ratio > 0 {
			add(fmt.Sprintf("concurrency %s %d pods ratio to 1", c.Handler, c.N), ratio, "x")
		}
		if o := r.ParallelOverhead(c.Handler, c.N); o > 0 {
			add(fmt.Sprintf("concurrency %s %d pods wall / (n x one start's CPU / cores)", c.Handler, c.N), o, "x")
		}
	}
	for _, k := range PullKinds {
		s := r.SummarizePulls(k[0], k[1])
		if s.Time.N == 0 {
			continue
		}
		name := "pull " + k[0] + " " + k[1]
		add(name+" median", s.Time.Median, "s")
		if s.Start.N > 0 {
			add(name+" crictl start median", s.Start.Median, "s")
		}
		add(name+" memory peak", s.PeakMiB, "MiB")
		add(name+" memory growth", s.GrowthMiB, "MiB")
	}
	return out
}

func formatValue(v float64, unit string) string {
	switch unit {
	case "s":
		return fmt.Sprintf("%.3f s", v)
	case "MiB":
		return fmt.Sprintf("%.1f MiB", v)
	default:
		return fmt.Sprintf("%.2f%s", v, unit)
	}
}

// WriteTable writes the short text table of a run.
func WriteTable(w io.Writer, r *Result) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "machine: %s, %d CPUs (%s), accel %s, QEMU %s, containerd %s\n", r.Machine.CPUModel, r.Machine.CPUs,
		r.Machine.Kernel, r.Machine.Accel, r.Machine.QEMU, r.Machine.Containerd)
	if len(r.Starts) > 0 || len(r.BareBoots) > 0 {
		reclaim := "off"
		if p := r.Config.ReclaimGuestFreedMemory; p != nil && *p {
			reclaim = "on"
		}
		root := "initrd"
		if r.Config.RootImage {
			root = "shared root image"
		}
		fmt.Fprintf(tw, "veil VM: %d vCPU, %d MiB, %s, TCG translation cache %d MiB, free page reporting %s; %d runs per handler, interleaved\n\n",
			r.Config.VMVCPUs, r.Config.VMMemoryMiB, root, r.Config.TCGTranslationCacheMiB, reclaim, r.Config.Runs)
		fmt.Fprintln(tw, "pod start (runp -> first output)\tmin\tmedian\tmax\tn")
	}
	for _, h := range r.Config.Handlers {
		st := Summarize(r.StartTotals(h))
		if st.N > 0 {
			fmt.Fprintf(tw, "  %s\t%.2f s\t%.2f s\t%.2f s\t%d\n", h, st.Min, st.Median, st.Max, st.N)
		}
	}
	if b := Summarize(r.BareReady()); b.N > 0 {
		fmt.Fprintf(tw, "  bare qemu -kernel to agent-ready\t%.2f s\t%.2f s\t%.2f s\t%d\n", b.Min, b.Median, b.Max, b.N)
		if v := Summarize(r.StartTotals("veil")); v.N > 0 {
			fmt.Fprintf(tw, "  veil overhead over bare boot (median)\t\t%.2f s\t\t\n", v.Median-b.Median)
		}
	}
	if Summarize(r.StartTotals("veil")).N > 0 {
		fmt.Fprintln(tw, "\nveil phases (median)\tseconds\tshare")
		meds := r.SegmentMedians("veil")
		var total float64
		for _, m := range meds {
			total += m
		}
		for i, m := range meds {
			fmt.Fprintf(tw, "  %s\t%.3f\t%.0f%%\n", Segments[i].Name, m, 100*m/math.Max(total, 1e-9))
		}
	}
	if len(r.Memory) > 0 {
		fmt.Fprintln(tw, "\nhost memory, idle pods\tpods\tPSS total\tPSS per pod\tRSS per pod\tCPU per pod")
		order := r.IdleOrder()
		for _, h := range order {
			for _, m := range r.Memory {
				if m.Handler != h {
					continue
				}
				rss, cpu := "n/a", "n/a"
				if m.TotalRSS > 0 {
					rss = fmt.Sprintf("%.1f MiB", float64(m.TotalRSS)/float64(m.Pods)/(1<<20))
				}
				if m.IdleCPU > 0 {
					cpu = fmt.Sprintf("%.0f millicores", m.IdleMillicoresPerPod())
				}
				fmt.Fprintf(tw, "  %s\t%d\t%.1f MiB\t%.1f MiB\t%s\t%s\n", m.Handler, m.Pods, float64(m.TotalPSS)/(1<<20), m.PerPod()/(1<<20), rss, cpu)
			}
		}
		for _, h := range order {
			// veil's VM is in the heading of a run that started pods.
			if vm, ok := r.Config.VMs[h]; ok && (h != "veil" || (len(r.Starts) == 0 && len(r.BareBoots) == 0)) {
				reclaim := "off"
				if vm.ReclaimGuestFreedMemory {
					reclaim = "on"
				}
				fmt.Fprintf(tw, "  (%s VM: %d vCPU, %d MiB, %s, TEE %s, TCG translation cache %d MiB, free page reporting %s)\n",
					h, vm.VCPUs, vm.MemoryMiB, vm.Boot, vm.TEE, vm.TCGTranslationCacheMiB, reclaim)
			}
		}
		for _, h := range order {
			writeBreakdown(tw, r.Memory, h)
		}
		for _, o := range r.RuntimeClassOverheads() {
			if o.RuntimeClass() != o.Handler {
				fmt.Fprintf(tw, "RuntimeClass %s overhead: %dMi, %s's (no %s here: its own costs are not in it)\n", o.RuntimeClass(), o.MemoryMiB, o.Handler, o.TEE)
				continue
			}
			fmt.Fprintf(tw, "\nRuntimeClass %s overhead from this run: memory %dMi (guest base memory %d MiB + QEMU besides guest RAM and shim, resident, %.1f MiB, +10%%, rounded up to 32 MiB; -write-runtimeclass writes it)\n", o.Handler, o.MemoryMiB, o.BaseMiB, o.OwnMiB)
		}
	}
	if len(r.Concurrency) > 0 {
		fmt.Fprintln(tw, "\npods started at once\tpods\twall\tratio to 1\twall / (n x one start's CPU / cores)")
		x := func(v float64) string {
			if v == 0 {
				return "n/a"
			}
			return fmt.Sprintf("%.2fx", v)
		}
		for _, c := range r.Concurrency {
			_, ratio := r.ConcurrencyWall(c.Handler, c.N)
			fmt.Fprintf(tw, "  %s\t%d\t%.2f s\t%s\t%s\n", c.Handler, c.N, c.Wall, x(ratio), x(r.ParallelOverhead(c.Handler, c.N)))
		}
		fmt.Fprintln(tw, "  (ratio to 1: to one pod at once, or to the median sequential start when the run started no single pod at once)")
	}
	if len(r.Pulls) > 0 {
		pc := r.Config.Pull
		fmt.Fprintf(tw, "\npull of a %d MiB image (%d random layers + %s, %.1f MiB compressed)\tpull median\tcrictl start median\tmemory peak\tgrowth\tn\n",
			pc.MiB, pc.Layers, pc.Base, float64(pc.Bytes)/(1<<20))
		labels := map[[2]string]string{
			{PullHost, PullPlain}:      "host containerd (overlayfs), plain",
			{PullGuest, PullPlain}:     "guest veil-dev, plain",
			{PullGuest, PullEncrypted}: "guest veil-dev, encrypted",
		}
		for _, k := range PullKinds {
			s := r.SummarizePulls(k[0], k[1])
			if s.Time.N == 0 {
				continue
			}
			start := ""
			if s.Start.N > 0 {
				start = fmt.Sprintf("%.2f s", s.Start.Median)
			}
			fmt.Fprintf(tw, "  %s\t%.2f s\t%s\t%.1f MiB\t%.1f MiB\t%d\n", labels[k], s.Time.Median, start, s.PeakMiB, s.GrowthMiB, s.Time.N)
		}
		fmt.Fprintln(tw, "  (host: crictl pull, containerd's VmRSS; guest: the agent's PullImage, guest MemTotal-MemAvailable, which holds the image on tmpfs)")
	}
	return tw.Flush()
}

// Change is one figure in two runs.
type Change struct {
	Figure
	Old float64
	// Delta is New - Old; Percent is Delta relative to Old (NaN when Old
	// is 0).
	Delta, Percent float64
}

// Compare pairs the figures the two runs share, in the new run's order.
func Compare(old, cur *Result) []Change {
	prev := map[string]float64{}
	for _, f := range old.Figures() {
		prev[f.Name] = f.Value
	}
	var out []Change
	for _, f := range cur.Figures() {
		o, ok := prev[f.Name]
		if !ok {
			continue
		}
		pct := math.NaN()
		if o != 0 {
			pct = 100 * (f.Value - o) / o
		}
		out = append(out, Change{Figure: f, Old: o, Delta: f.Value - o, Percent: pct})
	}
	return out
}

// WriteComparison prints each shared figure: old, new, change.
func WriteComparison(w io.Writer, changes []Change) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "figure\told\tnew\tchange")
	for _, c := range changes {
		pct := "n/a"
		if !math.IsNaN(c.Percent) {
			pct = fmt.Sprintf("%+.1f%%", c.Percent)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", c.Name, formatValue(c.Old, c.Unit), formatValue(c.Value, c.Unit), pct)
	}
	return tw.Flush()
}

// writeBreakdown writes, for the run's largest set of idle pods of
// handler with QEMU's parts measured (a veil handler), what one pod's PSS
// is made of: QEMU's parts (smaps) and the shim. The root image and initrd
// parts are listed only for a VM that has them.
func writeBreakdown(w io.Writer, ms []Memory, handler string) {
	var m *Memory
	for i := range ms {
		if ms[i].Handler == handler && len(ms[i].QEMUParts) > 0 && (m == nil || ms[i].Pods > m.Pods) {
			m = &ms[i]
		}
	}
	if m == nil {
		return
	}
	per := func(b uint64) float64 { return float64(b) / float64(m.Pods) / (1 << 20) }
	fmt.Fprintf(w, "\n%s PSS per pod with %d idle pods\tMiB\n", m.Handler, m.Pods)
	for _, p := range QEMUPartsOrder {
		if _, ok := m.QEMUParts[p]; ok || !slices.Contains(bootParts, p) {
			fmt.Fprintf(w, "  %s\t%.1f\n", p, per(m.QEMUParts[p]))
		}
	}
	var shim uint64
	for name, b := range m.ByProcess {
		if strings.HasPrefix(name, "containerd-shim") {
			shim += b
		}
	}
	fmt.Fprintf(w, "  shim\t%.1f\n", per(shim))
	fmt.Fprintf(w, "  total\t%.1f\n", m.PerPod()/(1<<20))
	if m.QEMUParts[PartTCG] > 0 {
		fmt.Fprintf(w, "  total without the TCG cache (a KVM node)\t%.1f\n", m.PerPodWithoutTCG()/(1<<20))
	}
}
