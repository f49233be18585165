// Package config owns the veil runtime configuration file: its keys, their
// defaults, and strict parsing (an unknown key or a bad value is an error that
// names the key and the file).
//
// The file is TOML. The shim reads /etc/veil/config.toml unless containerd
// passes another path in the runtime's ConfigPath option
// (runtimeoptions.v1.Options, set in containerd's config as
// `[...runtimes.veil.options] ConfigPath = "/etc/veil/veil.toml"`, or with
// `ctr run --runtime-config-path`) or, without that option, the shim's
// environment names one in $VEIL_CONFIG (PathEnv). A missing default file
// means all defaults; a missing file named by either is an error.
//
// Every key, with its default:
//
//	debug = false                  # debug logging in the shim; guest kernel messages on the console
//	debug_console = true           # a root shell in the guest for `veil debug console <sandbox>`
//	                               # (confidential guests refuse it unless their init-data policy allows)
//
//	[hypervisor]
//	driver = "qemu"                # the hypervisor driver (hypervisor.Register); qemu is built in
//	binary = ""                    # qemu-system-x86_64 from PATH when empty
//	bios = ""                      # firmware without snp/tdx: "" qboot.rom from QEMU's data directory
//	                               # when there (faster to the kernel), else QEMU's default; "default":
//	                               # QEMU's default (SeaBIOS); or a file
//	kernel = "/opt/veil/share/veil/vmlinux"  # tee snp, tdx: ".../vmlinuz" (see DefaultKernel)
//	initrd = "/opt/veil/share/veil/initrd.img"
//	rootfs_image = ""              # a read-only root image (rootfs.erofs) the VM maps from the host
//	                               # file and mounts as / instead of the initrd: its pages are shared
//	                               # by every pod VM (virtio-pmem, DAX); `veil install` sets it for
//	                               # the veil handler; not with tee (the initramfs is measured)
//	kernel_args = []               # appended to the driver's kernel command line
//	vcpus = 1                      # base vCPUs; the pod's CPU limit is added (snp, tdx: exactly
//	                               # this many, the launch measurement covers it: PinnedVCPUs)
//	max_vcpus = 0                  # cap on vCPUs; 0 means the host's CPU count (not snp, tdx)
//	memory_mib = 256               # base memory; the pod's memory limit is added
//	default_memory_mib = 2048      # memory of a pod without a memory limit (at least memory_mib),
//	                               # as Kata's default_memory: the guest touches it only when used
//	max_memory_mib = 0             # cap on memory; 0 means no cap
//	accel = "auto"                 # auto | kvm | tcg
//	transport = "auto"             # auto | virtio-serial | vsock
//	tcg_translation_cache_mib = 0  # 0: the driver's default
//	reclaim_guest_freed_memory = false # give memory the guest frees back to the host (free page reporting; not snp/tdx)
//	console_log_max_kib = 1024     # cap of console.log (guest kernel and agent log) in the pod's state dir
//	console_log_files = 2          # console.log files kept, the live one included (console.log, console.log.1)
//
//	[agent]
//	boot_timeout = "60s"           # VM start until the agent answers
//	call_timeout = "30s"           # every agent call except the waiting ones
//	shutdown_timeout = "10s"       # guest power-off before the VM is killed
//	health_interval = "10s"        # ask the agent's Check this often; "0s": never
//	health_timeout = "10s"         # each health check's deadline
//	health_failures = 3            # this many failed checks in a row fail the pod
//	log_level = "info"             # debug | info | warn | error: the agent logs at this level
//	                               # (kernel parameter veil.log) and the shim forwards its lines
//
//	[confidential]
//	tee = "none"                   # none | sample (veil-dev, INSECURE) | snp | tdx
//	initdata = ""                  # init-data TOML for pods without the io.veil.initdata annotation
//	allow_annotation_initdata = true  # honour the pod's io.veil.initdata annotation
//	firmware = ""                  # snp, tdx: OVMF (AmdSev) / TDVF image, or an SNP .igvm file
//	snp_policy = 0                 # snp guest policy; 0: 0x30000 (debug off); the debug bit is refused
//	quote_generation_socket = ""   # tdx: the host's QGS, "vsock:<cid>:<port>" or "unix:<path>"
//	guest_pull = true              # (tee not none) the guest pulls each container's image; unset: true
//
// With tee other than none the handler is confidential (veil-dev, veil-snp,
// veil-tdx): see shim/README.md for what the shim then does and what still
// goes through the host.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/veil-runtime/veil/attestation/initdata"
	"github.com/veil-runtime/veil/guest-agent/boot"
	"github.com/veil-runtime/veil/hypervisor"
)

// DefaultPath is read when containerd passes no ConfigPath and the shim's
// environment has no PathEnv.
const DefaultPath = "/etc/veil/config.toml"

// PathEnv is the environment variable naming the config file when
// containerd passes no ConfigPath: clients that create containers without
// CRI's runtime options (nerdctl --runtime io.containerd.veil.v2) get it
// from containerd's environment, which the shim inherits (Kata's
// KATA_CONF_FILE is the same idea). A file it names must exist.
const PathEnv = "VEIL_CONFIG"

// Config is the veil runtime configuration.
type Config struct {
	Debug bool `toml:"debug"`
	// DebugConsole gives the VM the debug console port.
	DebugConsole bool       `toml:"debug_console"`
	Hypervisor   Hypervisor `toml:"hypervisor"`
	Agent        Agent      `toml:"agent"`
	// Confidential is the [confidential] table.
	Confidential Confidential `toml:"confidential"`
}

// Confidential configures the TEE of a confidential handler.
type Confidential struct {
	// TEE is none, sample, snp or tdx.
	TEE string `toml:"tee"`
	// InitData is the path of the init-data document used when the pod
	// has no io.veil.initdata annotation (or annotations are not allowed).
	InitData string `toml:"initdata"`
	// AllowAnnotationInitData honours the pod's io.veil.initdata.
	AllowAnnotationInitData bool `toml:"allow_annotation_initdata"`
	// Firmware is the guest firmware for snp and tdx.
	Firmware string `toml:"firmware"`
	// SNPPolicy is the SEV-SNP guest policy (0: the default).
	SNPPolicy uint64 `toml:"snp_policy"`
	// QuoteGenerationSocket is the TDX quote generation service.
	QuoteGenerationSocket string `toml:"quote_generation_socket"`
	// GuestPull makes the agent pull, verify and decrypt each container's
	// image inside the guest (shim/guestpull.go) instead of sharing the
	// rootfs containerd unpacked on the host. Unset means true for a
	// confidential handler; it cannot be set when tee is none.
	GuestPull *bool `toml:"guest_pull"`
}

// Kind is the TEE as the hypervisor names it.
func (c Confidential) Kind() hypervisor.TEE {
	if c.TEE == "" {
		return hypervisor.TEENone
	}
	return hypervisor.TEE(c.TEE)
}

// Enabled reports whether the handler is confidential (tee is not none).
func (c Confidential) Enabled() bool { return c.Kind() != hypervisor.TEENone }

// GuestPullEnabled reports whether containers' images are pulled in the
// guest: confidential handlers, unless guest_pull = false.
func (c Confidential) GuestPullEnabled() bool {
	return c.Enabled() && (c.GuestPull == nil || *c.GuestPull)
}

// IsConfidential reports whether the handler runs the confidential flow:
// the host is then untrusted (DESIGN.md, "Trust").
func (c Config) IsConfidential() bool { return c.Confidential.Enabled() }

// Hypervisor configures the pod VM.
type Hypervisor struct {
	// Driver names the hypervisor driver (hypervisor.Lookup).
	Driver string `toml:"driver"`
	Binary string `toml:"binary"`
	// BIOS is the firmware of a VM without a hardware TEE (hypervisor.Config.BIOS).
	BIOS   string `toml:"bios"`
	Kernel string `toml:"kernel"`
	Initrd string `toml:"initrd"`
	// RootfsImage, when set, is booted instead of Initrd (hypervisor.Config.RootImage).
	RootfsImage             string   `toml:"rootfs_image"`
	KernelArgs              []string `toml:"kernel_args"`
	VCPUs                   uint32   `toml:"vcpus"`
	MaxVCPUs                uint32   `toml:"max_vcpus"`
	MemoryMiB               uint32   `toml:"memory_mib"`
	DefaultMemoryMiB        uint32   `toml:"default_memory_mib"`
	MaxMemoryMiB            uint32   `toml:"max_memory_mib"`
	Accel                   string   `toml:"accel"`
	Transport               string   `toml:"transport"`
	TCGTranslationCacheMiB  uint32   `toml:"tcg_translation_cache_mib"`
	ReclaimGuestFreedMemory bool     `toml:"reclaim_guest_freed_memory"`
	// ConsoleLogMaxKiB and ConsoleLogFiles cap the guest console log.
	ConsoleLogMaxKiB uint32 `toml:"console_log_max_kib"`
	ConsoleLogFiles  uint32 `toml:"console_log_files"`
}

// Agent configures how the shim talks to the guest agent.
type Agent struct {
	BootTimeout     Duration `toml:"boot_timeout"`
	CallTimeout     Duration `toml:"call_timeout"`
	ShutdownTimeout Duration `toml:"shutdown_timeout"`
	// HealthInterval is how often the shim asks a running pod's agent
	// Check (0: never); HealthFailures failed checks in a row, each
	// bounded by HealthTimeout, fail the pod (shim/health.go).
	HealthInterval Duration `toml:"health_interval"`
	HealthTimeout  Duration `toml:"health_timeout"`
	HealthFailures uint32   `toml:"health_failures"`
	// LogLevel is the agent's log level (debug, info, warn, error); the
	// shim forwards the agent's console lines into its own log.
	LogLevel string `toml:"log_level"`
}

// Level is the agent's log level; an unknown name is an error that says
// which are valid (the agent's own parser: guest-agent/boot).
func (a Agent) Level() (slog.Level, error) {
	return boot.LogLevel(map[string]string{boot.LogLevelParam: a.LogLevel})
}

// Console is the hypervisor's console log bound (no line forwarding).
func (h Hypervisor) Console() hypervisor.Console {
	return hypervisor.Console{MaxBytes: int64(h.ConsoleLogMaxKiB) << 10, Files: int(h.ConsoleLogFiles)}
}

// Duration is a time.Duration written as a Go duration string ("30s").
type Duration time.Duration

// UnmarshalText parses a duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalText writes the duration as a string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// Std returns the duration as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// Default returns the configuration used when the file sets nothing.
func Default() Config {
	return Config{
		DebugConsole: true,
		Hypervisor: Hypervisor{
			Kernel:           DefaultKernel(hypervisor.TEENone),
			Initrd:           "/opt/veil/share/veil/initrd.img",
			VCPUs:            1,
			MemoryMiB:        256,
			DefaultMemoryMiB: DefaultPodMemoryMiB,
			Accel:            string(hypervisor.AccelAuto),
			Transport:        string(hypervisor.TransportAuto),
			Driver:           "qemu",

			ConsoleLogMaxKiB: hypervisor.DefaultConsoleMaxBytes >> 10,
			ConsoleLogFiles:  hypervisor.DefaultConsoleFiles,
		},
		Agent: Agent{
			BootTimeout:     Duration(60 * time.Second),
			CallTimeout:     Duration(30 * time.Second),
			ShutdownTimeout: Duration(10 * time.Second),
			HealthInterval:  Duration(10 * time.Second),
			HealthTimeout:   Duration(10 * time.Second),
			HealthFailures:  3,
			LogLevel:        "info",
		},
		Confidential: Confidential{
			TEE:                     string(hypervisor.TEENone),
			AllowAnnotationInitData: true,
		},
	}
}

// DropInDir is the drop-in directory of the config file at path: path
// without its .toml suffix, plus ".d" (/opt/veil/etc/veil-dev.toml:
// /opt/veil/etc/veil-dev.d). Its *.toml files are read after the file, in
// name order, each setting only the keys it holds. `veil install` rewrites
// the handler configs it owns but never writes their drop-in directories:
// they are where an admin's overrides live.
func DropInDir(path string) string { return strings.TrimSuffix(path, ".toml") + ".d" }

// Load reads the configuration at path, then the *.toml files of its
// drop-in directory (DropInDir) over it. An empty path means DefaultPath,
// and a missing DefaultPath means Default(); a missing explicit path is an
// error. A missing drop-in directory is no error.
func Load(path string) (Config, error) {
	explicit := path != ""
	if !explicit {
		path = DefaultPath
	}
	data, err := os.ReadFile(path)
	if err != nil {
		if !explicit && errors.Is(err, os.ErrNotExist) {
			data = nil
		} else {
			return Config{}, fmt.Errorf("reading veil config: %w", err)
		}
	}
	docs := []document{{data: data, name: path}}
	dropIns, err := filepath.Glob(filepath.Join(DropInDir(path), "*.toml"))
	if err != nil {
		return Config{}, fmt.Errorf("listing the drop-ins of %s: %w", path, err)
	}
	sort.Strings(dropIns)
	for _, d := range dropIns {
		b, err := os.ReadFile(d)
		if err != nil {
			return Config{}, fmt.Errorf("reading veil config drop-in: %w", err)
		}
		docs = append(docs, document{data: b, name: d})
	}
	return parse(docs)
}

// document is one config file's content and name.
type document struct {
	data []byte
	name string
}

// Default guest kernels, as tools/guest-image builds them and `veil
// install` puts them.
const (
	// DirectKernel is the uncompressed kernel with the PVH entry: QEMU
	// loads it straight into guest memory, no decompression (plain
	// handlers, and veil-dev, whose sample TEE has no firmware).
	DirectKernel = "/opt/veil/share/veil/vmlinux"
	// FirmwareKernel is the same kernel as a bzImage with the EFI stub:
	// what the TEE firmware (OVMF, TDVF) boots and measures.
	FirmwareKernel = "/opt/veil/share/veil/vmlinuz"
)

// DefaultKernel is hypervisor.kernel's default for a TEE: the bzImage when
// firmware boots the guest (snp, tdx), else the PVH vmlinux.
func DefaultKernel(tee hypervisor.TEE) string {
	if tee.Hardware() {
		return FirmwareKernel
	}
	return DirectKernel
}

// kernelUnset marks hypervisor.kernel as not set by the document (an
// explicit "" stays an error).
const kernelUnset = "\x00unset"

// Parse decodes a configuration document over the defaults; name is the file
// name used in errors. An unset hypervisor.kernel becomes DefaultKernel of
// the document's confidential.tee.
func Parse(data []byte, name string) (Config, error) {
	return parse([]document{{data: data, name: name}})
}

// parse decodes docs in order over the defaults (each sets the keys it
// holds) and validates the result; the last document's name is the one a
// validation error gives when there are several, with the others listed.
func parse(docs []document) (Config, error) {
	cfg := Default()
	cfg.Hypervisor.Kernel = kernelUnset
	for _, d := range docs {
		if err := decode(&cfg, d.data, d.name); err != nil {
			return Config{}, err
		}
	}
	if cfg.Hypervisor.Kernel == kernelUnset {
		cfg.Hypervisor.Kernel = DefaultKernel(cfg.Confidential.Kind())
	}
	if err := cfg.validate(); err != nil {
		names := make([]string, len(docs))
		for i, d := range docs {
			names[i] = d.name
		}
		return Config{}, fmt.Errorf("veil config %s: %w", strings.Join(names, " + "), err)
	}
	return cfg, nil
}

// decode decodes one document over cfg, strictly.
func decode(cfg *Config, data []byte, name string) error {
	dec := toml.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(cfg); err != nil {
		var strict *toml.StrictMissingError
		if errors.As(err, &strict) {
			keys := make([]string, 0, len(strict.Errors))
			for _, e := range strict.Errors {
				keys = append(keys, strings.Join(e.Key(), "."))
			}
			return fmt.Errorf("veil config %s: unknown key %s", name, strings.Join(keys, ", "))
		}
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, col := de.Position()
			key := strings.Join(de.Key(), ".")
			if key != "" {
				return fmt.Errorf("veil config %s:%d:%d: key %s: %s", name, row, col, key, de.Error())
			}
			return fmt.Errorf("veil config %s:%d:%d: %s", name, row, col, de.Error())
		}
		return fmt.Errorf("veil config %s: %w", name, err)
	}
	return nil
}

func (c Config) validate() error {
	h := c.Hypervisor
	if h.Driver == "" {
		return errors.New(`key hypervisor.driver: must not be empty (the built-in driver is "qemu")`)
	}
	switch hypervisor.Accel(h.Accel) {
	case hypervisor.AccelAuto, hypervisor.AccelKVM, hypervisor.AccelTCG:
	default:
		return fmt.Errorf("key hypervisor.accel: %q is not one of auto, kvm, tcg", h.Accel)
	}
	switch hypervisor.Transport(h.Transport) {
	case hypervisor.TransportAuto, hypervisor.TransportSerial, hypervisor.TransportVsock:
	default:
		return fmt.Errorf("key hypervisor.transport: %q is not one of auto, virtio-serial, vsock", h.Transport)
	}
	if h.Kernel == "" {
		return errors.New("key hypervisor.kernel: must not be empty")
	}
	if h.Initrd == "" && h.RootfsImage == "" {
		return errors.New("key hypervisor.initrd: must not be empty (or set hypervisor.rootfs_image)")
	}
	if h.RootfsImage != "" && c.Confidential.Enabled() {
		return fmt.Errorf("key hypervisor.rootfs_image: must be empty with confidential.tee %q, whose root is the measured initramfs (hypervisor.initrd); have %q", c.Confidential.TEE, h.RootfsImage)
	}
	if h.VCPUs == 0 {
		return errors.New("key hypervisor.vcpus: must be at least 1")
	}
	if h.MaxVCPUs != 0 && h.MaxVCPUs < h.VCPUs {
		return fmt.Errorf("key hypervisor.max_vcpus: %d is less than vcpus (%d)", h.MaxVCPUs, h.VCPUs)
	}
	if h.MemoryMiB < 64 {
		return fmt.Errorf("key hypervisor.memory_mib: %d is below the 64 MiB a guest needs", h.MemoryMiB)
	}
	if h.DefaultMemoryMiB < 64 {
		return fmt.Errorf("key hypervisor.default_memory_mib: %d is below the 64 MiB a guest needs", h.DefaultMemoryMiB)
	}
	if h.MaxMemoryMiB != 0 && h.MaxMemoryMiB < h.MemoryMiB {
		return fmt.Errorf("key hypervisor.max_memory_mib: %d is less than memory_mib (%d)", h.MaxMemoryMiB, h.MemoryMiB)
	}
	for key, d := range map[string]Duration{
		"agent.boot_timeout":     c.Agent.BootTimeout,
		"agent.call_timeout":     c.Agent.CallTimeout,
		"agent.shutdown_timeout": c.Agent.ShutdownTimeout,
		"agent.health_timeout":   c.Agent.HealthTimeout,
	} {
		if d <= 0 {
			return fmt.Errorf("key %s: %s must be positive", key, d.Std())
		}
	}
	if c.Agent.HealthInterval < 0 {
		return fmt.Errorf("key agent.health_interval: %s must be positive, or 0s for no health checks", c.Agent.HealthInterval.Std())
	}
	if c.Agent.HealthFailures == 0 {
		return errors.New("key agent.health_failures: must be at least 1")
	}
	if _, err := c.Agent.Level(); err != nil {
		return fmt.Errorf("key agent.log_level: %w", err)
	}
	if h.ConsoleLogMaxKiB == 0 {
		return errors.New("key hypervisor.console_log_max_kib: must be at least 1")
	}
	if h.ConsoleLogFiles == 0 {
		return errors.New("key hypervisor.console_log_files: must be at least 1 (the live file)")
	}
	return c.Confidential.validate()
}

func (c Confidential) validate() error {
	kind := c.Kind()
	if !hypervisor.ValidTEE(kind) {
		return fmt.Errorf("key confidential.tee: %q is not one of none, sample, snp, tdx", c.TEE)
	}
	if !c.Enabled() {
		for key, set := range map[string]bool{
			"confidential.initdata":                c.InitData != "",
			"confidential.firmware":                c.Firmware != "",
			"confidential.snp_policy":              c.SNPPolicy != 0,
			"confidential.quote_generation_socket": c.QuoteGenerationSocket != "",
			"confidential.guest_pull":              c.GuestPull != nil && *c.GuestPull,
		} {
			if set {
				return fmt.Errorf("key %s: set, but confidential.tee is none", key)
			}
		}
		return nil
	}
	if kind.Hardware() && c.Firmware == "" {
		return fmt.Errorf("key confidential.firmware: must name the guest firmware (OVMF/TDVF or .igvm) for tee %q", c.TEE)
	}
	if c.SNPPolicy != 0 && kind != hypervisor.TEESNP {
		return fmt.Errorf("key confidential.snp_policy: set, but confidential.tee is %q", c.TEE)
	}
	if c.QuoteGenerationSocket != "" && kind != hypervisor.TEETDX {
		return fmt.Errorf("key confidential.quote_generation_socket: set, but confidential.tee is %q", c.TEE)
	}
	if err := c.TEEConfig(nil).Validate(); err != nil {
		return fmt.Errorf("key confidential: %w", err)
	}
	if c.InitData != "" {
		if _, err := c.LoadInitData(); err != nil {
			return fmt.Errorf("key confidential.initdata: %w", err)
		}
	}
	return nil
}

// TEEConfig is the hypervisor's launch configuration for this handler,
// binding the init-data digest (nil binds nothing).
func (c Confidential) TEEConfig(initDataDigest []byte) hypervisor.TEEConfig {
	return hypervisor.TEEConfig{
		Kind:                  c.Kind(),
		InitDataDigest:        initDataDigest,
		Firmware:              c.Firmware,
		SNPPolicy:             c.SNPPolicy,
		QuoteGenerationSocket: c.QuoteGenerationSocket,
	}
}

// LoadInitData reads and validates the handler's default init-data
// document; nil when none is configured.
func (c Confidential) LoadInitData() ([]byte, error) {
	if c.InitData == "" {
		return nil, nil
	}
	doc, err := os.ReadFile(c.InitData)
	if err != nil {
		return nil, fmt.Errorf("reading init-data: %w", err)
	}
	if _, err := initdata.Parse(doc); err != nil {
		return nil, fmt.Errorf("init-data %s: %w", c.InitData, err)
	}
	return doc, nil
}
