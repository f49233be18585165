package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseDefaults(t *testing.T) {
	cfg, err := Parse(nil, "empty.toml")
	if err != nil {
		t.Fatal(err)
	}
	h := cfg.Hypervisor
	if h.Kernel != "/opt/veil/share/veil/vmlinux" || h.Initrd != "/opt/veil/share/veil/initrd.img" {
		t.Errorf("kernel/initrd defaults: %q %q", h.Kernel, h.Initrd)
	}
	if d := Default().Hypervisor.Kernel; d != h.Kernel {
		t.Errorf("Default() kernel %q, Parse of an empty file %q", d, h.Kernel)
	}
	if h.VCPUs != 1 || h.MemoryMiB != 256 || h.DefaultMemoryMiB != 2048 || h.Accel != "auto" || h.Transport != "auto" || h.Binary != "" {
		t.Errorf("hypervisor defaults: %+v", h)
	}
	if cfg.Agent.CallTimeout.Std() != 30*time.Second || cfg.Agent.BootTimeout.Std() != time.Minute || cfg.Agent.ShutdownTimeout.Std() != 10*time.Second {
		t.Errorf("agent defaults: %+v", cfg.Agent)
	}
	if c := h.Console(); c.MaxBytes != 1<<20 || c.Files != 2 {
		t.Errorf("console defaults: %+v, want 1 MiB x 2", c)
	}
	if a := cfg.Agent; a.HealthInterval.Std() != 10*time.Second || a.HealthTimeout.Std() != 10*time.Second || a.HealthFailures != 3 || a.LogLevel != "info" {
		t.Errorf("agent health defaults: %+v", a)
	}
	if cfg.Debug {
		t.Error("debug defaults to true")
	}
	if !cfg.DebugConsole {
		t.Error("debug_console defaults to false")
	}
}

func TestParseOverrides(t *testing.T) {
	doc := `
debug = true
debug_console = false
[hypervisor]
binary = "/usr/bin/qemu-system-x86_64"
kernel = "/k"
vcpus = 2
max_vcpus = 4
memory_mib = 512
accel = "tcg"
transport = "virtio-serial"
kernel_args = ["quiet"]
[agent]
call_timeout = "5s"
`
	cfg, err := Parse([]byte(doc), "x.toml")
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Debug || cfg.DebugConsole || cfg.Hypervisor.Kernel != "/k" || cfg.Hypervisor.Initrd != "/opt/veil/share/veil/initrd.img" ||
		cfg.Hypervisor.VCPUs != 2 || cfg.Hypervisor.MaxVCPUs != 4 || cfg.Hypervisor.MemoryMiB != 512 ||
		cfg.Hypervisor.Accel != "tcg" || cfg.Hypervisor.Transport != "virtio-serial" ||
		len(cfg.Hypervisor.KernelArgs) != 1 || cfg.Agent.CallTimeout.Std() != 5*time.Second ||
		cfg.Agent.BootTimeout.Std() != time.Minute {
		t.Errorf("parsed: %+v", cfg)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name, doc string
		want      []string // substrings of the error
	}{
		{"unknown top key", `debgu = true`, []string{"bad.toml", "unknown key", "debgu"}},
		{"unknown nested key", "[hypervisor]\nvcpu = 2", []string{"bad.toml", "hypervisor.vcpu"}},
		{"unknown table", "[hypervisr]\nvcpus = 2", []string{"bad.toml", "hypervisr"}},
		{"wrong type", "[hypervisor]\nvcpus = \"two\"", []string{"bad.toml", "vcpus"}},
		{"bad duration", "[agent]\ncall_timeout = \"soon\"", []string{"bad.toml", "call_timeout"}},
		{"zero duration", "[agent]\ncall_timeout = \"0s\"", []string{"bad.toml", "agent.call_timeout"}},
		{"zero health timeout", "[agent]\nhealth_timeout = \"0s\"", []string{"agent.health_timeout"}},
		{"negative health interval", "[agent]\nhealth_interval = \"-1s\"", []string{"agent.health_interval", "0s for no health checks"}},
		{"zero health failures", "[agent]\nhealth_failures = 0", []string{"agent.health_failures", "at least 1"}},
		{"bad agent log level", "[agent]\nlog_level = \"loud\"", []string{"agent.log_level", "debug, info, warn or error"}},
		{"zero console cap", "[hypervisor]\nconsole_log_max_kib = 0", []string{"hypervisor.console_log_max_kib"}},
		{"zero console files", "[hypervisor]\nconsole_log_files = 0", []string{"hypervisor.console_log_files"}},
		{"empty driver", "[hypervisor]\ndriver = \"\"", []string{"bad.toml", "hypervisor.driver", "qemu"}},
		{"bad accel", "[hypervisor]\naccel = \"hvf\"", []string{"bad.toml", "hypervisor.accel", "hvf"}},
		{"bad transport", "[hypervisor]\ntransport = \"tcp\"", []string{"bad.toml", "hypervisor.transport"}},
		{"zero vcpus", "[hypervisor]\nvcpus = 0", []string{"bad.toml", "hypervisor.vcpus"}},
		{"max below base", "[hypervisor]\nvcpus = 4\nmax_vcpus = 2", []string{"hypervisor.max_vcpus"}},
		{"tiny memory", "[hypervisor]\nmemory_mib = 16", []string{"hypervisor.memory_mib"}},
		{"tiny default memory", "[hypervisor]\ndefault_memory_mib = 32", []string{"hypervisor.default_memory_mib", "32"}},
		{"empty kernel", "[hypervisor]\nkernel = \"\"", []string{"hypervisor.kernel"}},
		{"syntax", "[hypervisor\n", []string{"bad.toml:1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.doc), "bad.toml")
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "veil.toml")
	if err := os.WriteFile(p, []byte("[hypervisor]\nvcpus = 3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(p)
	if err != nil || cfg.Hypervisor.VCPUs != 3 {
		t.Fatalf("Load(%s) = %+v, %v", p, cfg.Hypervisor, err)
	}
	if _, err := Load(filepath.Join(dir, "missing.toml")); err == nil || !strings.Contains(err.Error(), "missing.toml") {
		t.Errorf("missing explicit file: %v", err)
	}
}

// TestKernelDefaultFollowsTEE: the plain and sample handlers boot the PVH
// vmlinux directly; snp and tdx boot the bzImage through their firmware,
// which measures it. An explicit kernel wins either way.
func TestKernelDefaultFollowsTEE(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{``, "/opt/veil/share/veil/vmlinux"},
		{"[confidential]\ntee = \"none\"\n", "/opt/veil/share/veil/vmlinux"},
		{"[confidential]\ntee = \"sample\"\n", "/opt/veil/share/veil/vmlinux"},
		{"[confidential]\ntee = \"snp\"\nfirmware = \"/fw\"\n", "/opt/veil/share/veil/vmlinuz"},
		{"[confidential]\ntee = \"tdx\"\nfirmware = \"/fw\"\n", "/opt/veil/share/veil/vmlinuz"},
		{"[hypervisor]\nkernel = \"/k\"\n[confidential]\ntee = \"snp\"\nfirmware = \"/fw\"\n", "/k"},
		{"[hypervisor]\nkernel = \"/k\"\n", "/k"},
	} {
		cfg, err := Parse([]byte(tc.doc), "x.toml")
		if err != nil {
			t.Fatalf("%q: %v", tc.doc, err)
		}
		if cfg.Hypervisor.Kernel != tc.want {
			t.Errorf("%q: kernel %q, want %q", tc.doc, cfg.Hypervisor.Kernel, tc.want)
		}
	}
}

// TestPodMemoryMiB: a pod without a memory limit gets default_memory_mib
// (at least memory_mib), one with a limit memory_mib plus the limit, both
// capped by max_memory_mib.
func TestPodMemoryMiB(t *testing.T) {
	h := Default().Hypervisor
	for _, tc := range []struct {
		name       string
		base, def  uint32
		max        uint32
		limitBytes int64
		want       uint32
	}{
		{"no limit: the default", 256, 2048, 0, 0, 2048},
		{"negative limit is none", 256, 2048, 0, -1, 2048},
		{"a limit: base plus limit", 256, 2048, 0, 64 << 20, 320},
		{"a limit rounds up to MiB", 256, 2048, 0, 64<<20 + 1, 321},
		{"a limit above the default", 256, 2048, 0, 4 << 30, 256 + 4096},
		{"default below the base", 4096, 2048, 0, 0, 4096},
		{"default capped", 256, 2048, 1024, 0, 1024},
		{"limit capped", 256, 2048, 1024, 4 << 30, 1024},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h.MemoryMiB, h.DefaultMemoryMiB, h.MaxMemoryMiB = tc.base, tc.def, tc.max
			if got := h.PodMemoryMiB(tc.limitBytes); got != tc.want {
				t.Errorf("PodMemoryMiB(%d) = %d, want %d", tc.limitBytes, got, tc.want)
			}
		})
	}
}
