// Package report owns the benchmark's results: the JSON document a run
// writes (every sample and the machine it ran on), the figures derived from
// it (min / median / max, per-pod memory, concurrency ratios), the text
// table, the comparison with an older run, and the PNG chart. It does no
// measuring; tools/bench does.
package report

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"time"
)

// Schema versions the JSON document.
const Schema = 1

// Result is one benchmark run.
type Result struct {
	Schema   int       `json:"schema"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Machine  Machine   `json:"machine"`
	Config   Config    `json:"config"`
	// Starts are the pod start samples of every handler, in the order run
	// (interleaved between handlers).
	Starts []Start `json:"starts"`
	// BareBoots are `qemu -kernel` boots of the same guest to agent-ready.
	BareBoots []BareBoot `json:"bare_boots"`
	// Memory are host memory samples with idle pods.
	Memory []Memory `json:"memory"`
	// Concurrency are samples of N pods started at once.
	Concurrency []Concurrency `json:"concurrency"`
	// Pulls are the pull benchmark's samples: the same image pulled by
	// containerd on the host and by the guest of a veil-dev pod.
	Pulls []Pull `json:"pulls,omitempty"`
}

// Machine describes where the run happened.
type Machine struct {
	Hostname   string `json:"hostname"`
	Kernel     string `json:"kernel"`
	CPUModel   string `json:"cpu_model"`
	CPUs       int    `json:"cpus"`
	MemTotalMB uint64 `json:"mem_total_mib"`
	Accel      string `json:"accel"` // kvm or tcg, as veil chose it here
	QEMU       string `json:"qemu"`
	Containerd string `json:"containerd"`
	GoVersion  string `json:"go_version"`
	Commit     string `json:"commit"`
}

// Config is what the run was asked to do.
type Config struct {
	Runs                   int      `json:"runs"`
	Handlers               []string `json:"handlers"`
	Concurrency            []int    `json:"concurrency"`
	Idle                   []int    `json:"idle"`
	TCGTranslationCacheMiB uint32   `json:"tcg_translation_cache_mib"`
	// ReclaimGuestFreedMemory is free page reporting; nil in runs from
	// before it existed (off).
	ReclaimGuestFreedMemory *bool `json:"reclaim_guest_freed_memory,omitempty"`
	// RootImage: the veil VMs booted the shared root image (rootfs_image),
	// not the initrd; false in runs from before it existed.
	RootImage   bool   `json:"root_image,omitempty"`
	VMVCPUs     uint32 `json:"vm_vcpus"`
	VMMemoryMiB uint32 `json:"vm_memory_mib"`
	// VMBaseMemoryMiB is hypervisor.memory_mib: a pod VM's memory beyond
	// its pod's limits (RuntimeClassOverhead). 0 in older runs.
	VMBaseMemoryMiB uint32 `json:"vm_base_memory_mib,omitempty"`
	Image           string `json:"image"`
	// Pull is what the pull benchmark pulled (zero when it did not run).
	Pull PullConfig `json:"pull,omitzero"`
	// IdleHandlers are the handlers whose idle pods' memory the run
	// measured, in table order; nil in runs from before it existed, which
	// measured Handlers' (IdleOrder).
	IdleHandlers []string `json:"idle_handlers,omitempty"`
	// VMs is the pod VM of each veil handler the run measured, from its
	// config; nil in runs from before it existed, whose veil VM is the
	// VM* fields above (Config.VM).
	VMs map[string]VM `json:"vms,omitempty"`
}

// What a veil handler's VM boots its guest from (VM.Boot).
const (
	BootRootImage = "shared root image"
	BootInitrd    = "initrd"
)

// VM is a veil handler's pod VM in the run: an idle pod's (no limits).
type VM struct {
	VCPUs     uint32 `json:"vcpus"`
	MemoryMiB uint32 `json:"memory_mib"`
	// BaseMemoryMiB is hypervisor.memory_mib (RuntimeClassOverhead).
	BaseMemoryMiB uint32 `json:"base_memory_mib"`
	// Boot is BootRootImage or BootInitrd.
	Boot string `json:"boot"`
	// TEE is confidential.tee ("none" for the plain handler).
	TEE                     string `json:"tee"`
	TCGTranslationCacheMiB  uint32 `json:"tcg_translation_cache_mib"`
	ReclaimGuestFreedMemory bool   `json:"reclaim_guest_freed_memory"`
}

// VM returns handler's pod VM: its VMs entry, or for veil in runs
// without one the VM* fields (zero in runs from before each existed); ok
// is false for another handler the run did not record.
func (c Config) VM(handler string) (vm VM, ok bool) {
	if vm, ok := c.VMs[handler]; ok {
		return vm, true
	}
	if handler != "veil" {
		return VM{}, false
	}
	boot := BootInitrd
	if c.RootImage {
		boot = BootRootImage
	}
	reclaim := c.ReclaimGuestFreedMemory != nil && *c.ReclaimGuestFreedMemory
	return VM{VCPUs: c.VMVCPUs, MemoryMiB: c.VMMemoryMiB, BaseMemoryMiB: c.VMBaseMemoryMiB, Boot: boot, TEE: "none",
		TCGTranslationCacheMiB: c.TCGTranslationCacheMiB, ReclaimGuestFreedMemory: reclaim}, true
}

// IdleOrder is the handlers whose idle pods the run measured, in table
// order: IdleHandlers, or in older runs Handlers; then any other handler
// with memory samples, in the order measured.
func (r *Result) IdleOrder() []string {
	order := r.Config.IdleHandlers
	if order == nil {
		order = r.Config.Handlers
	}
	var out []string
	for _, h := range order {
		if !slices.Contains(out, h) && slices.ContainsFunc(r.Memory, func(m Memory) bool { return m.Handler == h }) {
			out = append(out, h)
		}
	}
	for _, m := range r.Memory {
		if !slices.Contains(out, m.Handler) {
			out = append(out, m.Handler)
		}
	}
	return out
}

// PullConfig describes the pull benchmark's image: Base plus Layers
// layers of random (incompressible) data, MiB in all, gzip-compressed;
// the encrypted variant has every layer encrypted with ocicrypt (JWE, a
// generated key the guest gets from veil-kbs).
type PullConfig struct {
	MiB    int    `json:"mib"`
	Layers int    `json:"layers"`
	Runs   int    `json:"runs"`
	Base   string `json:"base"`
	// Bytes is the compressed size of the random layers, bytes.
	Bytes int64 `json:"bytes"`
}

// Where a pull happens (Pull.Where) and of which image (Pull.Variant).
const (
	PullHost      = "host"  // containerd with the overlayfs snapshotter, crictl pull
	PullGuest     = "guest" // the veil-dev guest's agent (image/), at container start
	PullPlain     = "plain"
	PullEncrypted = "encrypted"
)

// Pull is one pull of the benchmark image.
type Pull struct {
	Where   string `json:"where"`
	Variant string `json:"variant"`
	Run     int    `json:"run"`
	// Seconds: on the host the `crictl pull` (fetch and unpack); in the
	// guest the agent's PullImage (the shim's pull_started to
	// image_pulled: fetch, verify, decrypt, unpack).
	Seconds float64 `json:"seconds"`
	// StartSeconds, guest only: `crictl start` of the container (the pull
	// and the container's create and start) until it returned.
	StartSeconds float64 `json:"start_s,omitempty"`
	// PeakBytes is the memory high-water mark during the pull and
	// BeforeBytes the same figure just before it: on the host containerd's
	// resident memory (VmRSS); in the guest MemTotal - MemAvailable of the
	// guest kernel (which counts the image unpacked and the blobs cached on
	// the guest's tmpfs).
	PeakBytes   uint64 `json:"peak_bytes"`
	BeforeBytes uint64 `json:"before_bytes"`
	// MemorySamples is how many memory samples fell in the pull.
	MemorySamples int `json:"memory_samples"`
}

// PullKinds lists the (where, variant) pairs the benchmark measures, in
// table order.
var PullKinds = [][2]string{{PullHost, PullPlain}, {PullGuest, PullPlain}, {PullGuest, PullEncrypted}}

// PullsOf returns the pulls of one kind.
func (r *Result) PullsOf(where, variant string) []Pull {
	var out []Pull
	for _, p := range r.Pulls {
		if p.Where == where && p.Variant == variant {
			out = append(out, p)
		}
	}
	return out
}

// PullSummary is one kind's figures: the time's and the start's Stats, and
// the highest memory peak and its growth over the memory before.
type PullSummary struct {
	Time, Start        Stats
	PeakMiB, GrowthMiB float64
}

// SummarizePulls summarizes the pulls of one kind (Time.N 0: none).
func (r *Result) SummarizePulls(where, variant string) PullSummary {
	var s PullSummary
	var secs, starts []float64
	for _, p := range r.PullsOf(where, variant) {
		secs = append(secs, p.Seconds)
		if p.StartSeconds > 0 {
			starts = append(starts, p.StartSeconds)
		}
		if peak := float64(p.PeakBytes) / (1 << 20); peak > s.PeakMiB {
			s.PeakMiB = peak
		}
		if g := (float64(p.PeakBytes) - float64(p.BeforeBytes)) / (1 << 20); g > s.GrowthMiB {
			s.GrowthMiB = g
		}
	}
	s.Time, s.Start = Summarize(secs), Summarize(starts)
	return s
}

// Start is one pod start: runp -> create -> start -> first output line.
// Steps and Phases are seconds since the runp command began.
type Start struct {
	Handler string `json:"handler"`
	Run     int    `json:"run"`
	// Total is runp began to the container's first output line, seconds.
	Total float64 `json:"total_s"`
	// Steps: runp_done, create_done, start_done, first_output.
	Steps map[string]float64 `json:"steps"`
	// Phases, veil only, from the shim's metrics socket: the pod phases
	// (shim_start, qemu_spawned, guest_kernel_entry, agent_started,
	// agent_ready, sandbox_created) and container_created,
	// container_started.
	Phases map[string]float64 `json:"phases,omitempty"`
	// HostCPU is the CPU time the whole host spent (busy, every CPU)
	// while this pod started, seconds: on an otherwise idle machine, what
	// one pod start costs (ParallelOverhead).
	HostCPU float64 `json:"host_cpu_s,omitempty"`
}

// BareBoot is QEMU started to the agent's first answer, without a shim.
type BareBoot struct {
	Run int `json:"run"`
	// Ready is QEMU start to agent ready (host clock), seconds.
	Ready float64 `json:"ready_s"`
	// KernelToReady is the guest clock's kernel start to agent ready.
	KernelToReady float64 `json:"kernel_to_ready_s"`
}

// Memory is the host memory of Pods idle pods of one handler.
type Memory struct {
	Handler string `json:"handler"`
	Pods    int    `json:"pods"`
	// TotalPSS is the PSS of every pod's shim and its descendants (QEMU
	// for veil, the containers' processes for runc), bytes.
	TotalPSS uint64 `json:"total_pss_bytes"`
	// TotalRSS is the same processes' resident memory, shared pages
	// counted in full, bytes: what a node's first such pod is charged
	// (RuntimeClassOverhead). 0 in runs from before it was recorded.
	TotalRSS uint64 `json:"total_rss_bytes,omitempty"`
	// ByProcess sums PSS by process name (comm), bytes.
	ByProcess map[string]uint64 `json:"by_process_bytes"`
	// QEMUParts splits the QEMU processes' PSS (summed over the pods) by
	// what their mappings hold: the Part* names, bytes. veil handlers only.
	QEMUParts map[string]uint64 `json:"qemu_parts_bytes,omitempty"`
	// IdleCPU is the CPU the same processes used together while the pods
	// idled, in cores (CPU seconds per second over bench's
	// -idle-cpu-window). 0 when not measured.
	IdleCPU float64 `json:"idle_cpu_cores,omitempty"`
}

// IdleMillicoresPerPod is IdleCPU per pod in millicores, the unit of a
// RuntimeClass's overhead.podFixed.cpu.
func (m Memory) IdleMillicoresPerPod() float64 { return m.IdleCPU * 1000 / float64(m.Pods) }

// The parts of a QEMU process's memory (Memory.QEMUParts).
const (
	PartGuestRAM  = "guest RAM touched"
	PartRootImage = "shared root image"
	// PartInitrd is QEMU's mapping of the initrd file (a VM that boots
	// the initrd: veil-dev), which it hands the guest through fw_cfg:
	// page cache, shared between the VMs of one file.
	PartInitrd   = "initrd file"
	PartTCG      = "TCG translation cache"
	PartQEMUHeap = "QEMU heap and other anonymous"
	PartFiles    = "QEMU binary, libraries, firmware, kernel file"
)

// QEMUPartsOrder is the order the report lists them in.
var QEMUPartsOrder = []string{PartGuestRAM, PartRootImage, PartInitrd, PartTCG, PartQEMUHeap, PartFiles}

// bootParts are the parts only some VMs have: the breakdown lists them
// only when measured.
var bootParts = []string{PartRootImage, PartInitrd}

// PerPodWithoutTCG is the PSS per idle pod less TCG's translation cache:
// what a KVM node pays. It is PerPod when the run measured no parts.
func (m Memory) PerPodWithoutTCG() float64 {
	return (float64(m.TotalPSS) - float64(m.QEMUParts[PartTCG])) / float64(m.Pods)
}

// PerPod is the PSS per idle pod, bytes.
func (m Memory) PerPod() float64 { return float64(m.TotalPSS) / float64(m.Pods) }

// Concurrency is N pods started at once: the wall time until the last
// one's first output line.
type Concurrency struct {
	Handler string  `json:"handler"`
	N       int     `json:"n"`
	Wall    float64 `json:"wall_s"`
	// Each is every pod's own start time, seconds.
	Each []float64 `json:"each_s"`
}

// Write writes r as indented JSON to path.
func Write(path string, r *Result) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding results: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("writing results: %w", err)
	}
	return nil
}

// Read reads a result written by Write.
func Read(path string) (*Result, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading results: %w", err)
	}
	var r Result
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("decoding results %s: %w", path, err)
	}
	if r.Schema != Schema {
		return nil, fmt.Errorf("results %s: schema %d, this tool reads %d", path, r.Schema, Schema)
	}
	return &r, nil
}

// Stats are min, median and max of samples.
type Stats struct {
	N                int
	Min, Median, Max float64
}

// Summarize computes Stats; the median of an even count is the mean of the
// middle two. No samples give N 0.
func Summarize(xs []float64) Stats {
	if len(xs) == 0 {
		return Stats{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	med := s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	return Stats{N: n, Min: s[0], Median: med, Max: s[n-1]}
}

// StartTotals returns the total start times of handler.
func (r *Result) StartTotals(handler string) []float64 {
	var xs []float64
	for _, s := range r.Starts {
		if s.Handler == handler {
			xs = append(xs, s.Total)
		}
	}
	return xs
}

// Segment is one stretch of a veil pod start, between two recorded points.
type Segment struct {
	Name     string
	From, To string
}

// Segments split a veil pod start, from runp to first output, into what
// each part of the stack spends, in the order the points happen. Points are Start.Phases keys, Start.Steps
// keys, or "begin" (runp began, 0).
var Segments = []Segment{
	{"containerd to shim", "begin", "shim_start"},
	{"shim setup", "shim_start", "qemu_spawned"},
	{"QEMU to guest kernel", "qemu_spawned", "guest_kernel_entry"},
	{"guest kernel boot", "guest_kernel_entry", "agent_started"},
	{"agent init", "agent_started", "agent_ready"},
	{"sandbox in guest", "agent_ready", "sandbox_created"},
	{"runp rest (CRI)", "sandbox_created", "runp_done"},
	// CRI CreateContainer prepares the snapshot only; the shim creates the
	// container when CRI StartContainer creates the task.
	{"CRI create (snapshot)", "runp_done", "create_done"},
	{"container create (shim, guest)", "create_done", "container_created"},
	{"container start (guest)", "container_created", "container_started"},
	{"first output", "container_started", "first_output"},
}

// point returns the time of a point in s.
func (s Start) point(name string) (float64, bool) {
	if name == "begin" {
		return 0, true
	}
	if v, ok := s.Phases[name]; ok {
		return v, true
	}
	v, ok := s.Steps[name]
	return v, ok
}

// SegmentMedians returns each segment's median duration over the starts of
// handler that have both its points, in Segments order (0 when none has).
func (r *Result) SegmentMedians(handler string) []float64 {
	out := make([]float64, len(Segments))
	for i, seg := range Segments {
		var xs []float64
		for _, s := range r.Starts {
			if s.Handler != handler {
				continue
			}
			a, ok1 := s.point(seg.From)
			b, ok2 := s.point(seg.To)
			if ok1 && ok2 {
				xs = append(xs, b-a)
			}
		}
		out[i] = Summarize(xs).Median
	}
	return out
}

// BareReady returns the bare boots' QEMU-to-agent-ready times.
func (r *Result) BareReady() []float64 {
	var xs []float64
	for _, b := range r.BareBoots {
		xs = append(xs, b.Ready)
	}
	return xs
}

// ConcurrencyWall returns the wall time of n pods of handler at once and
// its ratio to one pod: the run's one-pod-at-once sample, or when it has
// none the median of the handler's sequential starts (0 when neither was
// measured, or n was not).
func (r *Result) ConcurrencyWall(handler string, n int) (wall, ratio float64) {
	var one float64
	for _, c := range r.Concurrency {
		if c.Handler != handler {
			continue
		}
		if c.N == 1 {
			one = c.Wall
		}
		if c.N == n {
			wall = c.Wall
		}
	}
	if one == 0 {
		one = Summarize(r.StartTotals(handler)).Median
	}
	if one > 0 {
		ratio = wall / one
	}
	return wall, ratio
}

// ParallelOverhead is the wall time of n pods of handler started at once
// over what it would be if their starts shared the machine's CPUs
// perfectly: n x the host CPU time one start took (the median over the
// sequential starts) / the number of CPUs. 1 means CPU-bound and perfectly
// parallel; above 1, the starts wait on something other than CPU (or on
// each other). 0 when not measured.
func (r *Result) ParallelOverhead(handler string, n int) float64 {
	wall, _ := r.ConcurrencyWall(handler, n)
	var cpu []float64
	for _, s := range r.Starts {
		if s.Handler == handler && s.HostCPU > 0 {
			cpu = append(cpu, s.HostCPU)
		}
	}
	one := Summarize(cpu).Median
	if wall == 0 || one == 0 || r.Machine.CPUs == 0 {
		return 0
	}
	return wall / (float64(n) * one / float64(r.Machine.CPUs))
}
