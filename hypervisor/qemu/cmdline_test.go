package qemu

import (
	"slices"
	"strings"
	"testing"

	"github.com/veil-runtime/veil/hypervisor"
)

func TestKernelCmdline(t *testing.T) {
	tests := []struct {
		debug bool
		extra []string
		want  string
	}{
		{false, nil, "console=hvc0 quiet panic=-1 cryptomgr.notests noreplace-smp tsc=reliable no_timer_check"},
		{true, nil, "console=hvc0 panic=-1 cryptomgr.notests noreplace-smp tsc=reliable no_timer_check"},
		{false, []string{"veil.debug=1", "init=/init"}, "console=hvc0 quiet panic=-1 cryptomgr.notests noreplace-smp tsc=reliable no_timer_check veil.debug=1 init=/init"},
	}
	for _, tt := range tests {
		if got := KernelCmdline(tt.debug, tt.extra); got != tt.want {
			t.Errorf("KernelCmdline(%v, %q) = %q, want %q", tt.debug, tt.extra, got, tt.want)
		}
	}
}

// opt returns the value following the n-th occurrence of flag in args.
func opts(args []string, flag string) []string {
	var vals []string
	for i := 0; i+1 < len(args); i++ {
		if args[i] == flag {
			vals = append(vals, args[i+1])
		}
	}
	return vals
}

func TestArgs(t *testing.T) {
	base := Launch{
		ID: "pod1", Kernel: "/g/vmlinuz", Initrd: "/g/initrd.img",
		VCPUs: 2, MemoryMiB: 512,
		Accel: hypervisor.AccelTCG, Transport: hypervisor.TransportSerial,
		QMPFD: 3, AgentFD: 4,
		ConsoleLog: "/s/console.log", PIDFile: "/s/qemu.pid",
	}
	with := func(f func(*Launch)) Launch { l := base; f(&l); return l }
	tests := []struct {
		name   string
		l      Launch
		want   map[string][]string // flag -> every value, in order
		absent []string            // flags that must not appear
	}{
		{
			name: "tcg over virtio-serial, default translation cache",
			l:    base,
			want: map[string][]string{
				"-machine": {"q35,sata=off,smbus=off,i8042=off,vmport=off"},
				"-accel":   {"tcg,thread=single,tb-size=32"},
				"-cpu":     {"max"},
				"-smp":     {"2"},
				"-m":       {"512M"},
				"-kernel":  {"/g/vmlinuz"},
				"-initrd":  {"/g/initrd.img"},
				"-append":  {"console=hvc0 quiet panic=-1 cryptomgr.notests noreplace-smp tsc=reliable no_timer_check"},
				"-pidfile": {"/s/qemu.pid"},
				"-mon":     {"chardev=qmp,mode=control"},
				"-chardev": {
					"socket,id=qmp,fd=3,server=on,wait=off",
					"file,id=console,path=/s/console.log",
					"socket,id=agent,fd=4,server=on,wait=off",
				},
				"-device": {
					"virtio-serial-pci,id=vser",
					"virtconsole,chardev=console,bus=vser.0",
					"virtserialport,chardev=agent,bus=vser.0,name=veil.agent",
				},
			},
			absent: []string{"-fsdev", "-netdev"},
		},
		{
			name: "root image instead of the initrd: virtio-pmem, a memory slot, root= first",
			l: with(func(l *Launch) {
				l.Initrd, l.RootImage, l.RootImageBytes = "", "/g/rootfs,x.erofs", 32<<20
				l.KernelArgs = []string{"veil.log=debug"}
			}),
			want: map[string][]string{
				"-m":      {"512M,slots=1,maxmem=544M"},
				"-append": {"console=hvc0 quiet panic=-1 cryptomgr.notests noreplace-smp tsc=reliable no_timer_check root=/dev/pmem0 rootfstype=erofs rootflags=dax ro init=/init veil.log=debug"},
				"-object": {"memory-backend-file,id=rootimg,mem-path=/g/rootfs,,x.erofs,size=33554432,readonly=on,share=off"},
				"-device": {
					"virtio-serial-pci,id=vser",
					"virtconsole,chardev=console,bus=vser.0",
					"virtserialport,chardev=agent,bus=vser.0,name=veil.agent",
					"virtio-pmem-pci,memdev=rootimg,id=rootimg0",
				},
			},
			absent: []string{"-initrd"},
		},
		{
			name: "kvm uses the host cpu",
			l:    with(func(l *Launch) { l.Accel = hypervisor.AccelKVM }),
			want: map[string][]string{"-accel": {"kvm"}, "-cpu": {"host"}},
		},
		{
			name: "tcg with one vCPU: no APIC timer to calibrate, before the root image's arguments",
			l: with(func(l *Launch) {
				l.VCPUs, l.Initrd, l.RootImage, l.RootImageBytes = 1, "", "/g/rootfs.erofs", 32<<20
			}),
			want: map[string][]string{
				"-smp":    {"1"},
				"-append": {"console=hvc0 quiet panic=-1 cryptomgr.notests noreplace-smp tsc=reliable no_timer_check noapictimer root=/dev/pmem0 rootfstype=erofs rootflags=dax ro init=/init"},
			},
		},
		{
			name: "tcg with one vCPU, sample TEE: the command line veil measure computes, no TCG arguments",
			l: with(func(l *Launch) {
				l.VCPUs, l.TEE.Kind, l.KernelArgs = 1, hypervisor.TEESample, []string{"veil.tee=sample"}
			}),
			want: map[string][]string{"-append": {"console=hvc0 quiet panic=-1 cryptomgr.notests noreplace-smp tsc=reliable no_timer_check veil.tee=sample"}},
		},
		{
			name: "kvm with one vCPU keeps the APIC timer (TSC deadline, no calibration)",
			l:    with(func(l *Launch) { l.Accel, l.VCPUs = hypervisor.AccelKVM, 1 }),
			want: map[string][]string{"-append": {"console=hvc0 quiet panic=-1 cryptomgr.notests noreplace-smp tsc=reliable no_timer_check"}},
		},
		{
			name: "translation cache from config",
			l:    with(func(l *Launch) { l.TBSizeMiB = 256 }),
			want: map[string][]string{"-accel": {"tcg,thread=single,tb-size=256"}},
		},
		{
			name: "vsock has no agent port",
			l:    with(func(l *Launch) { l.Transport = hypervisor.TransportVsock; l.VsockCID = 42 }),
			want: map[string][]string{
				"-chardev": {"socket,id=qmp,fd=3,server=on,wait=off", "file,id=console,path=/s/console.log"},
				"-device":  {"virtio-serial-pci,id=vser", "virtconsole,chardev=console,bus=vser.0", "vhost-vsock-pci,guest-cid=42"},
			},
		},
		{
			name: "shared dir over 9p with passthrough",
			l:    with(func(l *Launch) { l.SharedDir = "/run/veil/pod1/shared" }),
			want: map[string][]string{
				"-fsdev": {"local,id=share,path=/run/veil/pod1/shared,security_model=passthrough,multidevs=remap"},
			},
		},
		{
			name: "commas in paths are doubled",
			l: with(func(l *Launch) {
				l.SharedDir = "/a,b"
				l.ConsoleLog = "/s,t/console.log"
			}),
			want: map[string][]string{
				"-fsdev": {"local,id=share,path=/a,,b,security_model=passthrough,multidevs=remap"},
			},
		},
		{
			name: "debug keeps boot messages and extra args follow",
			l:    with(func(l *Launch) { l.Debug = true; l.KernelArgs = []string{"agent.log=debug"} }),
			want: map[string][]string{"-append": {"console=hvc0 panic=-1 cryptomgr.notests noreplace-smp tsc=reliable no_timer_check agent.log=debug"}},
		},
		{
			name: "NICs on tap fds carry their MACs, in order",
			l: with(func(l *Launch) {
				l.NICs = []NIC{{TapFD: 5, MAC: "0a:58:0a:58:00:05"}, {TapFD: 6, MAC: "0a:58:0a:59:00:07"}}
			}),
			want: map[string][]string{
				"-netdev": {"tap,id=net0,fd=5", "tap,id=net1,fd=6"},
				"-device": {
					"virtio-serial-pci,id=vser",
					"virtconsole,chardev=console,bus=vser.0",
					"virtserialport,chardev=agent,bus=vser.0,name=veil.agent",
					"virtio-net-pci,netdev=net0,mac=0a:58:0a:58:00:05",
					"virtio-net-pci,netdev=net1,mac=0a:58:0a:59:00:07",
				},
			},
		},
		{
			name: "debug console port on its own socket",
			l:    with(func(l *Launch) { l.DebugConsoleFD = 7 }),
			want: map[string][]string{
				"-chardev": {
					"socket,id=qmp,fd=3,server=on,wait=off",
					"file,id=console,path=/s/console.log",
					"socket,id=agent,fd=4,server=on,wait=off",
					"socket,id=dbgcon,fd=7,server=on,wait=off",
				},
				"-device": {
					"virtio-serial-pci,id=vser",
					"virtconsole,chardev=console,bus=vser.0",
					"virtserialport,chardev=agent,bus=vser.0,name=veil.agent",
					"virtserialport,chardev=dbgcon,bus=vser.0,name=veil.console",
				},
			},
		},
		{
			name: "free page reporting on a balloon that is never inflated",
			l:    with(func(l *Launch) { l.FreePageReporting = true }),
			want: map[string][]string{
				"-device": {
					"virtio-serial-pci,id=vser",
					"virtconsole,chardev=console,bus=vser.0",
					"virtserialport,chardev=agent,bus=vser.0,name=veil.agent",
					"virtio-balloon-pci,id=balloon,free-page-reporting=on",
				},
			},
		},
		{
			name: "no free page reporting for hardware TEEs",
			l: with(func(l *Launch) {
				l.FreePageReporting = true
				l.TEE = hypervisor.TEEConfig{Kind: hypervisor.TEESNP, Firmware: "/fw/OVMF.fd"}
			}),
			want: map[string][]string{
				"-device": {
					"virtio-serial-pci,id=vser",
					"virtconsole,chardev=console,bus=vser.0",
					"virtserialport,chardev=agent,bus=vser.0,name=veil.agent",
				},
			},
		},
		{
			name:   "no initrd",
			l:      with(func(l *Launch) { l.Initrd = "" }),
			absent: []string{"-initrd"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := Args(tt.l)
			for flag, want := range tt.want {
				if got := opts(args, flag); !slices.Equal(got, want) {
					t.Errorf("%s = %q, want %q", flag, got, want)
				}
			}
			for _, flag := range tt.absent {
				if slices.Contains(args, flag) {
					t.Errorf("%s present: %q", flag, args)
				}
			}
			for _, must := range []string{"-nodefaults", "-no-user-config", "-nographic", "-no-reboot"} {
				if !slices.Contains(args, must) {
					t.Errorf("%s missing", must)
				}
			}
			if tt.l.SharedDir != "" {
				dev := opts(args, "-device")
				if !slices.Contains(dev, "virtio-9p-pci,fsdev=share,mount_tag=veilshare") {
					t.Errorf("9p device missing: %q", dev)
				}
			}
			if tt.l.ConsoleLog == "/s,t/console.log" && !slices.Contains(opts(args, "-chardev"), "file,id=console,path=/s,,t/console.log") {
				t.Errorf("console path not escaped: %q", opts(args, "-chardev"))
			}
		})
	}
}

func TestProcessTitle(t *testing.T) {
	if got := processTitle("abc"); got != "veil-abc" {
		t.Errorf("processTitle(abc) = %q", got)
	}
	long := processTitle(strings.Repeat("f", 64))
	if len(long) != 15 || !strings.HasPrefix(long, "veil-") {
		t.Errorf("processTitle(64 chars) = %q, want 15 bytes starting veil-", long)
	}
}

func TestTailText(t *testing.T) {
	tests := []struct {
		in   string
		cut  bool
		want string
	}{
		{"a\nb\nc\n", false, "a\nb\nc"},
		{"tial line\nb\nc\n", true, "b\nc"},
		{"no newline at all", true, "no newline at all"},
		{"\n\n", false, ""},
	}
	for _, tt := range tests {
		if got := tailText([]byte(tt.in), tt.cut); got != tt.want {
			t.Errorf("tailText(%q, %v) = %q, want %q", tt.in, tt.cut, got, tt.want)
		}
	}
}
