package guestimage

import (
	"errors"
	"regexp"
	"strings"
	"testing"
)

func TestKernelPinParses(t *testing.T) {
	p, err := ParsePin(KernelPin)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(p.Package, "-amd64-unsigned") || strings.Contains(p.Package, "cloud") {
		t.Errorf("KernelPin package %q is not the generic amd64 flavour (the cloud flavour has no 9p)", p.Package)
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
		{Pin{"linux-image-6.12.107+deb12-amd64-unsigned", "6.12.107-1~deb12u1"}, "linux-image-6.12.107+deb12-amd64-unsigned_6.12.107-1~deb12u1_amd64.deb"},
		{Pin{"foo", "2:1.0-1"}, "foo_2%3a1.0-1_amd64.deb"},
	} {
		if got := tc.pin.DebFileName(); got != tc.want {
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

func TestSiblingPattern(t *testing.T) {
	pat, err := SiblingPattern("linux-image-6.12.107+deb12-amd64-unsigned")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(pat)
	for name, want := range map[string]bool{
		"linux-image-6.12.107+deb12-amd64-unsigned":       true,
		"linux-image-6.12.117+deb12-amd64-unsigned":       true,
		"linux-image-6.12.117+deb12-cloud-amd64-unsigned": false,
		"linux-image-6.12.117+deb12-rt-amd64-unsigned":    false,
		"linux-image-6.12.117+deb12-amd64-dbg":            false,
		"linux-image-6.1.0+deb12-amd64-unsigned":          false,
		"linux-image-6.13.1+deb12-amd64-unsigned":         false,
	} {
		if re.MatchString(name) != want {
			t.Errorf("pattern %s matches %s: %v, want %v", pat, name, !want, want)
		}
	}
	if _, err := SiblingPattern("runc"); err == nil {
		t.Error("SiblingPattern(runc) gives no error")
	}
}

func TestUnavailableErrorNamesNewestVersion(t *testing.T) {
	avail := []MadisonLine{
		{Package: "linux-image-6.12.111+deb12-amd64-unsigned", Version: "6.12.111-1~deb12u1"},
		{Package: "linux-image-6.12.117+deb12-amd64-unsigned", Version: "6.12.117-1~deb12u1"},
		{Package: "linux-image-6.12.115+deb12-amd64-unsigned", Version: "6.12.115-2~deb12u1"},
	}
	SortNewestFirst(avail)
	if avail[0].Package != "linux-image-6.12.117+deb12-amd64-unsigned" || avail[2].Package != "linux-image-6.12.111+deb12-amd64-unsigned" {
		t.Fatalf("SortNewestFirst = %+v", avail)
	}
	pin := Pin{"linux-image-6.12.100+deb12-amd64-unsigned", "6.12.100-1~deb12u1"}
	err := UnavailableError(pin, avail)
	if !errors.Is(err, ErrKernelUnavailable) {
		t.Errorf("error %v is not ErrKernelUnavailable", err)
	}
	msg := err.Error()
	for _, want := range []string{
		pin.String(),
		"set KernelPin in tools/guest-image/guestimage/kernel.go to linux-image-6.12.117+deb12-amd64-unsigned=6.12.117-1~deb12u1",
		"linux-image-6.12.111+deb12-amd64-unsigned=6.12.111-1~deb12u1",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not contain %q", msg, want)
		}
	}
	if msg := UnavailableError(pin, nil).Error(); !strings.Contains(msg, "no other version") {
		t.Errorf("error without alternatives: %q", msg)
	}
}
