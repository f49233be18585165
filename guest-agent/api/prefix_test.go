package api

import (
	"net"
	"net/netip"
	"testing"
)

func TestPrefixOf(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   *net.IPNet
		want string // "" for not ok
	}{
		{"nil", nil, ""},
		{"ipv4 4-byte mask", &net.IPNet{IP: net.IPv4(10, 0, 0, 2).To4(), Mask: net.CIDRMask(24, 32)}, "10.0.0.2/24"},
		{"ipv4 as 16 bytes, 16-byte mask", &net.IPNet{IP: net.IPv4(10, 0, 0, 2), Mask: net.CIDRMask(120, 128)}, "10.0.0.2/24"},
		{"ipv6", &net.IPNet{IP: net.ParseIP("fd00::2"), Mask: net.CIDRMask(64, 128)}, "fd00::2/64"},
		{"non-canonical mask", &net.IPNet{IP: net.IPv4(10, 0, 0, 2).To4(), Mask: net.IPMask{255, 0, 255, 0}}, ""},
		{"malformed ip", &net.IPNet{IP: net.IP{1, 2, 3}, Mask: net.CIDRMask(8, 32)}, ""},
	} {
		got, ok := PrefixOf(tc.in)
		if tc.want == "" {
			if ok {
				t.Errorf("%s: PrefixOf = %v, true; want false", tc.name, got)
			}
			continue
		}
		if !ok || got != netip.MustParsePrefix(tc.want) {
			t.Errorf("%s: PrefixOf = %v, %v; want %s, true", tc.name, got, ok, tc.want)
		}
	}
}
