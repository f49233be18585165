package hostcheck

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/veil-runtime/veil/hypervisor"
)

const qemu72 = "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright (c) 2003-2022 Fabrice Bellard\n"
const objects72 = "List of user creatable objects:\n  authz-list\n  sev-guest\n  thread-context\n"

// TestEvalKVM: the report's accelerator is the shim's choice
// (hypervisor.ChooseAccel) over the same facts, for the real-host kinds.
func TestEvalKVM(t *testing.T) {
	for _, tc := range []struct {
		name     string
		h        hypervisor.KVMHost
		hardware bool
		accel    string
		note     string
	}{
		{"intel, kvm built in", hypervisor.KVMHost{DevKVM: true, APIVersion: 12, VMX: true}, true, "kvm", "hardware virtualisation"},
		{"amd, kvm_amd module", hypervisor.KVMHost{DevKVM: true, APIVersion: 12, SVM: true, Modules: []string{"kvm", "kvm_amd"}}, true, "kvm", "svm"},
		{"kvm_pvm is not hardware", hypervisor.KVMHost{DevKVM: true, APIVersion: 12, Modules: []string{"kvm", "kvm_pvm"}}, false, "tcg", "kvm_pvm, a paravirtual KVM"},
		{"nothing", hypervisor.KVMHost{}, false, "tcg", "no /dev/kvm"},
		{"module and flags without /dev/kvm", hypervisor.KVMHost{VMX: true, Modules: []string{"kvm_intel"}}, false, "tcg", "no /dev/kvm"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := evalKVM(Facts{KVM: tc.h})
			if k.Hardware != tc.hardware || k.Accel != tc.accel || !strings.Contains(k.Note, tc.note) {
				t.Fatalf("got %+v, want hardware %v accel %s note ~%q", k, tc.hardware, tc.accel, tc.note)
			}
			want, _ := hypervisor.ChooseAccel(hypervisor.AccelAuto, tc.h)
			if k.Accel != string(want) {
				t.Fatalf("veil check says %s, the shim would pick %s", k.Accel, want)
			}
		})
	}
}

func TestEvalQEMU(t *testing.T) {
	for _, tc := range []struct {
		name          string
		f             Facts
		version       string
		snp, tdx      bool
		noteFragments []string
	}{
		{"debian 7.2", Facts{QEMUPath: "/usr/bin/qemu-system-x86_64", QEMUVersionOut: qemu72, QEMUObjectsOut: objects72}, "7.2.22", false, false, []string{"SEV-SNP needs QEMU >= 9.1", "TDX needs QEMU >= 10.1"}},
		{"9.1 by objects", Facts{QEMUPath: "q", QEMUVersionOut: "QEMU emulator version 9.1.0", QEMUObjectsOut: "List:\n  sev-guest\n  sev-snp-guest\n"}, "9.1.0", true, false, []string{"TDX needs"}},
		{"10.1 by objects", Facts{QEMUPath: "q", QEMUVersionOut: "QEMU emulator version 10.1.2", QEMUObjectsOut: "List:\n  sev-snp-guest\n  tdx-guest\n"}, "10.1.2", true, true, nil},
		{"backport: 8.2 with sev-snp-guest", Facts{QEMUPath: "q", QEMUVersionOut: "QEMU emulator version 8.2.2", QEMUObjectsOut: "List:\n  sev-snp-guest\n"}, "8.2.2", true, false, nil},
		{"no object list: by version", Facts{QEMUPath: "q", QEMUVersionOut: "QEMU emulator version 10.1"}, "10.1", true, true, nil},
		{"no object list, 9.0", Facts{QEMUPath: "q", QEMUVersionOut: "QEMU emulator version 9.0.2"}, "9.0.2", false, false, nil},
		{"missing", Facts{QEMUErr: "qemu-system-x86_64 not found"}, "", false, false, []string{"install QEMU"}},
		{"garbage", Facts{QEMUPath: "q", QEMUVersionOut: "Segmentation fault"}, "", false, false, []string{"cannot read the version"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := evalQEMU(tc.f)
			if q.Version != tc.version || q.SNP != tc.snp || q.TDX != tc.tdx {
				t.Fatalf("got %+v, want version %q snp %v tdx %v", q, tc.version, tc.snp, tc.tdx)
			}
			for _, n := range tc.noteFragments {
				if !strings.Contains(q.Note, n) {
					t.Errorf("note %q lacks %q", q.Note, n)
				}
			}
		})
	}
}

func TestCgroupMode(t *testing.T) {
	for _, tc := range []struct {
		magic   int64
		unified bool
		want    string
	}{
		{cgroup2Magic, false, "v2"},
		{tmpfsMagic, true, "hybrid"},
		{tmpfsMagic, false, "v1"},
		{0, false, "unknown"},
	} {
		if got := CgroupMode(tc.magic, tc.unified); got != tc.want {
			t.Errorf("CgroupMode(%#x, %v) = %s, want %s", tc.magic, tc.unified, got, tc.want)
		}
	}
}

func TestEvalContainerd(t *testing.T) {
	for _, tc := range []struct {
		name      string
		f         Facts
		supported bool
		note      string
	}{
		{"2.4.2", Facts{ContainerdPath: "/usr/bin/containerd", ContainerdVersionOut: "containerd github.com/containerd/containerd/v2 v2.4.2 abc"}, true, ""},
		{"1.7", Facts{ContainerdPath: "/usr/bin/containerd", ContainerdVersionOut: "containerd containerd.io 1.7.24 abc"}, false, "1.7.24 is too old"},
		{"missing", Facts{}, false, "not found"},
		{"broken", Facts{ContainerdPath: "/usr/bin/containerd", ContainerdVersionOut: "", ContainerdErr: "exit status 1"}, false, "exit status 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := evalContainerd(tc.f)
			if c.Supported != tc.supported || !strings.Contains(c.Note, tc.note) {
				t.Fatalf("got %+v", c)
			}
		})
	}
}

func TestEvalGuest(t *testing.T) {
	ok := map[string]string{"vmlinuz": "aa", "initrd.img": "bb"}
	for _, tc := range []struct {
		name             string
		f                Facts
		present, matches bool
		problem          string
	}{
		{"match", Facts{ManifestFiles: ok, FileSums: ok}, true, true, ""},
		{"no manifest", Facts{ManifestErr: "manifest.json is missing"}, false, false, "missing"},
		{"changed initrd", Facts{ManifestFiles: ok, FileSums: map[string]string{"vmlinuz": "aa", "initrd.img": "cc"}}, true, false, "initrd.img: sha256 cc, manifest says bb"},
		{"missing kernel", Facts{ManifestFiles: ok, FileSums: map[string]string{"initrd.img": "bb"}, FileErrs: map[string]string{"vmlinuz": "no such file"}}, false, false, "vmlinuz: no such file"},
		{"empty manifest", Facts{ManifestFiles: map[string]string{}}, false, false, "no artifacts"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := evalGuest(tc.f)
			if g.Present != tc.present || g.Matches != tc.matches || !strings.Contains(strings.Join(g.Problems, "; "), tc.problem) {
				t.Fatalf("got %+v", g)
			}
		})
	}
}

func TestTEE(t *testing.T) {
	snpHost := Report{KVM: KVM{DevKVM: true, Hardware: true, Modules: []string{"kvm", "kvm_amd"}}, QEMU: QEMU{SNP: true}, HostTEE: HostTEE{SEVSNP: true}}
	tdxHost := Report{KVM: KVM{DevKVM: true, Hardware: true, Modules: []string{"kvm", "kvm_intel"}}, QEMU: QEMU{TDX: true, SNP: true}, HostTEE: HostTEE{TDX: true}}
	oldQEMU := snpHost
	oldQEMU.QEMU = QEMU{}
	noKVM := tdxHost
	noKVM.KVM.DevKVM, noKVM.KVM.Hardware = false, false
	for _, tc := range []struct {
		name string
		r    Report
		want string
	}{
		{"snp", snpHost, "snp"},
		{"tdx", tdxHost, "tdx"},
		{"snp host, old qemu", oldQEMU, "none"},
		{"tdx host without /dev/kvm", noKVM, "none"},
		{"nothing", Report{}, "none"},
	} {
		if got := TEE(tc.r); got != tc.want {
			t.Errorf("%s: TEE = %s, want %s", tc.name, got, tc.want)
		}
	}
}

// writeGuest writes a fake guest image with a manifest recording its sums.
func writeGuest(t *testing.T, dir string) {
	t.Helper()
	arts := map[string]any{}
	for name, body := range map[string]string{"vmlinuz": "kernel bytes", "initrd.img": "initrd bytes"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		s := sha256.Sum256([]byte(body))
		arts[name] = map[string]any{"sha256": hex.EncodeToString(s[:]), "size": len(body)}
	}
	b, _ := json.Marshal(map[string]any{"kernel": map[string]any{"release": "x"}, "artifacts": arts})
	if err := os.WriteFile(filepath.Join(dir, "manifest.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestGatherOnTheDevMachine runs the real gathering on this project's
// development and CI machine (DESIGN.md, "Machine facts") and checks the
// report says what that machine is: at most a paravirtual KVM (kvm_pvm), no
// hardware virtualisation, no vhost-vsock, Debian's QEMU 7.2 without SNP or
// TDX, no host TEE, hybrid cgroups. The guest image is a fake one in a temp
// dir, checked against its manifest, then corrupted.
func TestGatherOnTheDevMachine(t *testing.T) {
	dir := t.TempDir()
	writeGuest(t, dir)
	r := Evaluate(Gather(context.Background(), Options{GuestDir: dir}))

	// Machines of this kind either have a /dev/kvm from kvm_pvm or, when
	// their kernel is itself a kvm-pvm guest, no /dev/kvm (and no
	// /proc/modules) at all; neither is hardware virtualisation.
	if r.KVM.Hardware || r.KVM.Accel != "tcg" {
		t.Errorf("kvm: %+v, want no hardware virtualisation, tcg", r.KVM)
	}
	if r.KVM.DevKVM && len(r.KVM.Modules) > 0 && !slices.Contains(r.KVM.Modules, "kvm_pvm") {
		t.Errorf("kvm: %+v, want a /dev/kvm from kvm_pvm", r.KVM)
	}
	if r.VhostVsock {
		t.Error("vhost_vsock: true, want false")
	}
	if !strings.HasPrefix(r.QEMU.Version, "7.2.") || r.QEMU.SNP || r.QEMU.TDX || r.QEMU.Path == "" {
		t.Errorf("qemu: %+v, want 7.2 without SNP or TDX", r.QEMU)
	}
	if r.HostTEE.SEVSNP || r.HostTEE.TDX || r.TEE != "none" {
		t.Errorf("host TEE %+v, label %s, want none", r.HostTEE, r.TEE)
	}
	if r.Cgroups != "hybrid" {
		t.Errorf("cgroups: %s, want hybrid", r.Cgroups)
	}
	if !r.GuestImage.Matches || !r.GuestImage.Present {
		t.Errorf("guest image: %+v, want present and matching", r.GuestImage)
	}

	var js bytes.Buffer
	if err := json.NewEncoder(&js).Encode(r); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"hardware":false`, `"vhost_vsock":false`, `"snp":false`, `"tdx":false`, `"cgroups":"hybrid"`, `"tee":"none"`} {
		if !strings.Contains(js.String(), key) {
			t.Errorf("--json output lacks %s: %s", key, js.String())
		}
	}
	var text bytes.Buffer
	if err := WriteText(&text, r); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text.String(), "software emulation (TCG)") || !strings.Contains(text.String(), "launches SEV-SNP no, TDX no") {
		t.Errorf("text report:\n%s", text.String())
	}

	if err := os.WriteFile(filepath.Join(dir, "initrd.img"), []byte("tampered"), 0o644); err != nil {
		t.Fatal(err)
	}
	r = Evaluate(Gather(context.Background(), Options{GuestDir: dir}))
	if r.GuestImage.Matches || !strings.Contains(strings.Join(r.Problems, "\n"), "initrd.img: sha256") {
		t.Errorf("tampered initrd: guest image %+v, problems %q", r.GuestImage, r.Problems)
	}
}

// Under --root (the installer's pod), files come from the host's root, and
// kernel paths fall back to this process's view when the root lacks them.
func TestGatherUnderRoot(t *testing.T) {
	root := t.TempDir()
	guest := filepath.Join(root, "opt/veil/share/veil")
	if err := os.MkdirAll(guest, 0o755); err != nil {
		t.Fatal(err)
	}
	writeGuest(t, guest)
	f := Gather(context.Background(), Options{Root: root, GuestDir: "/opt/veil/share/veil"})
	r := Evaluate(f)
	if !r.GuestImage.Matches || r.GuestImage.Dir != "/opt/veil/share/veil" {
		t.Errorf("guest image under root: %+v", r.GuestImage)
	}
	if !slices.Contains(r.KVM.Modules, "kvm_pvm") || r.Cgroups != "hybrid" {
		t.Errorf("kernel facts under an empty root should fall back to this machine's: %+v %s", r.KVM, r.Cgroups)
	}
	if r.QEMU.Path != "" || r.Containerd.Path != "" {
		t.Errorf("binaries found in an empty root: qemu %q containerd %q", r.QEMU.Path, r.Containerd.Path)
	}
}

// kubeadmConfig is the head of the KubeletConfiguration kubeadm writes.
const kubeadmConfig = `apiVersion: kubelet.config.k8s.io/v1beta1
authentication:
  anonymous:
    enabled: false
cgroupDriver: systemd
clusterDNS:
- 10.96.0.10
`

func TestEvalCgroupDriver(t *testing.T) {
	for _, tc := range []struct {
		name    string
		files   map[string]string
		systemd bool
		driver  string
		source  string
		problem bool
	}{
		{"kubeadm node", map[string]string{"/var/lib/kubelet/config.yaml": kubeadmConfig}, true, "systemd", "/var/lib/kubelet/config.yaml", false},
		{"config without cgroupDriver", map[string]string{"/var/lib/kubelet/config.yaml": "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n"}, true, "cgroupfs", "/var/lib/kubelet/config.yaml (no cgroupDriver: the kubelet's default)", false},
		{"quoted cgroupfs", map[string]string{"/var/lib/kubelet/config.yaml": "cgroupDriver: \"cgroupfs\" # set by hand\n"}, false, "cgroupfs", "/var/lib/kubelet/config.yaml", false},
		{"nested key is not the driver", map[string]string{"/var/lib/kubelet/config.yaml": "foo:\n  cgroupDriver: systemd\n"}, true, "cgroupfs", "/var/lib/kubelet/config.yaml (no cgroupDriver: the kubelet's default)", false},
		{"old flags file", map[string]string{"/var/lib/kubelet/kubeadm-flags.env": `KUBELET_KUBEADM_ARGS="--cgroup-driver=systemd --container-runtime-endpoint=unix:///run/containerd/containerd.sock"`}, true, "systemd", "/var/lib/kubelet/kubeadm-flags.env", false},
		{"sysconfig", map[string]string{"/etc/sysconfig/kubelet": "KUBELET_EXTRA_ARGS=--cgroup-driver cgroupfs\n"}, true, "cgroupfs", "/etc/sysconfig/kubelet", false},
		{"no kubelet", nil, false, "", "", false},
		{"systemd driver without systemd", map[string]string{"/var/lib/kubelet/config.yaml": kubeadmConfig}, false, "systemd", "/var/lib/kubelet/config.yaml", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := Evaluate(Facts{KubeletFiles: tc.files, SystemdBooted: tc.systemd})
			d := r.CgroupDriver
			if d.Kubelet != tc.driver || d.Source != tc.source || d.Note == "" {
				t.Fatalf("got %+v, want driver %q from %q", d, tc.driver, tc.source)
			}
			hasProblem := strings.Contains(strings.Join(r.Problems, "\n"), "cgroup driver:")
			if hasProblem != tc.problem {
				t.Errorf("problems %q, want a cgroup driver problem: %v", r.Problems, tc.problem)
			}
		})
	}
}

func TestGatherKubeletCgroupDriver(t *testing.T) {
	root := t.TempDir()
	for name, content := range map[string]string{"var/lib/kubelet/config.yaml": kubeadmConfig, "run/systemd/system/.keep": ""} {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	r := Evaluate(Gather(context.Background(), Options{Root: root, GuestDir: "/nowhere"}))
	if r.CgroupDriver.Kubelet != "systemd" || !r.CgroupDriver.SystemdBooted {
		t.Errorf("cgroup driver under root: %+v", r.CgroupDriver)
	}
	var text bytes.Buffer
	if err := WriteText(&text, r); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text.String(), "cgroup driver: kubelet systemd (/var/lib/kubelet/config.yaml); systemd is PID 1: yes; pod VMs run in systemd scopes") {
		t.Errorf("text report:\n%s", text.String())
	}
}
