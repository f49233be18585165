// Package hostcheck tells what a node can run veil with: hardware
// virtualisation, vhost-vsock, QEMU and its TEE support, SEV-SNP and TDX on
// the host, the cgroup layout, containerd's version and the installed guest
// image. Gather reads the machine into Facts; Evaluate turns Facts into a
// Report with pure decisions, so every rule is table-tested without a
// machine. `veil check` prints the report, and `veil install` labels the node
// from it (TEE).
package hostcheck

import (
	"bufio"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/veil-runtime/veil/hypervisor"
	"github.com/veil-runtime/veil/runtimeclass/containerdcfg"
)

// Facts are what Gather read from the machine, uninterpreted.
type Facts struct {
	// KVM is what the accelerator choice reads (/dev/kvm usability, CPU
	// flags, kvm modules): the shim reads the same with the same function.
	KVM        hypervisor.KVMHost
	VhostVsock bool // /dev/vhost-vsock exists

	QEMUPath        string // "" when not found
	QEMUVersionOut  string // `qemu-system-x86_64 --version`
	QEMUObjectsOut  string // `qemu-system-x86_64 -object help`
	QEMUErr         string
	SEVSNPParam     string // /sys/module/kvm_amd/parameters/sev_snp, "" when missing
	TDXParam        string // /sys/module/kvm_intel/parameters/tdx, "" when missing
	CgroupRootMagic int64  // statfs f_type of /sys/fs/cgroup
	CgroupUnified   bool   // /sys/fs/cgroup/unified is a cgroup2 mount
	// KubeletFiles are the kubelet's config and flag files that exist
	// (KubeletConfigFiles), path -> content.
	KubeletFiles map[string]string
	// SystemdBooted: /run/systemd/system exists (systemd is PID 1).
	SystemdBooted bool

	ContainerdPath       string
	ContainerdVersionOut string
	ContainerdErr        string

	GuestDir      string
	ManifestErr   string            // reading or decoding manifest.json
	ManifestFiles map[string]string // artifact name -> sha256 the manifest records
	FileSums      map[string]string // artifact name -> sha256 on disk
	FileErrs      map[string]string // artifact name -> why it could not be read
}

// Report is what the node can run. Field names are the --json keys.
type Report struct {
	KVM        KVM     `json:"kvm"`
	VhostVsock bool    `json:"vhost_vsock"`
	QEMU       QEMU    `json:"qemu"`
	HostTEE    HostTEE `json:"host_tee"`
	Cgroups    string  `json:"cgroups"`
	// CgroupDriver is the kubelet's cgroup driver, which decides where the
	// shim puts pod VMs.
	CgroupDriver CgroupDriver `json:"cgroup_driver"`
	Containerd   Containerd   `json:"containerd"`
	GuestImage   GuestImage   `json:"guest_image"`
	// TEE is the node's veil.io/tee label: snp, tdx or none.
	TEE string `json:"tee"`
	// Problems are the reasons veil cannot run pods here; empty when it can.
	Problems []string `json:"problems"`
}

// KVM says whether hardware virtualisation is usable: the shim's own
// choice for accel = "auto" (hypervisor.ChooseAccel) over the same facts.
type KVM struct {
	DevKVM bool `json:"dev_kvm"`
	// APIVersion is KVM_GET_API_VERSION on /dev/kvm (12), 0 when it could
	// not be asked.
	APIVersion int `json:"api_version"`
	// CPUFlag is vmx, svm or "" (/proc/cpuinfo).
	CPUFlag  string   `json:"cpu_flag"`
	Modules  []string `json:"modules"`
	Hardware bool     `json:"hardware"`
	Accel    string   `json:"accel"` // what the shim picks with accel=auto: kvm or tcg
	Note     string   `json:"note"`
}

// CgroupDriver is the kubelet's cgroup driver as its files say.
type CgroupDriver struct {
	// Kubelet is systemd, cgroupfs, or "" when no kubelet file was found
	// (containerd and crictl users: the cgroup parent decides).
	Kubelet string `json:"kubelet"`
	// Source is the file that said so.
	Source        string `json:"source,omitempty"`
	SystemdBooted bool   `json:"systemd_booted"`
	Note          string `json:"note"`
}

// KubeletConfigFiles are where the kubelet's cgroup driver is read from, in
// order: kubeadm's KubeletConfiguration, then flag files (--cgroup-driver).
var KubeletConfigFiles = []string{
	"/var/lib/kubelet/config.yaml",
	"/var/lib/kubelet/kubeadm-flags.env",
	"/etc/default/kubelet",
	"/etc/sysconfig/kubelet",
}

var (
	kubeletConfigDriverRE = regexp.MustCompile(`(?m)^cgroupDriver:\s*["']?([A-Za-z]+)["']?\s*(?:#.*)?$`)
	kubeletFlagDriverRE   = regexp.MustCompile(`--cgroup-driver[= ]["']?([A-Za-z]+)`)
)

// evalCgroupDriver reads the kubelet's cgroup driver. A KubeletConfiguration
// without cgroupDriver means the kubelet's default, cgroupfs.
func evalCgroupDriver(f Facts) CgroupDriver {
	d := CgroupDriver{SystemdBooted: f.SystemdBooted}
	for _, p := range KubeletConfigFiles {
		content, ok := f.KubeletFiles[p]
		if !ok {
			continue
		}
		re := kubeletFlagDriverRE
		if strings.HasSuffix(p, ".yaml") {
			re = kubeletConfigDriverRE
		}
		if m := re.FindStringSubmatch(content); m != nil {
			d.Kubelet, d.Source = strings.ToLower(m[1]), p
			break
		}
		if strings.HasSuffix(p, ".yaml") {
			d.Kubelet, d.Source = "cgroupfs", p+" (no cgroupDriver: the kubelet's default)"
			break
		}
	}
	switch {
	case d.Kubelet == "systemd" && !d.SystemdBooted:
		d.Note = "the kubelet uses the systemd cgroup driver but systemd is not PID 1 here: pod VMs cannot be placed in their pods' scopes"
	case d.Kubelet == "systemd":
		d.Note = "pod VMs run in systemd scopes in their pods' slices (D-Bus), under the pods' limits and RuntimeClass overhead"
	case d.Kubelet == "cgroupfs":
		d.Note = "pod VMs run in their sandboxes' cgroupfs cgroups, under the pods' limits and RuntimeClass overhead"
	case d.Kubelet != "":
		d.Note = fmt.Sprintf("unknown kubelet cgroup driver %q", d.Kubelet)
	default:
		d.Note = "no kubelet configuration found: the sandbox's cgroup parent decides (slice:prefix:name means systemd)"
	}
	return d
}

// QEMU is the hypervisor binary and the TEEs it can launch.
type QEMU struct {
	Path    string `json:"path"`
	Version string `json:"version"`
	SNP     bool   `json:"snp"`
	TDX     bool   `json:"tdx"`
	Note    string `json:"note,omitempty"`
}

// HostTEE is the host kernel's TEE support.
type HostTEE struct {
	SEVSNP bool `json:"sev_snp"`
	TDX    bool `json:"tdx"`
}

// Containerd is the node's containerd.
type Containerd struct {
	Path      string `json:"path"`
	Version   string `json:"version"`
	Supported bool   `json:"supported"`
	Note      string `json:"note,omitempty"`
}

// GuestImage is the installed guest kernel and initrd against manifest.json.
type GuestImage struct {
	Dir      string   `json:"dir"`
	Present  bool     `json:"present"`
	Matches  bool     `json:"matches"`
	Problems []string `json:"problems,omitempty"`
}

// Minimum QEMU versions for launching confidential guests: the ones the
// QEMU driver checks before a launch (hypervisor.MinQEMU).
var (
	QEMUForSNP = [2]int{hypervisor.MinQEMUForSNP.Major, hypervisor.MinQEMUForSNP.Minor}
	QEMUForTDX = [2]int{hypervisor.MinQEMUForTDX.Major, hypervisor.MinQEMUForTDX.Minor}
)

// Cgroup filesystem magics (statfs f_type).
const (
	cgroup2Magic = 0x63677270
	tmpfsMagic   = 0x01021994
	cgroup1Magic = 0x27e0eb
)

// Evaluate decides the report from facts.
func Evaluate(f Facts) Report {
	r := Report{Problems: []string{}}
	r.KVM = evalKVM(f)
	r.VhostVsock = f.VhostVsock
	r.QEMU = evalQEMU(f)
	r.HostTEE = HostTEE{SEVSNP: paramOn(f.SEVSNPParam), TDX: paramOn(f.TDXParam)}
	r.Cgroups = CgroupMode(f.CgroupRootMagic, f.CgroupUnified)
	r.CgroupDriver = evalCgroupDriver(f)
	r.Containerd = evalContainerd(f)
	r.GuestImage = evalGuest(f)
	r.TEE = TEE(r)

	if r.QEMU.Path == "" || r.QEMU.Version == "" {
		r.Problems = append(r.Problems, "QEMU: "+r.QEMU.Note)
	}
	if !r.GuestImage.Matches {
		r.Problems = append(r.Problems, "guest image: "+strings.Join(r.GuestImage.Problems, "; "))
	}
	if !r.Containerd.Supported {
		r.Problems = append(r.Problems, "containerd: "+r.Containerd.Note)
	}
	if r.CgroupDriver.Kubelet == "systemd" && !r.CgroupDriver.SystemdBooted {
		r.Problems = append(r.Problems, "cgroup driver: "+r.CgroupDriver.Note)
	}
	if r.Cgroups == "unknown" {
		r.Problems = append(r.Problems, "cgroups: /sys/fs/cgroup is neither cgroup v1 nor v2")
	}
	return r
}

func evalKVM(f Facts) KVM {
	h := f.KVM
	k := KVM{DevKVM: h.DevKVM, APIVersion: h.APIVersion, Modules: h.Modules}
	if k.Modules == nil {
		k.Modules = []string{}
	}
	switch {
	case h.VMX:
		k.CPUFlag = "vmx"
	case h.SVM:
		k.CPUFlag = "svm"
	}
	accel, reason := hypervisor.ChooseAccel(hypervisor.AccelAuto, h)
	k.Accel, k.Note = string(accel), reason
	k.Hardware = accel == hypervisor.AccelKVM
	return k
}

var qemuVersionRE = regexp.MustCompile(`QEMU emulator version (\d+)\.(\d+)(?:\.(\d+))?`)

// QEMUVersion reads "QEMU emulator version 7.2.22 (Debian ...)".
func QEMUVersion(out string) (major, minor int, version string, ok bool) {
	m := qemuVersionRE.FindStringSubmatch(out)
	if m == nil {
		return 0, 0, "", false
	}
	major, _ = strconv.Atoi(m[1])
	minor, _ = strconv.Atoi(m[2])
	version = m[1] + "." + m[2]
	if m[3] != "" {
		version += "." + m[3]
	}
	return major, minor, version, true
}

func atLeast(major, minor int, want [2]int) bool {
	return major > want[0] || major == want[0] && minor >= want[1]
}

func evalQEMU(f Facts) QEMU {
	q := QEMU{Path: f.QEMUPath}
	if f.QEMUPath == "" {
		q.Note = "qemu-system-x86_64 not found: install QEMU (Debian: qemu-system-x86)"
		if f.QEMUErr != "" {
			q.Note += " (" + f.QEMUErr + ")"
		}
		return q
	}
	major, minor, v, ok := QEMUVersion(f.QEMUVersionOut)
	if !ok {
		q.Note = fmt.Sprintf("cannot read the version of %s: %q %s", f.QEMUPath, strings.TrimSpace(f.QEMUVersionOut), f.QEMUErr)
		return q
	}
	q.Version = v
	// The object types are the real test (a distro may backport); the
	// version decides when the object list could not be read.
	objects := objectTypes(f.QEMUObjectsOut)
	if len(objects) > 0 {
		q.SNP = objects["sev-snp-guest"]
		q.TDX = objects["tdx-guest"]
	} else {
		q.SNP = atLeast(major, minor, QEMUForSNP)
		q.TDX = atLeast(major, minor, QEMUForTDX)
	}
	var missing []string
	if !q.SNP {
		missing = append(missing, fmt.Sprintf("SEV-SNP needs QEMU >= %d.%d (sev-snp-guest)", QEMUForSNP[0], QEMUForSNP[1]))
	}
	if !q.TDX {
		missing = append(missing, fmt.Sprintf("TDX needs QEMU >= %d.%d (tdx-guest)", QEMUForTDX[0], QEMUForTDX[1]))
	}
	q.Note = strings.Join(missing, "; ")
	return q
}

func objectTypes(out string) map[string]bool {
	m := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasSuffix(line, ":") {
			continue
		}
		m[line] = true
	}
	return m
}

func paramOn(v string) bool {
	switch strings.TrimSpace(v) {
	case "Y", "y", "1":
		return true
	}
	return false
}

// CgroupMode names the host's cgroup layout from the statfs type of
// /sys/fs/cgroup and whether /sys/fs/cgroup/unified is cgroup2: v2, hybrid,
// v1 or unknown.
func CgroupMode(rootMagic int64, unified bool) string {
	switch rootMagic {
	case cgroup2Magic:
		return "v2"
	case tmpfsMagic:
		if unified {
			return "hybrid"
		}
		return "v1"
	case cgroup1Magic:
		return "v1"
	}
	return "unknown"
}

func evalContainerd(f Facts) Containerd {
	c := Containerd{Path: f.ContainerdPath}
	if f.ContainerdPath == "" {
		c.Note = "containerd not found on PATH (give --containerd)"
		return c
	}
	v, err := containerdcfg.ParseVersion(f.ContainerdVersionOut)
	if err != nil {
		c.Note = fmt.Sprintf("running %s --version: %s %s", f.ContainerdPath, err, f.ContainerdErr)
		return c
	}
	c.Version = v.Raw
	if v.Less(containerdcfg.MinVersion) {
		c.Note = fmt.Sprintf("containerd %s is too old: veil needs >= %s", v.Raw, containerdcfg.MinVersion.Raw)
		return c
	}
	c.Supported = true
	return c
}

func evalGuest(f Facts) GuestImage {
	g := GuestImage{Dir: f.GuestDir}
	if f.ManifestErr != "" {
		g.Problems = append(g.Problems, f.ManifestErr)
		return g
	}
	if len(f.ManifestFiles) == 0 {
		g.Problems = append(g.Problems, "manifest.json lists no artifacts")
		return g
	}
	g.Present = true
	names := make([]string, 0, len(f.ManifestFiles))
	for n := range f.ManifestFiles {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		want := f.ManifestFiles[n]
		switch got, ok := f.FileSums[n]; {
		case f.FileErrs[n] != "":
			g.Present = false
			g.Problems = append(g.Problems, n+": "+f.FileErrs[n])
		case !ok:
			g.Present = false
			g.Problems = append(g.Problems, n+": not read")
		case got != want:
			g.Problems = append(g.Problems, fmt.Sprintf("%s: sha256 %s, manifest says %s", n, got, want))
		}
	}
	g.Matches = len(g.Problems) == 0
	return g
}

// TEE is the node's veil.io/tee label: the TEE the host kernel, QEMU and
// the hardware KVM module all support (with a usable /dev/kvm), else none.
func TEE(r Report) string {
	switch {
	case r.HostTEE.SEVSNP && r.QEMU.SNP && slices.Contains(r.KVM.Modules, "kvm_amd") && r.KVM.Hardware:
		return "snp"
	case r.HostTEE.TDX && r.QEMU.TDX && slices.Contains(r.KVM.Modules, "kvm_intel") && r.KVM.Hardware:
		return "tdx"
	}
	return "none"
}
