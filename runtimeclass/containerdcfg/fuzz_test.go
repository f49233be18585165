package containerdcfg

import (
	"slices"
	"testing"
)

// Whatever the config, AddImport either refuses or makes an edit that
// imports the drop-in and that RemoveImport undoes to the original bytes.
// It never panics.
func FuzzAddImportRoundTrip(f *testing.F) {
	for _, tc := range importCases {
		f.Add(tc.in)
	}
	f.Add("imports = [ # c\n ]\n")
	f.Add("a = '''x\n'''\nimports = [\"\"\"y\"\"\"]")
	f.Add("version = 3\nimports = [\n'a', # ]\n'b'\n]\n[t]\nimports = 1\n")
	f.Fuzz(func(t *testing.T, in string) {
		e, err := AddImport([]byte(in), dropIn, "fuzz.toml")
		if err != nil {
			return
		}
		out := e.Apply([]byte(in))
		c, err := Parse(out, "fuzz.toml")
		if err == nil && !slices.Contains(c.Imports, dropIn) {
			t.Fatalf("edited config imports %q", c.Imports)
		}
		back, err := RemoveImport(out, e, dropIn, "fuzz.toml")
		if err != nil {
			t.Fatalf("RemoveImport after AddImport: %v\n%q", err, out)
		}
		if string(back) != in {
			t.Fatalf("round trip changed the config:\n%q\n%q", in, back)
		}
	})
}
