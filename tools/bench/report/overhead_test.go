package report

import (
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

func TestRuntimeClassOverhead(t *testing.T) {
	r := sample()
	r.Machine.Commit = "abc1234"
	r.Config.VMBaseMemoryMiB = 256
	// veil, 1 pod: 250 MiB resident, 80 MiB of it guest RAM.
	r.Memory[0].TotalRSS = 250 << 20
	r.Memory[0].QEMUParts = map[string]uint64{PartGuestRAM: 80 << 20, PartTCG: 60 << 20}
	// veil, 3 pods: shared pages counted thrice; not the one used.
	r.Memory[1].TotalRSS = 600 << 20
	r.Memory[1].QEMUParts = map[string]uint64{PartGuestRAM: 200 << 20}
	o, ok := r.RuntimeClassOverhead("veil")
	if !ok {
		t.Fatal("no overhead from a run with veil's idle RSS")
	}
	// (256 + 250 - 80) x 1.1 = 468.6, rounded up to 32 MiB: 480.
	if o.MemoryMiB != 480 || o.BaseMiB != 256 || o.OwnMiB != 170 || o.TCGMiB != 32 {
		t.Errorf("overhead = %+v, want 480 MiB from base 256 + own 170, TCG 32 MiB", o)
	}
	if _, ok := r.RuntimeClassOverhead("runc"); ok {
		t.Error("an overhead from a handler without RSS figures")
	}
	r.Machine.Accel = "kvm"
	if o, _ := r.RuntimeClassOverhead("veil"); o.TCGMiB != 0 {
		t.Errorf("TCG cache under KVM = %d, want 0", o.TCGMiB)
	}
	r.Config.VMBaseMemoryMiB = 0
	if _, ok := r.RuntimeClassOverhead("veil"); ok {
		t.Error("an overhead from a run that did not record the VM's base memory")
	}
}

const manifest = `# header comment
apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata:
  name: veil
  annotations:
    veil.io/overhead: provisional
handler: veil
overhead:
  podFixed:
    cpu: 250m
    memory: 448Mi
---
# snp: not measured here
apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata:
  name: veil-snp
  annotations:
    veil.io/overhead: provisional
handler: veil-snp
overhead:
  podFixed:
    cpu: 250m
    memory: 448Mi
`

func TestApplyOverhead(t *testing.T) {
	o := Overhead{Handler: "veil", MemoryMiB: 320, BaseMiB: 256, OwnMiB: 170, TCGMiB: 64, Accel: "tcg", Commit: "abc1234", Date: time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC).Format("2006-01-02")}
	out, err := ApplyOverhead([]byte(manifest), []string{"veil"}, o)
	if err != nil {
		t.Fatal(err)
	}
	rc := runtimeClassDoc(t, out, 0)
	if rc.Overhead.PodFixed["memory"] != "320Mi" || rc.Overhead.PodFixed["cpu"] != "250m" {
		t.Errorf("veil podFixed = %v, want memory 320Mi, cpu unchanged", rc.Overhead.PodFixed)
	}
	if a := rc.Metadata.Annotations["veil.io/overhead"]; a != o.Note() || !strings.Contains(a, "commit abc1234") || !strings.Contains(a, "2026-12-07") {
		t.Errorf("annotation = %q, want the run's note", a)
	}
	if strings.Split(string(out), "\n---\n")[1] != strings.Split(manifest, "\n---\n")[1] || !strings.HasPrefix(string(out), "# header comment\n") {
		t.Errorf("other RuntimeClasses or comments changed:\n%s", out)
	}
	if _, err := ApplyOverhead([]byte(manifest), []string{"veil", "veil-dev"}, o); err == nil || !strings.Contains(err.Error(), "veil-dev") {
		t.Errorf("a handler without a RuntimeClass: %v, want an error naming veil-dev", err)
	}
}

// withVeilDev is sample with idle veil-dev pods measured too, whose VM has
// another base memory than veil's: each handler's overhead takes its own.
func withVeilDev() *Result {
	r := sample()
	r.Machine.Commit = "abc1234"
	r.Config.IdleHandlers = []string{"veil", "veil-dev", "runc"}
	r.Config.VMs = map[string]VM{
		"veil":     {VCPUs: 1, MemoryMiB: 2048, BaseMemoryMiB: 256, Boot: BootRootImage, TEE: "none", TCGTranslationCacheMiB: 32},
		"veil-dev": {VCPUs: 1, MemoryMiB: 2304, BaseMemoryMiB: 512, Boot: BootInitrd, TEE: "sample", TCGTranslationCacheMiB: 32},
	}
	r.Memory[0].TotalRSS = 250 << 20
	r.Memory[0].QEMUParts = map[string]uint64{PartGuestRAM: 80 << 20, PartTCG: 60 << 20, PartRootImage: 10 << 20}
	// Measured after runc's, as bench does.
	r.Memory = append(r.Memory,
		Memory{Handler: "veil-dev", Pods: 1, TotalPSS: 200 << 20, TotalRSS: 300 << 20, IdleCPU: 0.05,
			ByProcess: map[string]uint64{"qemu-system-x86_64": 185 << 20, "containerd-shim-veil-v2": 15 << 20},
			QEMUParts: map[string]uint64{PartGuestRAM: 100 << 20, PartInitrd: 14 << 20, PartTCG: 60 << 20, PartQEMUHeap: 8 << 20, PartFiles: 3 << 20}},
		Memory{Handler: "veil-dev", Pods: 3, TotalPSS: 540 << 20, TotalRSS: 850 << 20, IdleCPU: 0.12,
			ByProcess: map[string]uint64{"qemu-system-x86_64": 495 << 20, "containerd-shim-veil-v2": 45 << 20},
			QEMUParts: map[string]uint64{PartGuestRAM: 300 << 20, PartInitrd: 5 << 20, PartTCG: 180 << 20, PartQEMUHeap: 30 << 20, PartFiles: 10 << 20}},
	)
	return r
}

func TestRuntimeClassOverheadPerHandler(t *testing.T) {
	r := withVeilDev()
	veil, ok := r.RuntimeClassOverhead("veil")
	// (256 + 250 - 80) x 1.1 = 468.6: 480.
	if !ok || veil.MemoryMiB != 480 || veil.BaseMiB != 256 {
		t.Errorf("veil overhead = %+v (ok %v), want 480 MiB from its base 256", veil, ok)
	}
	dev, ok := r.RuntimeClassOverhead("veil-dev")
	// veil-dev's own base: (512 + 300 - 100) x 1.1 = 783.2: 800.
	if !ok || dev.MemoryMiB != 800 || dev.BaseMiB != 512 || dev.OwnMiB != 200 || dev.TCGMiB != 32 {
		t.Errorf("veil-dev overhead = %+v (ok %v), want 800 MiB from its base 512 + own 200", dev, ok)
	}
	// A handler whose VM the run did not record has no overhead, even
	// with memory samples: no base to add.
	delete(r.Config.VMs, "veil-dev")
	if o, ok := r.RuntimeClassOverhead("veil-dev"); ok {
		t.Errorf("an overhead without veil-dev's VM: %+v", o)
	}
}

func TestRuntimeClassOverheadsStandIns(t *testing.T) {
	r := withVeilDev()
	got := map[string]Overhead{}
	var order []string
	for _, o := range r.RuntimeClassOverheads() {
		got[o.RuntimeClass()] = o
		order = append(order, o.RuntimeClass())
	}
	if strings.Join(order, ",") != "veil,veil-dev,veil-snp,veil-tdx" {
		t.Fatalf("RuntimeClasses = %v, want veil, veil-dev, then veil-dev's stand-ins veil-snp, veil-tdx", order)
	}
	for _, class := range []string{"veil-snp", "veil-tdx"} {
		o := got[class]
		if o.Handler != "veil-dev" || o.MemoryMiB != got["veil-dev"].MemoryMiB {
			t.Errorf("%s overhead = %+v, want veil-dev's %d MiB", class, o, got["veil-dev"].MemoryMiB)
		}
	}
	snp := got["veil-snp"].Note()
	for _, want := range []string{"measured as veil-dev", "without AMD SEV-SNP", "not in it", "32 MiB TCG cache", "commit abc1234", "one idle veil-dev pod", "guest base memory 512 MiB"} {
		if !strings.Contains(snp, want) {
			t.Errorf("veil-snp note lacks %q: %s", want, snp)
		}
	}
	if tdx := got["veil-tdx"].Note(); !strings.Contains(tdx, "without Intel TDX") || strings.Contains(tdx, "SEV-SNP") {
		t.Errorf("veil-tdx note names the wrong TEE: %s", tdx)
	}
	// veil-dev's and veil's own notes make no stand-in claim.
	for _, h := range []string{"veil", "veil-dev"} {
		if n := got[h].Note(); strings.Contains(n, "measured as") || !strings.Contains(n, "one idle "+h+" pod") {
			t.Errorf("%s note: %s", h, n)
		}
	}
	// Under KVM there is no TCG cache to point out.
	r.Machine.Accel = "kvm"
	for _, o := range r.RuntimeClassOverheads() {
		if strings.Contains(o.Note(), "TCG cache in it") {
			t.Errorf("%s note under KVM mentions a TCG cache: %s", o.RuntimeClass(), o.Note())
		}
	}
	// Without veil-dev measured, no stand-ins.
	r = sample()
	r.Config.VMBaseMemoryMiB = 256
	r.Memory[0].TotalRSS = 250 << 20
	r.Memory[0].QEMUParts = map[string]uint64{PartGuestRAM: 80 << 20}
	if ovs := r.RuntimeClassOverheads(); len(ovs) != 1 || ovs[0].RuntimeClass() != "veil" {
		t.Errorf("overheads of a veil-only run = %+v, want veil's alone", ovs)
	}
}

const devManifest = `apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata:
  name: veil-dev
  annotations:
    veil.io/overhead: provisional
handler: veil-dev
overhead:
  podFixed:
    cpu: 250m
    memory: 448Mi
`

// A stand-in's figure and note land in its own RuntimeClass, and only
// there.
func TestApplyStandInOverhead(t *testing.T) {
	var snp Overhead
	for _, o := range withVeilDev().RuntimeClassOverheads() {
		if o.RuntimeClass() == "veil-snp" {
			snp = o
		}
	}
	in := manifest + "---\n" + devManifest
	out, err := ApplyOverhead([]byte(in), []string{snp.RuntimeClass()}, snp)
	if err != nil {
		t.Fatal(err)
	}
	rc := runtimeClassDoc(t, out, 1)
	if rc.Overhead.PodFixed["memory"] != "800Mi" || rc.Metadata.Annotations["veil.io/overhead"] != snp.Note() {
		t.Errorf("veil-snp: podFixed %v, annotation %q; want 800Mi and the stand-in note", rc.Overhead.PodFixed, rc.Metadata.Annotations["veil.io/overhead"])
	}
	inDocs, docs := strings.Split(in, "\n---\n"), strings.Split(string(out), "\n---\n")
	if docs[0] != inDocs[0] || docs[2] != inDocs[2] {
		t.Errorf("veil's or veil-dev's RuntimeClass changed:\n%s", out)
	}
}

// rcDoc is what the tests read of a RuntimeClass document.
type rcDoc struct {
	Metadata struct{ Annotations map[string]string }
	Overhead struct{ PodFixed map[string]string }
}

// runtimeClassDoc decodes document i of a rewritten manifest.
func runtimeClassDoc(t *testing.T, manifest []byte, i int) rcDoc {
	t.Helper()
	docs := strings.Split(string(manifest), "\n---\n")
	var rc rcDoc
	if i >= len(docs) {
		t.Fatalf("rewritten manifest has %d documents, want document %d:\n%s", len(docs), i, manifest)
	}
	if err := yaml.Unmarshal([]byte(docs[i]), &rc); err != nil {
		t.Fatalf("rewritten manifest is not YAML: %v\n%s", err, manifest)
	}
	return rc
}
