package harness

import (
	"reflect"
	"testing"
)

const report = `[{"SuiteDescription":"CRI validation","SpecReports":[
 {"LeafNodeType":"BeforeSuite","State":"passed"},
 {"ContainerHierarchyTexts":["[k8s.io] Container","runtime should support basic operations"],"LeafNodeText":"runtime should support exec","LeafNodeType":"It","State":"passed","NumAttempts":2,
  "Failure":{"Message":"first attempt timed out","Location":{"FileName":"/x/container.go","LineNumber":7}}},
 {"ContainerHierarchyTexts":["[k8s.io] Image Manager"],"LeafNodeText":"public image with digest","LeafNodeType":"It","State":"failed","NumAttempts":1,
  "Failure":{"Message":"Expected\n  <bool>: false\n","Location":{"FileName":"/x/image.go","LineNumber":42}}},
 {"ContainerHierarchyTexts":["[k8s.io] AppArmor"],"LeafNodeText":"blocks writes","LeafNodeType":"It","State":"skipped"}
]}]`

func TestParseGinkgoReport(t *testing.T) {
	got, err := ParseGinkgoReport([]byte(report))
	if err != nil {
		t.Fatal(err)
	}
	want := []SpecResult{
		{Name: "[k8s.io] AppArmor / blocks writes", State: "skipped"},
		{Name: "[k8s.io] Container / runtime should support basic operations / runtime should support exec", State: "passed", Attempts: 2},
		{Name: "[k8s.io] Image Manager / public image with digest", State: "failed", Attempts: 1, Failure: "Expected\n  <bool>: false (image.go:42)"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ParseGinkgoReport = %+v, want %+v", got, want)
	}
	if c := Count(got); c["passed"] != 1 || c["failed"] != 1 || c["skipped"] != 1 {
		t.Errorf("Count = %v", c)
	}
	if p := Passed(got); !reflect.DeepEqual(p, []string{want[1].Name}) {
		t.Errorf("Passed = %v", p)
	}
	if r := Retried(got); !reflect.DeepEqual(r, []string{want[1].Name + " (2 attempts)"}) {
		t.Errorf("Retried = %v", r)
	}
	f := Failures([]string{want[2].Name, want[1].Name, "gone"}, got)
	if len(f) != 2 || f[0] != want[2].Name+": failed: "+want[2].Failure || f[1] != "gone: did not run" {
		t.Errorf("Failures = %q", f)
	}
	if _, err := ParseGinkgoReport([]byte("not json")); err == nil {
		t.Error("ParseGinkgoReport accepted a broken report")
	}
}

func TestRegressions(t *testing.T) {
	for _, tc := range []struct {
		name      string
		want, got []string
		missing   []string
	}{
		{"all pass", []string{"a", "b"}, []string{"b", "a", "c"}, nil},
		{"one lost", []string{"a", "b"}, []string{"a"}, []string{"b"}},
		{"nothing ran", []string{"b", "a"}, nil, []string{"a", "b"}},
		{"empty baseline", nil, []string{"a"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Regressions(tc.want, tc.got); !reflect.DeepEqual(got, tc.missing) {
				t.Errorf("Regressions = %v, want %v", got, tc.missing)
			}
		})
	}
}

func TestRan(t *testing.T) {
	results := []SpecResult{{Name: "a", State: "passed"}, {Name: "b", State: "failed"}, {Name: "c", State: "skipped"}}
	if got := Ran([]string{"a", "b", "c", "d"}, results); !reflect.DeepEqual(got, []string{"a", "b"}) {
		t.Errorf("Ran = %v, want [a b]", got)
	}
}
