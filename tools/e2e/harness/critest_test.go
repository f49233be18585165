package harness

import (
	"reflect"
	"testing"
)

const report = `[{"SuiteDescription":"CRI validation","SpecReports":[
 {"LeafNodeType":"BeforeSuite","State":"passed"},
 {"ContainerHierarchyTexts":["[k8s.io] Container","runtime should support basic operations"],"LeafNodeText":"runtime should support exec","LeafNodeType":"It","State":"passed"},
 {"ContainerHierarchyTexts":["[k8s.io] Image Manager"],"LeafNodeText":"public image with digest","LeafNodeType":"It","State":"failed"},
 {"ContainerHierarchyTexts":["[k8s.io] AppArmor"],"LeafNodeText":"blocks writes","LeafNodeType":"It","State":"skipped"}
]}]`

func TestParseGinkgoReport(t *testing.T) {
	got, err := ParseGinkgoReport([]byte(report))
	if err != nil {
		t.Fatal(err)
	}
	want := []SpecResult{
		{"[k8s.io] AppArmor / blocks writes", "skipped"},
		{"[k8s.io] Container / runtime should support basic operations / runtime should support exec", "passed"},
		{"[k8s.io] Image Manager / public image with digest", "failed"},
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
	results := []SpecResult{{"a", "passed"}, {"b", "failed"}, {"c", "skipped"}}
	if got := Ran([]string{"a", "b", "c", "d"}, results); !reflect.DeepEqual(got, []string{"a", "b"}) {
		t.Errorf("Ran = %v, want [a b]", got)
	}
}
