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
	docs := strings.Split(string(out), "\n---\n")
	var rc struct {
		Metadata struct{ Annotations map[string]string }
		Overhead struct{ PodFixed map[string]string }
	}
	if err := yaml.Unmarshal([]byte(docs[0]), &rc); err != nil {
		t.Fatalf("rewritten manifest is not YAML: %v\n%s", err, out)
	}
	if rc.Overhead.PodFixed["memory"] != "320Mi" || rc.Overhead.PodFixed["cpu"] != "250m" {
		t.Errorf("veil podFixed = %v, want memory 320Mi, cpu unchanged", rc.Overhead.PodFixed)
	}
	if a := rc.Metadata.Annotations["veil.io/overhead"]; a != o.Note() || !strings.Contains(a, "commit abc1234") || !strings.Contains(a, "2026-12-07") {
		t.Errorf("annotation = %q, want the run's note", a)
	}
	if docs[1] != strings.Split(manifest, "\n---\n")[1] || !strings.HasPrefix(string(out), "# header comment\n") {
		t.Errorf("other RuntimeClasses or comments changed:\n%s", out)
	}
	if _, err := ApplyOverhead([]byte(manifest), []string{"veil", "veil-dev"}, o); err == nil || !strings.Contains(err.Error(), "veil-dev") {
		t.Errorf("a handler without a RuntimeClass: %v, want an error naming veil-dev", err)
	}
}
