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
	r.Memory[0].TotalRSS = 250 << 20 // veil, 1 pod
	r.Memory[1].TotalRSS = 600 << 20 // veil, 3 pods: shared pages counted thrice
	o, ok := r.RuntimeClassOverhead("veil")
	if !ok {
		t.Fatal("no overhead from a run with veil's idle RSS")
	}
	// 250 MiB x 1.25 = 312.5, rounded up to 32 MiB: 320.
	if o.MemoryMiB != 320 || o.Pods != 1 || o.RSSPerPodMiB != 250 || o.TCGMiB != 32 {
		t.Errorf("overhead = %+v, want 320 MiB from 1 pod at 250 MiB, TCG 32 MiB", o)
	}
	if _, ok := r.RuntimeClassOverhead("runc"); ok {
		t.Error("an overhead from a handler without RSS figures")
	}
	r.Machine.Accel = "kvm"
	if o, _ := r.RuntimeClassOverhead("veil"); o.TCGMiB != 0 {
		t.Errorf("TCG cache under KVM = %d, want 0", o.TCGMiB)
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
	o := Overhead{Handler: "veil", MemoryMiB: 320, RSSPerPodMiB: 250, Pods: 1, TCGMiB: 64, Accel: "tcg", Commit: "abc1234", Date: time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC).Format("2006-01-02")}
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
