package hypervisor

import "testing"

func TestChooseAccel(t *testing.T) {
	const intel = "kvm_intel 421888 0 - Live 0x0000000000000000\nkvm 1384448 1 kvm_intel, Live 0x0000000000000000\n"
	const amd = "ccp 118784 1 kvm_amd, Live 0x0\nkvm_amd 200704 0 - Live 0x0\nkvm 1384448 1 kvm_amd, Live 0x0\n"
	const pvm = "kvm_pvm 81920 0 - Live 0x0\nkvm 1384448 1 kvm_pvm, Live 0x0\n"
	const lookalike = "xkvm_intel 1 0 - Live 0x0\nkvm_intel_helper 1 0 - Live 0x0\n"
	tests := []struct {
		name      string
		requested Accel
		modules   string
		want      Accel
	}{
		{"auto with kvm_intel", AccelAuto, intel, AccelKVM},
		{"auto with kvm_amd", AccelAuto, amd, AccelKVM},
		{"empty means auto", "", intel, AccelKVM},
		{"auto with only paravirtual kvm", AccelAuto, pvm, AccelTCG},
		{"auto with no modules file", AccelAuto, "", AccelTCG},
		{"auto ignores lookalike names", AccelAuto, lookalike, AccelTCG},
		{"explicit tcg on a kvm host", AccelTCG, intel, AccelTCG},
		{"explicit kvm is honoured", AccelKVM, pvm, AccelKVM},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, reason := ChooseAccel(tt.requested, tt.modules)
			if got != tt.want {
				t.Fatalf("ChooseAccel(%q) = %q (%s), want %q", tt.requested, got, reason, tt.want)
			}
			if reason == "" {
				t.Fatal("empty reason")
			}
		})
	}
}

func TestChooseTransport(t *testing.T) {
	tests := []struct {
		requested Transport
		vsock     bool
		want      Transport
	}{
		{TransportAuto, true, TransportVsock},
		{TransportAuto, false, TransportSerial},
		{"", true, TransportVsock},
		{"", false, TransportSerial},
		{TransportSerial, true, TransportSerial},
		{TransportVsock, false, TransportVsock},
	}
	for _, tt := range tests {
		if got := ChooseTransport(tt.requested, tt.vsock); got != tt.want {
			t.Errorf("ChooseTransport(%q, vhost-vsock=%v) = %q, want %q", tt.requested, tt.vsock, got, tt.want)
		}
	}
}

func TestValid(t *testing.T) {
	for _, a := range []Accel{"", AccelAuto, AccelKVM, AccelTCG} {
		if !ValidAccel(a) {
			t.Errorf("ValidAccel(%q) = false", a)
		}
	}
	if ValidAccel("hvf") {
		t.Error(`ValidAccel("hvf") = true`)
	}
	for _, tr := range []Transport{"", TransportAuto, TransportSerial, TransportVsock} {
		if !ValidTransport(tr) {
			t.Errorf("ValidTransport(%q) = false", tr)
		}
	}
	if ValidTransport("tcp") {
		t.Error(`ValidTransport("tcp") = true`)
	}
}
