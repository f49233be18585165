package config

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

// keys lists the configuration's keys, dotted, from the struct tags (the
// one source of the known keys).
func keys(t reflect.Type, prefix string) []string {
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if name == "" || name == "-" {
			continue
		}
		if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeOf(Duration(0)) {
			out = append(out, keys(f.Type, prefix+name+".")...)
			continue
		}
		out = append(out, prefix+name)
	}
	return out
}

// TestEveryKeyIsDocumented: each key of Config is in the package doc's
// list (config.go) and in shim/README.md's table, so neither falls behind
// a new key.
func TestEveryKeyIsDocumented(t *testing.T) {
	src, err := os.ReadFile("config.go")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	all := keys(reflect.TypeOf(Config{}), "")
	if len(all) < 20 {
		t.Fatalf("only %d keys found: %v", len(all), all)
	}
	for _, k := range all {
		leaf := k[strings.LastIndex(k, ".")+1:]
		if !strings.Contains(string(src), "\n//\t"+leaf+" = ") {
			t.Errorf("key %s is not in the package doc's list of keys (config.go)", k)
		}
		if !strings.Contains(string(readme), "| `"+k+"` |") {
			t.Errorf("key %s is not in shim/README.md's table of keys", k)
		}
	}
}
