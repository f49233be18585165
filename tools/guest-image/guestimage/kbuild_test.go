package guestimage

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseConfig(t *testing.T) {
	got, err := ParseConfig("net.config", []byte(`# comment
CONFIG_NET=y

# CONFIG_MODULES is not set
CONFIG_LOCALVERSION="-veil"
# CONFIG_FOO is a comment, not an option
`))
	if err != nil {
		t.Fatal(err)
	}
	want := []Option{
		{Name: "CONFIG_NET", Value: "y", From: "net.config:2"},
		{Name: "CONFIG_MODULES", Value: "", From: "net.config:4"},
		{Name: "CONFIG_LOCALVERSION", Value: `"-veil"`, From: "net.config:5"},
	}
	if len(got) != len(want) {
		t.Fatalf("ParseConfig = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("option %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	for _, bad := range []string{"NET=y", "CONFIG_NET", "CONFIG_NET=", "CONFIG NET=y"} {
		if _, err := ParseConfig("f", []byte(bad)); err == nil || !strings.Contains(err.Error(), "f:1") {
			t.Errorf("ParseConfig(%q) error %v, want one naming f:1", bad, err)
		}
	}
}

// TestCheckConfigNamesLostOptions: Kconfig drops what it cannot satisfy
// without a word; the build must fail naming each such option, where it
// was asked for and what it became.
func TestCheckConfigNamesLostOptions(t *testing.T) {
	want := []Option{
		{Name: "CONFIG_NET", Value: "y", From: "net.config:2"},
		{Name: "CONFIG_FS_DAX", Value: "y", From: "fs.config:9"},
		{Name: "CONFIG_MODULES", Value: "", From: "base.config:4"},
		{Name: "CONFIG_SEV_GUEST", Value: "y", From: "confidential.config:3"},
		{Name: "CONFIG_NR_CPUS", Value: "64", From: "base.config:7"},
	}
	final := []Option{
		{Name: "CONFIG_NET", Value: "y"},
		{Name: "CONFIG_MODULES", Value: "y"},   // asked off, came out on
		{Name: "CONFIG_SEV_GUEST", Value: "m"}, // built as a module, not in
		{Name: "CONFIG_NR_CPUS", Value: "64"},  // kept
		{Name: "CONFIG_EXTRA", Value: "y"},     // not asked for: fine
	}
	err := CheckConfig(want, final)
	if err == nil {
		t.Fatal("CheckConfig passed a config that lost options")
	}
	msg := err.Error()
	for _, s := range []string{
		`CONFIG_FS_DAX=y (fs.config:9) became "# CONFIG_FS_DAX is not set"`,
		`# CONFIG_MODULES is not set (base.config:4) became "CONFIG_MODULES=y"`,
		`CONFIG_SEV_GUEST=y (confidential.config:3) became "CONFIG_SEV_GUEST=m"`,
		"3 option(s)",
	} {
		if !strings.Contains(msg, s) {
			t.Errorf("error %q does not say %q", msg, s)
		}
	}
	if strings.Contains(msg, "CONFIG_NET=") || strings.Contains(msg, "NR_CPUS") {
		t.Errorf("error %q names an option that survived", msg)
	}
	if err := CheckConfig(want[:1], final); err != nil {
		t.Errorf("CheckConfig of a surviving option: %v", err)
	}
}

// TestFragmentsInRepo: the committed fragments parse, ask for no modules,
// build everything in, and ask for what the guest depends on.
func TestFragmentsInRepo(t *testing.T) {
	frags, err := ReadFragments(filepath.Join("..", "kernel"))
	if err != nil {
		t.Fatal(err)
	}
	set := map[string]string{}
	for _, f := range frags {
		opts, err := ParseConfig(f.Name, f.Data)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range opts {
			if o.Value == "m" {
				t.Errorf("%s: %s is a module; the guest has no module loader", o.From, o)
			}
			if prev, ok := set[o.Name]; ok && prev != o.Value {
				t.Errorf("%s: %s contradicts an earlier fragment (%q)", o.From, o, prev)
			}
			set[o.Name] = o.Value
		}
	}
	for _, name := range []string{
		"CONFIG_PVH", "CONFIG_EFI_STUB", "CONFIG_VIRTIO_PCI", "CONFIG_VIRTIO_BLK", "CONFIG_VIRTIO_NET",
		"CONFIG_VIRTIO_CONSOLE", "CONFIG_VIRTIO_VSOCKETS", "CONFIG_NET_9P_VIRTIO", "CONFIG_9P_FS", "CONFIG_VIRTIO_PMEM",
		"CONFIG_LIBNVDIMM", "CONFIG_BLK_DEV_PMEM", "CONFIG_ZONE_DEVICE", // the root image on virtio-pmem (rootfs.go)
		"CONFIG_OVERLAY_FS", "CONFIG_EROFS_FS", "CONFIG_EXT4_FS", "CONFIG_FS_DAX", "CONFIG_TMPFS", "CONFIG_DM_CRYPT",
		"CONFIG_HOTPLUG_PCI_PCIE", "CONFIG_NETFILTER_XT_TARGET_REDIRECT", "CONFIG_IP_NF_NAT", "CONFIG_VETH", "CONFIG_BRIDGE",
		"CONFIG_CGROUP_BPF", "CONFIG_MEMCG", "CONFIG_USER_NS", "CONFIG_SECCOMP_FILTER",
		"CONFIG_SEV_GUEST", "CONFIG_AMD_MEM_ENCRYPT", "CONFIG_INTEL_TDX_GUEST", "CONFIG_TDX_GUEST_DRIVER",
		"CONFIG_TSM_REPORTS", "CONFIG_UNACCEPTED_MEMORY",
	} {
		if set[name] != "y" {
			t.Errorf("fragments set %s=%q, want y", name, set[name])
		}
	}
	if v, ok := set["CONFIG_MODULES"]; !ok || v != "" {
		t.Errorf("fragments do not say # CONFIG_MODULES is not set (got %q, present %v)", v, ok)
	}
}

func TestKernelKeyChangesWithEachInput(t *testing.T) {
	tc := Toolchain{GCC: "gcc (Debian 12.2.0-14) 12.2.0", Binutils: "GNU ld (GNU Binutils for Debian) 2.40"}
	base := KernelKey("src", "frag", tc)
	seen := map[string]string{base: "base"}
	for name, k := range map[string]string{
		"source":    KernelKey("src2", "frag", tc),
		"fragments": KernelKey("src", "frag2", tc),
		"gcc":       KernelKey("src", "frag", Toolchain{GCC: "gcc 13", Binutils: tc.Binutils}),
		"binutils":  KernelKey("src", "frag", Toolchain{GCC: tc.GCC, Binutils: "ld 2.41"}),
	} {
		if prev, ok := seen[k]; ok {
			t.Errorf("changing the %s gives the key of %s", name, prev)
		}
		seen[k] = name
	}
	if KernelKey("src", "frag", tc) != base {
		t.Error("the same inputs give another key")
	}
}

func TestFragmentsDigest(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("b.config", "CONFIG_B=y\n")
	write("a.config", "CONFIG_A=y\n")
	write("notes.txt", "not a fragment")
	frags, err := ReadFragments(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(frags) != 2 || frags[0].Name != "a.config" || frags[1].Name != "b.config" {
		t.Fatalf("ReadFragments = %+v, want a.config, b.config", frags)
	}
	d1 := FragmentsDigest(frags)
	// Moving a line from one fragment to another changes the digest.
	moved := []Fragment{{Name: "a.config", Data: []byte("CONFIG_A=y\nCONFIG_B=y\n")}, {Name: "b.config"}}
	if FragmentsDigest(moved) == d1 {
		t.Error("moving an option between fragments keeps the digest")
	}
	if _, err := ReadFragments(t.TempDir()); err == nil {
		t.Error("ReadFragments of an empty dir gives no error")
	}
}
