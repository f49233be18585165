// Package metrics owns what one veil shim measures about its pod and how it
// serves it: Prometheus text on a unix socket (SocketName) in the pod's state
// directory, /run/veil/<namespace>/<sandbox-id>/metrics.sock. `veil metrics`
// finds these sockets and aggregates them with sandbox labels.
//
// What a shim exposes:
//
//   - veil_pod_phase_timestamp_seconds{phase}: when each step of the pod's
//     start happened (unix seconds, host clock), recorded as it happens:
//     shim_start (the shim process's start), qemu_spawned, guest_kernel_entry
//     and agent_started (derived from agent_ready and the guest clock's
//     kernel_to_ready / kernel_to_agent the agent reports in GuestDetails),
//     agent_ready (the agent's first answer), sandbox_created.
//   - veil_container_phase_timestamp_seconds{container,phase}: created and
//     started, per container, until the container is deleted; with guest
//     pull also pull_started and image_pulled (the agent's PullImage).
//   - veil_vm_boot_seconds: QEMU spawned to agent ready (host clock);
//     veil_guest_boot_seconds{stage}: kernel_to_agent and kernel_to_ready
//     (guest clock).
//   - veil_agent_rpc_duration_seconds{method,code}: a histogram of every agent
//     call (a ttrpc client interceptor on the agent connection). Waiting calls
//     (WaitProcess, ReadStdout, GetOOMEvent) last as long as what they wait
//     for; they have their own method label.
//   - veil_guest_memory_bytes, veil_guest_cpus (GuestDetails), and
//     veil_container_memory_usage_bytes / veil_container_cpu_usage_seconds_total
//     per container, read from the agent's container stats at each scrape.
//   - veil_process_resident_memory_bytes{process} and
//     veil_process_pss_bytes{process} for process="qemu" and "shim", from
//     /proc/<pid>/smaps_rollup at each scrape.
//   - veil_vm_config{accel,vcpus,memory_mib,tcg_translation_cache_mib}: 1, the
//     VM's configured size.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/containerd/ttrpc"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/status"
)

// SocketName is the metrics socket's name in the pod's state directory.
const SocketName = "metrics.sock"

// Pod start phases (label phase of veil_pod_phase_timestamp_seconds), in
// the order they happen.
const (
	PhaseShimStart      = "shim_start"
	PhaseQEMUSpawned    = "qemu_spawned"
	PhaseKernelEntry    = "guest_kernel_entry"
	PhaseAgentStarted   = "agent_started"
	PhaseAgentReady     = "agent_ready"
	PhaseSandboxCreated = "sandbox_created"
)

// PodPhases lists the pod phases in order.
var PodPhases = []string{PhaseShimStart, PhaseQEMUSpawned, PhaseKernelEntry, PhaseAgentStarted, PhaseAgentReady, PhaseSandboxCreated}

// Container phases (label phase of veil_container_phase_timestamp_seconds).
// ContainerPullStarted and ContainerImagePulled bracket the agent's
// PullImage of a guest-pulled container (guest pull handlers only).
const (
	ContainerPullStarted = "pull_started"
	ContainerImagePulled = "image_pulled"
	ContainerCreated     = "created"
	ContainerStarted     = "started"
)

// scrapeTimeout bounds the agent calls one scrape makes.
const scrapeTimeout = 5 * time.Second

// Usage is what a container uses in the guest (its cgroup).
type Usage struct {
	MemoryBytes uint64
	CPUSeconds  float64
}

// Guest is what the agent reports about the guest (GuestDetails).
type Guest struct {
	// KernelToAgent and KernelToReady are the guest clock's time from
	// kernel start to the agent's start and to it serving.
	KernelToAgent, KernelToReady time.Duration
	MemTotalBytes                uint64
	CPUs                         uint32
}

// VM is the pod VM's configured size.
type VM struct {
	Accel                  string
	VCPUs, MemoryMiB       uint32
	TCGTranslationCacheMiB uint32
}

// Options configure a Pod's metrics.
type Options struct {
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// Proc is the procfs mount; "/proc" when empty.
	Proc string
	// ShimPID is the shim's pid; os.Getpid() when 0.
	ShimPID int
	// ShimStart is when the shim process started; when zero it is read
	// from procfs (the process's start time), or Now if that fails.
	ShimStart time.Time
	// QEMUPID returns the VM monitor's pid, 0 while there is none.
	QEMUPID func() int
	// Containers returns the guest usage of the pod's containers by ID; nil
	// or an error means no container figures in that scrape.
	Containers func(ctx context.Context) (map[string]Usage, error)
}

// Pod is the metrics of one pod's shim. Its methods are safe for concurrent
// use; a nil *Pod records nothing.
type Pod struct {
	opts Options
	fs   procfs.FS
	reg  *prometheus.Registry
	rpc  *prometheus.HistogramVec

	mu         sync.Mutex
	phases     map[string]time.Time
	containers map[string]map[string]time.Time
	guest      *Guest
	vm         *VM
}

// New returns the metrics of one pod with shim_start recorded.
func New(opts Options) (*Pod, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Proc == "" {
		opts.Proc = procfs.DefaultMountPoint
	}
	if opts.ShimPID == 0 {
		opts.ShimPID = os.Getpid()
	}
	fs, err := procfs.NewFS(opts.Proc)
	if err != nil {
		return nil, fmt.Errorf("opening procfs %s: %w", opts.Proc, err)
	}
	m := &Pod{
		opts:       opts,
		fs:         fs,
		reg:        prometheus.NewRegistry(),
		phases:     make(map[string]time.Time),
		containers: make(map[string]map[string]time.Time),
		rpc: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "veil_agent_rpc_duration_seconds",
			Help: "Duration of agent API calls from the shim, by method and gRPC status code.",
			// 1 ms to ~65 s: TCG guests answer in milliseconds to seconds.
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 17),
		}, []string{"method", "code"}),
	}
	start := opts.ShimStart
	if start.IsZero() {
		start = m.processStart(opts.ShimPID)
	}
	m.phases[PhaseShimStart] = start
	m.reg.MustRegister(m.rpc, (*collector)(m))
	return m, nil
}

// userHZ is the unit of /proc/<pid>/stat's starttime (USER_HZ, 100 on
// every Linux architecture veil runs on).
const userHZ = 100

// processStart returns when process pid started, or now when procfs cannot
// say. The kernel counts a process's start in ticks of the boot-time clock;
// converting through /proc/stat's btime would round to whole seconds, so
// the start is placed relative to now on the same clock instead.
func (m *Pod) processStart(pid int) time.Time {
	p, err := m.fs.Proc(pid)
	if err != nil {
		return m.opts.Now()
	}
	st, err := p.Stat()
	if err != nil {
		return m.opts.Now()
	}
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return m.opts.Now()
	}
	// Read together with the boot clock: the procfs reads above take
	// milliseconds under load, which would otherwise count as age.
	now := m.opts.Now()
	age := time.Duration(ts.Nano()) - time.Duration(st.Starttime)*time.Second/userHZ
	if age < 0 {
		return now
	}
	return now.Add(-age)
}

// MarkProcessStart records that phase happened when process pid started
// (now, when procfs cannot say).
func (m *Pod) MarkProcessStart(phase string, pid int) {
	if m == nil {
		return
	}
	t := m.processStart(pid)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.phases[phase] = t
}

// Mark records that phase happened now.
func (m *Pod) Mark(phase string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.phases[phase] = m.opts.Now()
}

// Phase returns when phase happened (false if it has not).
func (m *Pod) Phase(phase string) (time.Time, bool) {
	if m == nil {
		return time.Time{}, false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.phases[phase]
	return t, ok
}

// SetGuest records what the agent reported, and from it and agent_ready
// (which must be marked first) the host-clock times of the guest kernel's
// entry and the agent's start.
func (m *Pod) SetGuest(g Guest) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.guest = &g
	if ready, ok := m.phases[PhaseAgentReady]; ok && g.KernelToReady > 0 {
		entry := ready.Add(-g.KernelToReady)
		m.phases[PhaseKernelEntry] = entry
		m.phases[PhaseAgentStarted] = entry.Add(g.KernelToAgent)
	}
}

// SetVM records the VM's configured size.
func (m *Pod) SetVM(vm VM) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.vm = &vm
}

// MarkContainer records that container id reached phase now.
func (m *Pod) MarkContainer(id, phase string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.containers[id]
	if c == nil {
		c = make(map[string]time.Time)
		m.containers[id] = c
	}
	c[phase] = m.opts.Now()
}

// ForgetContainer drops a deleted container's figures.
func (m *Pod) ForgetContainer(id string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.containers, id)
}

// Interceptor is the ttrpc client interceptor that times every agent call.
func (m *Pod) Interceptor(ctx context.Context, req *ttrpc.Request, resp *ttrpc.Response, info *ttrpc.UnaryClientInfo, invoker ttrpc.Invoker) error {
	start := m.opts.Now()
	err := invoker(ctx, req, resp)
	m.rpc.WithLabelValues(info.FullMethod, status.Code(err).String()).Observe(m.opts.Now().Sub(start).Seconds())
	return err
}

// Handler serves the metrics as Prometheus text.
func (m *Pod) Handler() http.Handler {
	// A figure that cannot be read (the VM just exited, the agent is busy)
	// is left out; the rest is still served.
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// Gatherer returns the registry, for tests and embedding.
func (m *Pod) Gatherer() prometheus.Gatherer { return m.reg }

// Server serves a Pod's metrics on a unix socket.
type Server struct {
	path string
	srv  *http.Server
	done chan struct{}
}

// Serve listens on the unix socket path (replacing a stale one) and serves
// the metrics there until Close.
func (m *Pod) Serve(path string) (*Server, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("removing stale metrics socket: %w", err)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listening for metrics: %w", err)
	}
	s := &Server{path: path, srv: &http.Server{Handler: m.Handler(), ReadHeaderTimeout: 10 * time.Second}, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		_ = s.srv.Serve(l) // returns ErrServerClosed after Close
	}()
	return s, nil
}

// Close stops serving and removes the socket.
func (s *Server) Close() error {
	if s == nil {
		return nil
	}
	err := s.srv.Close()
	<-s.done
	if rerr := os.Remove(s.path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
		err = errors.Join(err, rerr)
	}
	return err
}

// collector turns the recorded values and what procfs and the agent say
// at scrape time into metrics.
type collector Pod

var (
	descPhase = prometheus.NewDesc("veil_pod_phase_timestamp_seconds",
		"When each phase of the pod's start happened (unix time, host clock).", []string{"phase"}, nil)
	descContainerPhase = prometheus.NewDesc("veil_container_phase_timestamp_seconds",
		"When a container was created and started (unix time, host clock).", []string{"container", "phase"}, nil)
	descVMBoot = prometheus.NewDesc("veil_vm_boot_seconds",
		"QEMU spawned to the guest agent's first answer (host clock).", nil, nil)
	descGuestBoot = prometheus.NewDesc("veil_guest_boot_seconds",
		"Guest kernel start to the agent's start (kernel_to_agent) and to it serving (kernel_to_ready), guest clock.", []string{"stage"}, nil)
	descGuestMem = prometheus.NewDesc("veil_guest_memory_bytes",
		"Memory the guest kernel sees.", nil, nil)
	descGuestCPUs = prometheus.NewDesc("veil_guest_cpus",
		"CPUs the guest sees.", nil, nil)
	descVM = prometheus.NewDesc("veil_vm_config",
		"The pod VM's configured size (value 1).", []string{"accel", "vcpus", "memory_mib", "tcg_translation_cache_mib"}, nil)
	descContainerMem = prometheus.NewDesc("veil_container_memory_usage_bytes",
		"A container's memory use in the guest (its cgroup's memory.current).", []string{"container"}, nil)
	descContainerCPU = prometheus.NewDesc("veil_container_cpu_usage_seconds_total",
		"A container's CPU time in the guest (its cgroup's cpu.stat usage).", []string{"container"}, nil)
	descRSS = prometheus.NewDesc("veil_process_resident_memory_bytes",
		"Resident memory of the pod's host processes (smaps_rollup Rss).", []string{"process"}, nil)
	descPSS = prometheus.NewDesc("veil_process_pss_bytes",
		"Proportional set size of the pod's host processes (smaps_rollup Pss).", []string{"process"}, nil)
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descPhase, descContainerPhase, descVMBoot, descGuestBoot, descGuestMem,
		descGuestCPUs, descVM, descContainerMem, descContainerCPU, descRSS, descPSS} {
		ch <- d
	}
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	m := (*Pod)(c)
	m.mu.Lock()
	phases := maps.Clone(m.phases)
	containers := make(map[string]map[string]time.Time, len(m.containers))
	for id, ph := range m.containers {
		containers[id] = maps.Clone(ph)
	}
	guest, vm := m.guest, m.vm
	m.mu.Unlock()

	for _, ph := range slices.Sorted(maps.Keys(phases)) {
		ch <- prometheus.MustNewConstMetric(descPhase, prometheus.GaugeValue, unixSeconds(phases[ph]), ph)
	}
	spawned, ok1 := phases[PhaseQEMUSpawned]
	ready, ok2 := phases[PhaseAgentReady]
	if ok1 && ok2 {
		ch <- prometheus.MustNewConstMetric(descVMBoot, prometheus.GaugeValue, ready.Sub(spawned).Seconds())
	}
	for _, id := range slices.Sorted(maps.Keys(containers)) {
		for _, ph := range slices.Sorted(maps.Keys(containers[id])) {
			ch <- prometheus.MustNewConstMetric(descContainerPhase, prometheus.GaugeValue, unixSeconds(containers[id][ph]), id, ph)
		}
	}
	if guest != nil {
		ch <- prometheus.MustNewConstMetric(descGuestBoot, prometheus.GaugeValue, guest.KernelToAgent.Seconds(), "kernel_to_agent")
		ch <- prometheus.MustNewConstMetric(descGuestBoot, prometheus.GaugeValue, guest.KernelToReady.Seconds(), "kernel_to_ready")
		ch <- prometheus.MustNewConstMetric(descGuestMem, prometheus.GaugeValue, float64(guest.MemTotalBytes))
		ch <- prometheus.MustNewConstMetric(descGuestCPUs, prometheus.GaugeValue, float64(guest.CPUs))
	}
	if vm != nil {
		u := func(v uint32) string { return strconv.FormatUint(uint64(v), 10) }
		ch <- prometheus.MustNewConstMetric(descVM, prometheus.GaugeValue, 1, vm.Accel, u(vm.VCPUs), u(vm.MemoryMiB), u(vm.TCGTranslationCacheMiB))
	}
	procs := map[string]int{"shim": m.opts.ShimPID}
	if m.opts.QEMUPID != nil {
		if pid := m.opts.QEMUPID(); pid > 0 {
			procs["qemu"] = pid
		}
	}
	for name, pid := range procs {
		p, err := m.fs.Proc(pid)
		if err != nil {
			ch <- prometheus.NewInvalidMetric(descPSS, fmt.Errorf("reading %s (pid %d): %w", name, pid, err))
			continue
		}
		r, err := p.ProcSMapsRollup()
		if err != nil {
			ch <- prometheus.NewInvalidMetric(descPSS, fmt.Errorf("reading %s (pid %d) smaps_rollup: %w", name, pid, err))
			continue
		}
		ch <- prometheus.MustNewConstMetric(descRSS, prometheus.GaugeValue, float64(r.Rss), name)
		ch <- prometheus.MustNewConstMetric(descPSS, prometheus.GaugeValue, float64(r.Pss), name)
	}
	if m.opts.Containers != nil {
		ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
		usage, err := m.opts.Containers(ctx)
		cancel()
		if err != nil {
			ch <- prometheus.NewInvalidMetric(descContainerMem, fmt.Errorf("reading container stats from the agent: %w", err))
			return
		}
		for _, id := range slices.Sorted(maps.Keys(usage)) {
			ch <- prometheus.MustNewConstMetric(descContainerMem, prometheus.GaugeValue, float64(usage[id].MemoryBytes), id)
			ch <- prometheus.MustNewConstMetric(descContainerCPU, prometheus.CounterValue, usage[id].CPUSeconds, id)
		}
	}
}
