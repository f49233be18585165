package report

import (
	"bytes"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestSummarize(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want Stats
	}{
		{nil, Stats{}},
		{[]float64{3}, Stats{1, 3, 3, 3}},
		{[]float64{5, 1, 3}, Stats{3, 1, 3, 5}},
		{[]float64{4, 1, 3, 2}, Stats{4, 1, 2.5, 4}},
	} {
		if got := Summarize(c.in); got != c.want {
			t.Errorf("Summarize(%v) = %+v, want %+v", c.in, got, c.want)
		}
	}
	in := []float64{2, 1}
	Summarize(in)
	if in[0] != 2 {
		t.Error("Summarize sorted its input")
	}
}

// sample is a small run: two handlers, two runs each, memory and
// concurrency.
func sample() *Result {
	veil := func(run int, scale float64) Start {
		ph := map[string]float64{"shim_start": 0.2, "qemu_spawned": 0.3, "guest_kernel_entry": 1.0, "agent_started": 3.0,
			"agent_ready": 3.5, "sandbox_created": 3.6, "container_created": 4.0, "container_started": 4.4}
		for k := range ph {
			ph[k] *= scale
		}
		return Start{Handler: "veil", Run: run, Total: 5 * scale, Phases: ph,
			Steps: map[string]float64{"runp_done": 3.8 * scale, "create_done": 3.9 * scale, "start_done": 4.5 * scale, "first_output": 5 * scale}}
	}
	runc := func(run int, total float64) Start {
		return Start{Handler: "runc", Run: run, Total: total,
			Steps: map[string]float64{"runp_done": 0.3, "create_done": 0.5, "start_done": 0.6, "first_output": total}}
	}
	return &Result{
		Schema: Schema, Started: time.Unix(1_700_000_000, 0).UTC(), Finished: time.Unix(1_700_000_100, 0).UTC(),
		Machine:   Machine{Hostname: "h", CPUs: 2, Accel: "tcg", QEMU: "7.2.0"},
		Config:    Config{Runs: 2, Handlers: []string{"veil", "runc"}, Concurrency: []int{1, 2}, Idle: []int{1, 3}, TCGTranslationCacheMiB: 32},
		Starts:    []Start{veil(0, 1), runc(0, 0.7), veil(1, 2), runc(1, 0.9)},
		BareBoots: []BareBoot{{Run: 0, Ready: 3, KernelToReady: 2.4}, {Run: 1, Ready: 4, KernelToReady: 2.5}},
		Memory: []Memory{
			{Handler: "veil", Pods: 1, TotalPSS: 100 << 20, ByProcess: map[string]uint64{"qemu-system-x86": 90 << 20, "containerd-shim": 10 << 20}},
			{Handler: "veil", Pods: 3, TotalPSS: 270 << 20},
			{Handler: "runc", Pods: 1, TotalPSS: 6 << 20},
			{Handler: "runc", Pods: 3, TotalPSS: 15 << 20},
		},
		Concurrency: []Concurrency{
			{Handler: "veil", N: 1, Wall: 5, Each: []float64{5}}, {Handler: "veil", N: 2, Wall: 9, Each: []float64{8, 9}},
			{Handler: "runc", N: 1, Wall: 0.8, Each: []float64{0.8}}, {Handler: "runc", N: 2, Wall: 1.0, Each: []float64{0.9, 1.0}},
		},
	}
}

// withPulls is sample with the pull benchmark: two runs of each kind.
func withPulls() *Result {
	r := sample()
	r.Config.Pull = PullConfig{MiB: 200, Layers: 4, Runs: 2, Base: "busybox:1", Bytes: 210 << 20}
	r.Pulls = []Pull{
		{Where: PullGuest, Variant: PullPlain, Run: 0, Seconds: 30, StartSeconds: 33, PeakBytes: 500 << 20, BeforeBytes: 60 << 20, MemorySamples: 50},
		{Where: PullGuest, Variant: PullEncrypted, Run: 0, Seconds: 40, StartSeconds: 44, PeakBytes: 520 << 20, BeforeBytes: 70 << 20, MemorySamples: 60},
		{Where: PullHost, Variant: PullPlain, Run: 0, Seconds: 4, PeakBytes: 80 << 20, BeforeBytes: 40 << 20, MemorySamples: 200},
		{Where: PullGuest, Variant: PullPlain, Run: 1, Seconds: 34, StartSeconds: 37, PeakBytes: 480 << 20, BeforeBytes: 50 << 20, MemorySamples: 50},
		{Where: PullGuest, Variant: PullEncrypted, Run: 1, Seconds: 44, StartSeconds: 47, PeakBytes: 530 << 20, BeforeBytes: 90 << 20, MemorySamples: 60},
		{Where: PullHost, Variant: PullPlain, Run: 1, Seconds: 6, PeakBytes: 70 << 20, BeforeBytes: 40 << 20, MemorySamples: 200},
	}
	return r
}

func TestPullFigures(t *testing.T) {
	r := withPulls()
	s := r.SummarizePulls(PullGuest, PullEncrypted)
	// The highest peak (530) and the largest growth (520-70 = 450, not
	// 530-90 = 440).
	if s.Time != (Stats{2, 40, 42, 44}) || s.Start.Median != 45.5 || s.PeakMiB != 530 || s.GrowthMiB != 450 {
		t.Errorf("guest encrypted summary: %+v", s)
	}
	if s := r.SummarizePulls(PullHost, PullPlain); s.Start.N != 0 || s.Time.Median != 5 {
		t.Errorf("host summary (no crictl start): %+v", s)
	}
	figs := map[string]float64{}
	for _, f := range r.Figures() {
		figs[f.Name] = f.Value
	}
	for name, v := range map[string]float64{
		"pull host plain median":               5,
		"pull host plain memory growth":        40,
		"pull guest plain median":              32,
		"pull guest plain crictl start median": 35,
		"pull guest plain memory peak":         500,
		"pull guest encrypted median":          42,
		"pull guest encrypted memory growth":   450,
	} {
		got, ok := figs[name]
		if !ok || math.Abs(got-v) > 1e-9 {
			t.Errorf("figure %q = %v (present %v), want %v", name, got, ok, v)
		}
	}
	if _, ok := figs["pull host plain crictl start median"]; ok {
		t.Error("a crictl start figure for host pulls, which have none")
	}
	if _, ok := sampleFigures()["pull guest plain median"]; ok {
		t.Error("pull figures in a run without pulls")
	}

	// Compared with a run whose guest pulls were slower.
	old := withPulls()
	for i := range old.Pulls {
		old.Pulls[i].Seconds *= 2
	}
	byName := map[string]Change{}
	for _, c := range Compare(old, r) {
		byName[c.Name] = c
	}
	if c := byName["pull guest encrypted median"]; c.Old != 84 || c.Value != 42 || c.Percent != -50 {
		t.Errorf("pull comparison: %+v", c)
	}

	var b bytes.Buffer
	if err := WriteTable(&b, r); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"pull of a 200 MiB image (4 random layers + busybox:1, 210.0 MiB compressed)",
		"host containerd (overlayfs), plain", "guest veil-dev, encrypted", "42.00 s", "45.50 s", "530.0 MiB", "450.0 MiB"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
	b.Reset()
	if err := WriteTable(&b, sample()); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "pull of") {
		t.Errorf("a pull section in a run without pulls:\n%s", b.String())
	}
	// A pull-only run has no pod start section.
	p := withPulls()
	p.Starts, p.BareBoots, p.Memory, p.Concurrency = nil, nil, nil, nil
	b.Reset()
	if err := WriteTable(&b, p); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "pod start") || !strings.Contains(b.String(), "guest veil-dev, plain") {
		t.Errorf("pull-only table:\n%s", b.String())
	}
}

func sampleFigures() map[string]float64 {
	figs := map[string]float64{}
	for _, f := range sample().Figures() {
		figs[f.Name] = f.Value
	}
	return figs
}

func TestJSONRoundTrip(t *testing.T) {
	r := withPulls()
	path := filepath.Join(t.TempDir(), "bench.json")
	if err := Write(path, r); err != nil {
		t.Fatal(err)
	}
	got, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, r) {
		t.Errorf("round trip changed the result:\n got %+v\nwant %+v", got, r)
	}
	// Another schema is refused by name.
	if err := os.WriteFile(path, []byte(`{"schema": 99}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(path); err == nil || !strings.Contains(err.Error(), "schema 99") {
		t.Errorf("Read of schema 99: %v", err)
	}
}

func TestSegmentsAndFigures(t *testing.T) {
	r := sample()
	meds := r.SegmentMedians("veil")
	// Segment medians over runs scaled by 1 and 2: 1.5x the first run's.
	want := []float64{0.3, 0.15, 1.05, 3, 0.75, 0.15, 0.3, 0.15, 0.15, 0.6, 0.9}
	for i := range want {
		if math.Abs(meds[i]-want[i]) > 1e-9 {
			t.Errorf("segment %q median = %v, want %v", Segments[i].Name, meds[i], want[i])
		}
	}
	// The segments cover runp to first output without gaps.
	var sum float64
	for _, m := range meds {
		sum += m
	}
	if math.Abs(sum-7.5) > 1e-9 {
		t.Errorf("segments sum to %v, want the median total 7.5", sum)
	}
	figs := map[string]float64{}
	for _, f := range r.Figures() {
		figs[f.Name] = f.Value
	}
	for name, v := range map[string]float64{
		"start veil median":                  7.5,
		"start runc max":                     0.9,
		"bare boot to agent-ready median":    3.5,
		"veil start - bare boot (median)":    4,
		"PSS per pod veil 3 idle":            90,
		"PSS per pod runc 1 idle":            6,
		"concurrency veil 2 pods ratio to 1": 1.8,
		"concurrency runc 2 pods wall":       1.0,
		"veil phase guest kernel boot":       3,
		"concurrency runc 2 pods ratio to 1": 1.25,
		"start runc min":                     0.7,
		"start veil min":                     5,
	} {
		if math.Abs(figs[name]-v) > 1e-9 {
			t.Errorf("figure %q = %v, want %v", name, figs[name], v)
		}
	}
}

func TestCompare(t *testing.T) {
	old, cur := sample(), sample()
	cur.Starts[0].Total = 4 // veil run 0 faster: median 7.5 -> 7
	cur.Memory = cur.Memory[:1]
	changes := Compare(old, cur)
	byName := map[string]Change{}
	for _, c := range changes {
		byName[c.Name] = c
	}
	c, ok := byName["start veil median"]
	if !ok || c.Old != 7.5 || c.Value != 7 || math.Abs(c.Percent-(-100.0/15)) > 1e-9 {
		t.Errorf("start veil median change: %+v", c)
	}
	if _, ok := byName["PSS per pod veil 3 idle"]; ok {
		t.Error("a figure the new run lacks is compared")
	}
	if c := byName["start runc max"]; c.Delta != 0 || c.Percent != 0 {
		t.Errorf("unchanged figure: %+v", c)
	}
	var b bytes.Buffer
	if err := WriteComparison(&b, changes); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "start veil median") || !strings.Contains(b.String(), "-6.7%") {
		t.Errorf("comparison:\n%s", b.String())
	}
}

func TestTable(t *testing.T) {
	var b bytes.Buffer
	if err := WriteTable(&b, sample()); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"TCG translation cache 32 MiB", "veil", "5.00 s", "7.50 s", "10.00 s",
		"bare qemu -kernel to agent-ready", "guest kernel boot", "90.0 MiB", "1.80x"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func TestChartIsPNG(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bench.png")
	if err := WriteChart(path, sample()); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("chart is not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() < 100 || b.Dy() < 100 {
		t.Errorf("chart is %v", b)
	}
	// A run with only runc (no veil phases, no memory) still draws.
	r := sample()
	r.Starts, r.Memory = r.Starts[1:2], nil
	if err := WriteChart(filepath.Join(t.TempDir(), "runc.png"), r); err != nil {
		t.Errorf("runc-only chart: %v", err)
	}
	// A pull-only run draws its one panel; an empty run is refused.
	p := withPulls()
	p.Starts, p.BareBoots, p.Memory, p.Concurrency = nil, nil, nil, nil
	pullOnly := filepath.Join(t.TempDir(), "pull.png")
	if err := WriteChart(pullOnly, p); err != nil {
		t.Errorf("pull-only chart: %v", err)
	}
	if full, one := chartHeight(t, path), chartHeight(t, pullOnly); one*3 > full+1 || one*3 < full-1 {
		t.Errorf("pull-only chart is %d high, the 3-panel one %d: want a third", one, full)
	}
	p.Pulls = nil
	if err := WriteChart(filepath.Join(t.TempDir(), "empty.png"), p); err == nil || !strings.Contains(err.Error(), "no samples") {
		t.Errorf("chart of an empty run: %v", err)
	}
}

func chartHeight(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cfg, err := png.DecodeConfig(f)
	if err != nil {
		t.Fatalf("%s is not a PNG: %v", path, err)
	}
	return cfg.Height
}

// The segments chain from runp to first output: no gap, no overlap.
func TestSegmentsChain(t *testing.T) {
	if Segments[0].From != "begin" || Segments[len(Segments)-1].To != "first_output" {
		t.Errorf("segments run from %s to %s", Segments[0].From, Segments[len(Segments)-1].To)
	}
	for i := 1; i < len(Segments); i++ {
		if Segments[i].From != Segments[i-1].To {
			t.Errorf("segment %q starts at %s, the one before ends at %s", Segments[i].Name, Segments[i].From, Segments[i-1].To)
		}
	}
}

// A run that started no single pod at once compares n pods with the
// median sequential start; with each start's host CPU time it also says
// how far n starts at once are from sharing the CPUs perfectly.
func TestConcurrencyWithoutOnePodAtOnce(t *testing.T) {
	r := sample()
	r.Concurrency = []Concurrency{{Handler: "veil", N: 8, Wall: 30, Each: []float64{30}}}
	for i := range r.Starts {
		r.Starts[i].HostCPU = 2.5 // veil: 2.5 CPU seconds per start
	}
	_, ratio := r.ConcurrencyWall("veil", 8)
	if math.Abs(ratio-30/7.5) > 1e-9 {
		t.Errorf("ratio to 1 = %v, want wall 30 / median sequential start 7.5 = 4", ratio)
	}
	// 8 starts of 2.5 CPU seconds on 2 CPUs: 10 s at best; 30 s is 3x.
	if o := r.ParallelOverhead("veil", 8); math.Abs(o-3) > 1e-9 {
		t.Errorf("ParallelOverhead = %v, want 30 / (8 x 2.5 / 2) = 3", o)
	}
	if o := r.ParallelOverhead("runc", 8); o != 0 {
		t.Errorf("ParallelOverhead of an unmeasured point = %v, want 0", o)
	}
	var b bytes.Buffer
	if err := WriteTable(&b, r); err != nil {
		t.Fatal(err)
	}
	if out := b.String(); !strings.Contains(out, "4.00x") || !strings.Contains(out, "3.00x") || strings.Contains(out, "0.00x") {
		t.Errorf("table: want the ratio 4.00x and 3.00x and no 0.00x:\n%s", out)
	}
}

// The breakdown lists QEMU's parts and the shim per pod, and the total
// without TCG's cache, for the largest set of idle veil pods.
func TestMemoryBreakdown(t *testing.T) {
	r := sample()
	r.Memory[1].ByProcess = map[string]uint64{"qemu-system-x86_64": 240 << 20, "containerd-shim-veil-v2": 30 << 20}
	r.Memory[1].QEMUParts = map[string]uint64{PartGuestRAM: 150 << 20, PartTCG: 60 << 20, PartQEMUHeap: 24 << 20, PartFiles: 3 << 20, PartRootImage: 3 << 20}
	figs := map[string]float64{}
	for _, f := range r.Figures() {
		figs[f.Name] = f.Value
	}
	if v := figs["PSS per pod veil 3 idle without TCG cache"]; math.Abs(v-70) > 1e-9 {
		t.Errorf("PSS per pod without TCG cache = %v MiB, want (270-60)/3 = 70", v)
	}
	var b bytes.Buffer
	if err := WriteTable(&b, r); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if !strings.Contains(out, "veil PSS per pod with 3 idle pods") {
		t.Errorf("table lacks the breakdown:\n%s", out)
	}
	for part, want := range map[string]string{PartGuestRAM: "50.0", PartTCG: "20.0", "shim": "10.0", "total without the TCG cache (a KVM node)": "70.0"} {
		found := false
		for line := range strings.Lines(out) {
			if f := strings.Fields(line); strings.HasPrefix(strings.TrimSpace(line), part+" ") && f[len(f)-1] == want {
				found = true
			}
		}
		if !found {
			t.Errorf("table has no line %q ... %s:\n%s", part, want, out)
		}
	}
}

// Idle CPU is reported per pod in millicores, and only when measured.
func TestIdleCPUFigure(t *testing.T) {
	r := sample()
	r.Memory[1].IdleCPU = 0.09 // 3 pods
	figs := map[string]float64{}
	for _, f := range r.Figures() {
		figs[f.Name] = f.Value
	}
	if v, ok := figs["CPU per pod veil 3 idle"]; !ok || math.Abs(v-30) > 1e-9 {
		t.Errorf("CPU per pod veil 3 idle = %v (present %v), want 0.09 cores / 3 pods = 30 millicores", v, ok)
	}
	if _, ok := figs["CPU per pod "+r.Memory[0].Handler+" "+strconv.Itoa(r.Memory[0].Pods)+" idle"]; ok {
		t.Errorf("a figure for a run that did not measure idle CPU: %v", figs)
	}
}

// breakdownOf returns the lines of handler's breakdown section in a table.
func breakdownOf(table, handler string) []string {
	var out []string
	in := false
	for line := range strings.Lines(table) {
		switch {
		case strings.HasPrefix(line, handler+" PSS per pod with "):
			in = true
		case in && !strings.HasPrefix(line, "  "):
			return out
		case in:
			out = append(out, strings.TrimSpace(line))
		}
	}
	return out
}

// The table lists veil-dev's idle rows in -idle-handlers' order (it is
// measured last), its VM, its own breakdown (the initrd, no root image),
// and the RuntimeClasses its figure goes to.
func TestTableWithVeilDev(t *testing.T) {
	var b bytes.Buffer
	if err := WriteTable(&b, withVeilDev()); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	var rows []string
	for line := range strings.Lines(out) {
		if f := strings.Fields(line); len(f) > 3 && f[3] == "MiB" {
			rows = append(rows, f[0]+" "+f[1])
		}
	}
	if got := strings.Join(rows, ", "); got != "veil 1, veil 3, veil-dev 1, veil-dev 3, runc 1, runc 3" {
		t.Errorf("idle rows %q, want veil, veil-dev, runc (IdleHandlers' order):\n%s", got, out)
	}
	// veil-dev with 3 pods: PSS 180 MiB, RSS 283.3 MiB, 40 millicores per pod.
	if !strings.Contains(out, "180.0 MiB") || !strings.Contains(out, "283.3 MiB") || !strings.Contains(out, "40 millicores") {
		t.Errorf("table lacks veil-dev's 3-pod PSS, RSS or CPU per pod:\n%s", out)
	}
	if !strings.Contains(out, "(veil-dev VM: 1 vCPU, 2304 MiB, initrd, TEE sample") {
		t.Errorf("table lacks veil-dev's VM:\n%s", out)
	}
	dev := strings.Join(breakdownOf(out, "veil-dev"), "\n")
	for _, want := range []string{PartInitrd + "  ", PartGuestRAM, "shim", "total"} {
		if !strings.Contains(dev, want) {
			t.Errorf("veil-dev breakdown lacks %q:\n%s", want, dev)
		}
	}
	// 5 MiB of initrd over 3 pods; no root image line.
	if !strings.Contains(dev, "1.7") || strings.Contains(dev, PartRootImage) {
		t.Errorf("veil-dev breakdown: want the initrd's 1.7 MiB per pod and no root image:\n%s", dev)
	}
	if veil := strings.Join(breakdownOf(out, "veil"), "\n"); !strings.Contains(veil, PartRootImage) || strings.Contains(veil, PartInitrd) {
		t.Errorf("veil breakdown: want the root image, not the initrd:\n%s", veil)
	}
	for _, want := range []string{"RuntimeClass veil-dev overhead from this run: memory 800Mi", "RuntimeClass veil-snp overhead: 800Mi, veil-dev's (no AMD SEV-SNP here", "RuntimeClass veil-tdx overhead: 800Mi, veil-dev's (no Intel TDX here"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	figs := map[string]float64{}
	for _, f := range withVeilDev().Figures() {
		figs[f.Name] = f.Value
	}
	if v := figs["PSS per pod veil-dev 3 idle"]; v != 180 {
		t.Errorf("figure PSS per pod veil-dev 3 idle = %v, want 180", v)
	}
}

// A bench.json from before veil-dev was measured (no idle_handlers, no
// vms: a real run of commit 52010fc, the one runtimeclasses.yaml's veil
// figure came from) still reads, prints and gives veil's overhead.
func TestReadRunBeforeVeilDev(t *testing.T) {
	r, err := Read("testdata/bench-before-veil-dev.json")
	if err != nil {
		t.Fatal(err)
	}
	if r.Config.IdleHandlers != nil || r.Config.VMs != nil {
		t.Fatalf("an old run decoded with idle handlers %v, VMs %v", r.Config.IdleHandlers, r.Config.VMs)
	}
	if got := strings.Join(r.IdleOrder(), ","); got != "veil,runc" {
		t.Errorf("IdleOrder = %s, want the run's handlers veil,runc", got)
	}
	vm, ok := r.Config.VM("veil")
	if !ok || vm.BaseMemoryMiB != 256 || vm.MemoryMiB != 2048 || vm.Boot != BootRootImage {
		t.Errorf("veil's VM from the old fields = %+v (ok %v)", vm, ok)
	}
	if _, ok := r.Config.VM("veil-dev"); ok {
		t.Error("a veil-dev VM in a run that did not record one")
	}
	ovs := r.RuntimeClassOverheads()
	if len(ovs) != 1 || ovs[0].RuntimeClass() != "veil" || ovs[0].MemoryMiB != 480 {
		t.Errorf("overheads = %+v, want veil's 480 MiB alone (the figure that run wrote)", ovs)
	}
	var b bytes.Buffer
	if err := WriteTable(&b, r); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"veil PSS per pod with 4 idle pods", PartRootImage, "RuntimeClass veil overhead from this run: memory 480Mi"} {
		if !strings.Contains(out, want) {
			t.Errorf("old run's table lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "veil-dev") || strings.Contains(out, PartInitrd) {
		t.Errorf("old run's table mentions veil-dev or an initrd:\n%s", out)
	}
	if err := WriteChart(filepath.Join(t.TempDir(), "bench.png"), r); err != nil {
		t.Errorf("old run's chart: %v", err)
	}
}
