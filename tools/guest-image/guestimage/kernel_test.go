package guestimage

import (
	"errors"
	"strings"
	"testing"
)

func TestKernelPinParses(t *testing.T) {
	p, err := ParsePin(KernelPin)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(p.Package, "linux-source-") {
		t.Errorf("KernelPin package %q is not a linux-source package (veil builds its own kernel)", p.Package)
	}
	if p.String() != KernelPin {
		t.Errorf("String() = %q, want %q", p.String(), KernelPin)
	}
}

func TestParsePin(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    Pin
		wantErr bool
	}{
		{"linux-image-6.12.107+deb12-amd64-unsigned=6.12.107-1~deb12u1", Pin{"linux-image-6.12.107+deb12-amd64-unsigned", "6.12.107-1~deb12u1"}, false},
		{"runc=1:1.1.5", Pin{"runc", "1:1.1.5"}, false},
		{"linux-image-6.12.107+deb12-amd64-unsigned", Pin{}, true},
		{"=1.0", Pin{}, true},
		{"pkg=", Pin{}, true},
		{"pkg=1 2", Pin{}, true},
	} {
		got, err := ParsePin(tc.in)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("ParsePin(%q) = %+v, %v; want %+v, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestDebFileName(t *testing.T) {
	for _, tc := range []struct {
		pin  Pin
		want string
	}{
		{Pin{"linux-source-6.12", "6.12.107-1~deb12u1"}, "linux-source-6.12_6.12.107-1~deb12u1_all.deb"},
		{Pin{"foo", "2:1.0-1"}, "foo_2%3a1.0-1_all.deb"},
	} {
		if got := tc.pin.DebFileName("all"); got != tc.want {
			t.Errorf("%v.DebFileName() = %q, want %q", tc.pin, got, tc.want)
		}
	}
}

func TestParseMadison(t *testing.T) {
	out := `linux-image-6.12.115+deb12-amd64-unsigned | 6.12.115-2~deb12u1 | http://deb.debian.org/debian-security bookworm-security/main amd64 Packages
linux-image-6.12.115+deb12-amd64-unsigned | 6.12.115-1~deb12u1 | http://deb.debian.org/debian-security bookworm-security/main amd64 Packages
N: some note
`
	got := ParseMadison(out)
	if len(got) != 2 || got[0].Version != "6.12.115-2~deb12u1" || got[1].Package != "linux-image-6.12.115+deb12-amd64-unsigned" ||
		!strings.Contains(got[0].Source, "bookworm-security") {
		t.Fatalf("ParseMadison = %+v", got)
	}
	if len(ParseMadison("")) != 0 {
		t.Error("empty output gives lines")
	}
}

func TestUnavailableErrorNamesNewestVersion(t *testing.T) {
	avail := []MadisonLine{
		{Package: "linux-source-6.12", Version: "6.12.111-1~deb12u1"},
		{Package: "linux-source-6.12", Version: "6.12.99-1~deb12u1"},
		{Package: "linux-source-6.12", Version: "6.12.115-1~deb12u1"},
		{Package: "linux-source-6.12", Version: "6.12.117-1~deb12u1"},
		{Package: "linux-source-6.12", Version: "6.12.115-2~deb12u1"},
	}
	SortNewestFirst(avail)
	var order []string
	for _, l := range avail {
		order = append(order, l.Version)
	}
	if strings.Join(order, " ") != "6.12.117-1~deb12u1 6.12.115-2~deb12u1 6.12.115-1~deb12u1 6.12.111-1~deb12u1 6.12.99-1~deb12u1" {
		t.Fatalf("SortNewestFirst = %q", order)
	}
	pin := Pin{"linux-source-6.12", "6.12.100-1~deb12u1"}
	err := UnavailableError(pin, avail)
	if !errors.Is(err, ErrKernelUnavailable) {
		t.Errorf("error %v is not ErrKernelUnavailable", err)
	}
	msg := err.Error()
	for _, want := range []string{
		pin.String(),
		"set KernelPin in tools/guest-image/guestimage/kernel.go to linux-source-6.12=6.12.117-1~deb12u1",
		"linux-source-6.12=6.12.111-1~deb12u1",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not contain %q", msg, want)
		}
	}
	if msg := UnavailableError(pin, nil).Error(); !strings.Contains(msg, "no other version") {
		t.Errorf("error without alternatives: %q", msg)
	}
}
