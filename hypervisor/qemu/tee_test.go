package qemu

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/veil-runtime/veil/hypervisor"
)

// withBIOS is l with a BIOS configured (hypervisor.bios).
func withBIOS(l Launch) Launch {
	l.BIOS = "/q/qboot.rom"
	return l
}

func TestTEEArgs(t *testing.T) {
	digest := make([]byte, 32)
	for i := range digest {
		digest[i] = byte(i + 1)
	}
	b64 := func(b []byte, size int) string { return base64.StdEncoding.EncodeToString(pad(b, size)) }
	base := Launch{
		ID: "pod1", Kernel: "/g/vmlinuz", Initrd: "/g/initrd.img", VCPUs: 2, MemoryMiB: 768,
		Accel: hypervisor.AccelKVM, Transport: hypervisor.TransportSerial, QMPFD: 3, AgentFD: 4,
		ConsoleLog: "/s/console.log", PIDFile: "/s/qemu.pid",
	}
	with := func(tee hypervisor.TEEConfig) Launch { l := base; l.TEE = tee; return l }
	tests := []struct {
		name   string
		l      Launch
		want   map[string][]string
		absent []string
	}{
		{
			name:   "ordinary vm",
			l:      base,
			want:   map[string][]string{"-machine": {baseMachineOpt}, "-m": {"768M"}},
			absent: []string{"-object", "-bios"},
		},
		{
			name:   "an ordinary vm boots its BIOS",
			l:      withBIOS(base),
			want:   map[string][]string{"-bios": {"/q/qboot.rom"}},
			absent: []string{"-object"},
		},
		{
			name: "snp boots its OVMF, not the BIOS",
			l:    withBIOS(with(hypervisor.TEEConfig{Kind: hypervisor.TEESNP, Firmware: "/fw/OVMF.amdsev.fd"})),
			want: map[string][]string{"-bios": {"/fw/OVMF.amdsev.fd"}},
		},
		{
			name: "tdx boots its TDVF, not the BIOS",
			l:    withBIOS(with(hypervisor.TEEConfig{Kind: hypervisor.TEETDX, Firmware: "/fw/OVMF.tdx.fd"})),
			want: map[string][]string{"-bios": {"/fw/OVMF.tdx.fd"}},
		},
		{
			name:   "sample changes nothing in the launch",
			l:      with(hypervisor.TEEConfig{Kind: hypervisor.TEESample, InitDataDigest: digest}),
			want:   map[string][]string{"-machine": {baseMachineOpt}},
			absent: []string{"-object", "-bios"},
		},
		{
			name: "snp with init-data and OVMF",
			l:    with(hypervisor.TEEConfig{Kind: hypervisor.TEESNP, InitDataDigest: digest, Firmware: "/fw/OVMF.amdsev.fd"}),
			want: map[string][]string{
				"-machine": {baseMachineOpt + ",confidential-guest-support=sev0,memory-backend=ram0"},
				"-object": {
					"memory-backend-memfd,id=ram0,size=768M,share=true,prealloc=false",
					"sev-snp-guest,id=sev0,policy=0x30000,cbitpos=51,reduced-phys-bits=1,host-data=" + b64(digest, 32) + ",kernel-hashes=on",
				},
				"-bios": {"/fw/OVMF.amdsev.fd"},
				"-m":    {"768M"},
				"-cpu":  {"host"},
			},
		},
		{
			name: "snp without init-data binds nothing, custom policy",
			l:    with(hypervisor.TEEConfig{Kind: hypervisor.TEESNP, Firmware: "/fw/OVMF.fd", SNPPolicy: 0x10000}),
			want: map[string][]string{
				"-object": {
					"memory-backend-memfd,id=ram0,size=768M,share=true,prealloc=false",
					"sev-snp-guest,id=sev0,policy=0x10000,cbitpos=51,reduced-phys-bits=1,kernel-hashes=on",
				},
			},
		},
		{
			name: "snp with igvm",
			l:    with(hypervisor.TEEConfig{Kind: hypervisor.TEESNP, Firmware: "/fw/coconut,svsm.igvm"}),
			want: map[string][]string{
				"-machine": {baseMachineOpt + ",confidential-guest-support=sev0,memory-backend=ram0,igvm-cfg=igvm0"},
				"-object": {
					"memory-backend-memfd,id=ram0,size=768M,share=true,prealloc=false",
					"sev-snp-guest,id=sev0,policy=0x30000,cbitpos=51,reduced-phys-bits=1,kernel-hashes=on",
					"igvm-cfg,id=igvm0,file=/fw/coconut,,svsm.igvm",
				},
			},
			absent: []string{"-bios"},
		},
		{
			name: "tdx with init-data and quote generation",
			l:    with(hypervisor.TEEConfig{Kind: hypervisor.TEETDX, InitDataDigest: digest, Firmware: "/fw/OVMF.tdx.fd", QuoteGenerationSocket: "vsock:2:4050"}),
			want: map[string][]string{
				"-machine": {baseMachineOpt + ",kernel-irqchip=split,confidential-guest-support=tdx0"},
				"-object":  {`{"id":"tdx0","mrconfigid":"` + b64(digest, 48) + `","qom-type":"tdx-guest","quote-generation-socket":{"type":"vsock","cid":"2","port":"4050"}}`},
				"-bios":    {"/fw/OVMF.tdx.fd"},
			},
		},
		{
			name: "tdx over a unix qgs socket, no init-data",
			l:    with(hypervisor.TEEConfig{Kind: hypervisor.TEETDX, Firmware: "/fw/OVMF.tdx.fd", QuoteGenerationSocket: "unix:/run/qgs.sock"}),
			want: map[string][]string{
				"-object": {`{"id":"tdx0","qom-type":"tdx-guest","quote-generation-socket":{"type":"unix","path":"/run/qgs.sock"}}`},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := Args(tt.l)
			for flag, want := range tt.want {
				if got := opts(args, flag); !slices.Equal(got, want) {
					t.Errorf("%s = %q, want %q\nargs: %q", flag, got, want, args)
				}
			}
			for _, flag := range tt.absent {
				if slices.Contains(args, flag) {
					t.Errorf("%s present: %q", flag, args)
				}
			}
			// No memory hotplug in any launch: -m is a plain size.
			for _, m := range opts(args, "-m") {
				if strings.Contains(m, "slots") || strings.Contains(m, "maxmem") {
					t.Errorf("-m %q allows hotplug", m)
				}
			}
		})
	}
}

// The MRCONFIGID in the TDX object is the 32-byte digest zero padded to 48.
func TestTDXMRConfigIDIsPadded(t *testing.T) {
	digest := []byte(strings.Repeat("\xab", 32))
	args := teeArgs(Launch{TEE: hypervisor.TEEConfig{Kind: hypervisor.TEETDX, InitDataDigest: digest, Firmware: "/f"}})
	var obj struct {
		MRConfigID string `json:"mrconfigid"`
	}
	if err := json.Unmarshal([]byte(args[1]), &obj); err != nil {
		t.Fatal(err)
	}
	raw, err := base64.StdEncoding.DecodeString(obj.MRConfigID)
	if err != nil || len(raw) != 48 || string(raw[:32]) != string(digest) || strings.Trim(string(raw[32:]), "\x00") != "" {
		t.Fatalf("mrconfigid = %x (%v)", raw, err)
	}
}

// fakeQEMUBinary writes a script that prints version like `qemu --version`.
func fakeQEMUBinary(t *testing.T, version string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "qemu-system-x86_64")
	script := "#!/bin/sh\necho '" + version + "'\necho 'Copyright (c) 2003-2025 Fabrice Bellard and the QEMU Project developers'\n"
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func fakeSysfs(t *testing.T, param, value string) string {
	t.Helper()
	root := t.TempDir()
	if param == "" {
		return root
	}
	p := filepath.Join(root, param)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(value+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return root
}

func TestCheckTEE(t *testing.T) {
	snp := hypervisor.TEEConfig{Kind: hypervisor.TEESNP, Firmware: "/fw"}
	tdx := hypervisor.TEEConfig{Kind: hypervisor.TEETDX, Firmware: "/fw"}
	tests := []struct {
		name      string
		tee       hypervisor.TEEConfig
		version   string
		param     string
		value     string
		wantErr   []string
		wantNoErr bool
	}{
		{name: "snp on an old qemu and a host without snp (this machine)", tee: snp, version: "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)",
			wantErr: []string{"cannot launch a snp guest", "SEV-SNP guests need QEMU >= 9.1", "is QEMU 7.2.22", "host has no SEV-SNP: kvm_amd is not loaded"}},
		{name: "snp on a new qemu, host without snp", tee: snp, version: "QEMU emulator version 9.2.0", param: hypervisor.SNPParam, value: "N",
			wantErr: []string{`sev_snp is "N", want Y`}},
		{name: "snp ready", tee: snp, version: "QEMU emulator version 9.1.0", param: hypervisor.SNPParam, value: "Y", wantNoErr: true},
		{name: "tdx on 10.0", tee: tdx, version: "QEMU emulator version 10.0.2", param: hypervisor.TDXParam, value: "Y",
			wantErr: []string{"TDX guests need QEMU >= 10.1", "is QEMU 10.0.2"}},
		{name: "tdx ready", tee: tdx, version: "QEMU emulator version 10.1.0", param: hypervisor.TDXParam, value: "Y", wantNoErr: true},
		{name: "unreadable version", tee: tdx, version: "something else", param: hypervisor.TDXParam, value: "Y",
			wantErr: []string{`no "QEMU emulator version X.Y" in "something else"`}},
		{name: "sample needs nothing", tee: hypervisor.TEEConfig{Kind: hypervisor.TEESample}, version: "QEMU emulator version 2.0.0", wantNoErr: true},
		{name: "snp config error first", tee: hypervisor.TEEConfig{Kind: hypervisor.TEESNP}, version: "QEMU emulator version 9.1.0", wantErr: []string{"no firmware"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckTEE(context.Background(), tt.tee, fakeQEMUBinary(t, tt.version), fakeSysfs(t, tt.param, tt.value))
			if tt.wantNoErr {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

// TestNewRefusesSNPOnThisHost is what a veil-snp pod meets on a host that
// cannot launch SEV-SNP guests, with the host's own QEMU and sysfs: New
// fails before anything starts, naming each missing piece. The expected
// message is derived from the host, so the test asserts the right thing on
// any machine (on the project's CI machine: QEMU 7.2 and no SEV-SNP).
func TestNewRefusesSNPOnThisHost(t *testing.T) {
	bin, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Fatalf("qemu-system-x86_64 is needed for this test: %v", err)
	}
	dir := t.TempDir()
	kernel := filepath.Join(dir, "vmlinuz")
	os.WriteFile(kernel, nil, 0o644)
	var want []string
	v, err := QEMUVersion(context.Background(), bin)
	if err != nil {
		t.Fatal(err)
	}
	if v.Less(hypervisor.MinQEMUForSNP) {
		want = append(want, "SEV-SNP guests need QEMU >= 9.1", "is QEMU "+v.String())
	}
	if herr := hypervisor.CheckHostTEE(hypervisor.TEESNP, SysRoot); herr != nil {
		want = append(want, herr.Error())
	}
	if len(want) == 0 {
		t.Fatalf("this host can launch SEV-SNP guests (QEMU %s, sev_snp=Y): the refusal cannot be shown here", v)
	}
	_, err = New(hypervisor.Config{
		ID: "snp", StateDir: dir, Kernel: kernel, Binary: bin, Transport: hypervisor.TransportSerial,
		TEE: hypervisor.TEEConfig{Kind: hypervisor.TEESNP, Firmware: "/usr/share/ovmf/OVMF.fd", InitDataDigest: make([]byte, 32)},
	}, nil)
	if err == nil {
		t.Fatal("New launched an SEV-SNP guest on a host that cannot run one")
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("New error %q lacks %q", err, w)
		}
	}
	t.Logf("refusal: %v", err)
}
