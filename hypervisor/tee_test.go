package hypervisor

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseQEMUVersion(t *testing.T) {
	tests := []struct {
		out     string
		want    QEMUVersion
		wantErr bool
	}{
		{out: "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright (c) 2003-2022 Fabrice Bellard", want: QEMUVersion{7, 2, 22}},
		{out: "QEMU emulator version 9.1.0\n", want: QEMUVersion{9, 1, 0}},
		{out: "QEMU emulator version 10.1 (v10.1.0-rc0)", want: QEMUVersion{10, 1, 0}},
		{out: "qemu-system-x86_64: not a qemu", wantErr: true},
		{out: "", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseQEMUVersion(tt.out)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseQEMUVersion(%q) = %v, %v; want %v, err %v", tt.out, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestCheckQEMUVersion(t *testing.T) {
	tests := []struct {
		tee     TEE
		v       QEMUVersion
		wantErr string
	}{
		{tee: TEESNP, v: QEMUVersion{7, 2, 22}, wantErr: "SEV-SNP guests need QEMU >= 9.1 (the sev-snp-guest object); /usr/bin/qemu is QEMU 7.2.22"},
		{tee: TEESNP, v: QEMUVersion{9, 0, 9}, wantErr: "need QEMU >= 9.1"},
		{tee: TEESNP, v: QEMUVersion{9, 1, 0}},
		{tee: TEESNP, v: QEMUVersion{10, 0, 0}},
		{tee: TEETDX, v: QEMUVersion{10, 0, 2}, wantErr: "TDX guests need QEMU >= 10.1 (the tdx-guest object)"},
		{tee: TEETDX, v: QEMUVersion{10, 1, 0}},
		{tee: TEETDX, v: QEMUVersion{11, 0, 0}},
		{tee: TEESample, v: QEMUVersion{2, 0, 0}},
		{tee: TEENone, v: QEMUVersion{2, 0, 0}},
	}
	for _, tt := range tests {
		err := CheckQEMUVersion(tt.tee, "/usr/bin/qemu", tt.v)
		if tt.wantErr == "" {
			if err != nil {
				t.Errorf("%s on %v: %v", tt.tee, tt.v, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("%s on %v: error %v, want containing %q", tt.tee, tt.v, err, tt.wantErr)
		}
	}
}

// fakeSys writes files (relative path -> content) under a fresh sysfs root.
func fakeSys(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for p, c := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if c == "<dir>" {
			continue
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestCheckHostTEE(t *testing.T) {
	tests := []struct {
		name    string
		tee     TEE
		files   map[string]string
		wantErr string
	}{
		{name: "snp on", tee: TEESNP, files: map[string]string{SNPParam: "Y\n"}},
		{name: "snp off", tee: TEESNP, files: map[string]string{SNPParam: "N\n"}, wantErr: `sev_snp is "N", want Y`},
		{name: "kvm_amd without the parameter", tee: TEESNP, files: map[string]string{"module/kvm_amd/parameters/nested": "1"}, wantErr: "kvm_amd has no such parameter"},
		{name: "no kvm_amd", tee: TEESNP, files: map[string]string{"module/kvm/<x>": "<dir>"}, wantErr: "host has no SEV-SNP: kvm_amd is not loaded"},
		{name: "tdx on", tee: TEETDX, files: map[string]string{TDXParam: "Y\n"}},
		{name: "tdx off", tee: TEETDX, files: map[string]string{TDXParam: "N\n"}, wantErr: `tdx is "N", want Y`},
		{name: "no kvm_intel", tee: TEETDX, files: map[string]string{SNPParam: "Y"}, wantErr: "host has no TDX: kvm_intel is not loaded"},
		{name: "sample needs nothing", tee: TEESample},
		{name: "none needs nothing", tee: TEENone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckHostTEE(tt.tee, fakeSys(t, tt.files))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestTEEConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		c       TEEConfig
		wantErr string
	}{
		{name: "none", c: TEEConfig{}},
		{name: "sample without firmware", c: TEEConfig{Kind: TEESample}},
		{name: "unknown", c: TEEConfig{Kind: "sgx"}, wantErr: `unknown TEE "sgx"`},
		{name: "snp without firmware", c: TEEConfig{Kind: TEESNP}, wantErr: "SEV-SNP guest: no firmware"},
		{name: "snp debug policy", c: TEEConfig{Kind: TEESNP, Firmware: "/f", SNPPolicy: 0x30000 | SNPPolicyDebug}, wantErr: "debug bit"},
		{name: "snp long digest", c: TEEConfig{Kind: TEESNP, Firmware: "/f", InitDataDigest: make([]byte, 48)}, wantErr: "want 32"},
		{name: "snp good", c: TEEConfig{Kind: TEESNP, Firmware: "/f", InitDataDigest: make([]byte, 32)}},
		{name: "tdx bad qgs", c: TEEConfig{Kind: TEETDX, Firmware: "/f", QuoteGenerationSocket: "tcp:1:2"}, wantErr: "quote generation socket"},
		{name: "tdx good", c: TEEConfig{Kind: TEETDX, Firmware: "/f", QuoteGenerationSocket: "vsock:2:4050"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.c.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestParseSocketAddress(t *testing.T) {
	tests := []struct {
		in      string
		want    SocketAddress
		wantErr bool
	}{
		{in: "vsock:2:4050", want: SocketAddress{Type: "vsock", CID: "2", Port: "4050"}},
		{in: "unix:/var/run/tdx-qgs/qgs.socket", want: SocketAddress{Type: "unix", Path: "/var/run/tdx-qgs/qgs.socket"}},
		{in: "unix:relative", wantErr: true},
		{in: "vsock:2", wantErr: true},
		{in: "vsock:x:1", wantErr: true},
		{in: "tcp:1.2.3.4:5", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseSocketAddress(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseSocketAddress(%q) = %+v, %v", tt.in, got, err)
		}
	}
}
