package podpolicy

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"testing"

	"github.com/veil-runtime/veil/guest-agent/policy"
)

// FuzzGenerate decodes a manifest and generates its policies: nothing
// panics, every generated policy parses back as the agent reads it and
// equals what was generated, and no pattern the generator invents (all
// but those for a variable the manifest names) admits LD_PRELOAD or PATH.
func FuzzGenerate(f *testing.F) {
	for _, name := range []string{"pod.yaml", "deployment.yaml", "workloads.yaml", "nameuser.yaml"} {
		data, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	cms, err := os.ReadFile(filepath.Join("testdata", "configmaps.yaml"))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		objs, err := Decode("fuzz", data)
		if err != nil {
			return
		}
		more, err := Decode("configmaps.yaml", cms)
		if err != nil {
			t.Fatal(err)
		}
		objs.Merge(more)
		for i := range objs.Workloads {
			w := &objs.Workloads[i]
			res, err := Generate(w, objs, testImages)
			if err != nil {
				continue
			}
			doc, err := PolicyTOML(res.Policy)
			if err != nil {
				t.Fatalf("%s: %v", w.ID(), err)
			}
			back, err := policy.Parse(doc)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(normalize(back), normalize(res.Policy)) {
				t.Fatalf("%s: the policy does not survive TOML:\n%+v\n%+v", w.ID(), back, res.Policy)
			}
			named := map[string]bool{}
			for _, c := range append(w.Spec.InitContainers, w.Spec.Containers...) {
				for _, e := range c.Env {
					named[exactName(e.Name)] = true
				}
			}
			for _, c := range res.Policy.Containers {
				for _, p := range c.EnvPatterns {
					if named[p.Name] {
						continue
					}
					re := regexp.MustCompile(p.Name)
					if re.MatchString("LD_PRELOAD") || re.MatchString("PATH") {
						t.Fatalf("%s container %s: pattern %q admits LD_PRELOAD or PATH", w.ID(), c.Name, p.Name)
					}
				}
			}
		}
	})
}

// normalize makes empty and nil slices and maps compare equal (TOML
// writes neither), but capabilities: nil means containerd's default set,
// empty none.
func normalize(p policy.Policy) policy.Policy {
	for i := range p.Containers {
		c := &p.Containers[i]
		if len(c.Env) == 0 {
			c.Env = nil
		}
		if len(c.EnvPatterns) == 0 {
			c.EnvPatterns = nil
		}
		if len(c.Mounts) == 0 {
			c.Mounts = nil
		}
		if len(c.Exec) == 0 {
			c.Exec = nil
		}
		if len(c.Sysctls) == 0 {
			c.Sysctls = nil
		}
		if len(c.User.AdditionalGIDs) == 0 {
			c.User.AdditionalGIDs = nil
		}
	}
	return p
}
