// Package containerdcfg decides how veil's runtime handlers enter a containerd
// configuration, as pure functions over file contents: it reads what a config
// declares (version, imports, runtimes), computes the one edit that makes the
// config import veil's drop-in file, undoes that edit, renders the drop-in,
// and judges whether a containerd version can run veil.
//
// The edit is textual and minimal (a path appended to `imports`, or one
// `imports = [...]` line added): comments, ordering and formatting survive,
// and undoing it gives the original bytes. Every edit is checked by decoding
// the old and the new document and comparing them: the only difference
// allowed is the one import.
package containerdcfg

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"reflect"
	"slices"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// Plugin keys holding CRI runtimes, by config version.
const (
	// PluginV3 is the CRI runtime plugin of containerd 2.x (config version 3).
	PluginV3 = "io.containerd.cri.v1.runtime"
	// PluginV2 is the CRI plugin of containerd 1.x (config version 2).
	PluginV2 = "io.containerd.grpc.v1.cri"
)

// MaxConfigVersion is the newest containerd config version veil knows:
// containerd 2.4 writes version 4 (server settings moved into plugins; the
// CRI runtime plugin is unchanged).
const MaxConfigVersion = 4

// Config is what a containerd config file declares that matters to veil.
type Config struct {
	// Version is the config's `version`; a file without one is version 1.
	Version int
	// Imports are the `imports` entries as written.
	Imports []string
	// Runtimes are the CRI runtime handler names the file defines, under
	// either plugin key (or the version 1 `cri` key).
	Runtimes []string
	// SandboxImage is the sandbox (pause) image the file pins, empty when
	// it names none: the CRI images plugin's pinned_images.sandbox
	// (version 3 and later), the CRI plugin's sandbox_image (version 2,
	// and version 1's `cri` key, which containerd migrates to it).
	SandboxImage string
}

// PluginImagesV3 is the CRI images plugin of containerd 2.x (config
// version 3): pinned_images, disable_snapshot_annotations.
const PluginImagesV3 = "io.containerd.cri.v1.images"

// DefaultSandboxRepository is the repository of containerd's default
// sandbox image, the one the CRI pulls when no config pins another; its
// tag depends on the containerd release (2.4: registry.k8s.io/pause:3.10.2).
const DefaultSandboxRepository = "registry.k8s.io/pause"

// Parse decodes a containerd config; name is used in errors.
func Parse(src []byte, name string) (Config, error) {
	doc, err := decode(src, name)
	if err != nil {
		return Config{}, err
	}
	var c Config
	switch v := doc["version"].(type) {
	case nil:
		c.Version = 1
	case int64:
		c.Version = int(v)
	default:
		return Config{}, fmt.Errorf("containerd config %s: key version: %v is not an integer", name, v)
	}
	if c.Version < 1 || c.Version > MaxConfigVersion {
		return Config{}, fmt.Errorf("containerd config %s: version %d is not one veil knows (1 to %d)", name, c.Version, MaxConfigVersion)
	}
	if c.Imports, err = imports(doc); err != nil {
		return Config{}, fmt.Errorf("containerd config %s: %w", name, err)
	}
	plugins, _ := doc["plugins"].(map[string]any)
	for _, p := range []string{PluginV3, PluginV2, "cri"} {
		rt := dig(plugins, p, "containerd", "runtimes")
		for name := range rt {
			if !slices.Contains(c.Runtimes, name) {
				c.Runtimes = append(c.Runtimes, name)
			}
		}
	}
	slices.Sort(c.Runtimes)
	if c.SandboxImage, err = sandboxImage(plugins, c.Version); err != nil {
		return Config{}, fmt.Errorf("containerd config %s: %w", name, err)
	}
	return c, nil
}

// sandboxImage is the sandbox image a config of version v pins, where
// containerd reads it for that version.
func sandboxImage(plugins map[string]any, v int) (string, error) {
	table, key, where := dig(plugins, PluginImagesV3, "pinned_images"), "sandbox", PluginImagesV3+".pinned_images.sandbox"
	switch v {
	case 1:
		table, key, where = dig(plugins, "cri"), "sandbox_image", "cri.sandbox_image"
	case 2:
		table, key, where = dig(plugins, PluginV2), "sandbox_image", PluginV2+".sandbox_image"
	}
	raw, ok := table[key]
	if !ok {
		return "", nil
	}
	s, ok := raw.(string)
	if !ok {
		return "", fmt.Errorf("key plugins.%s: %v is not a string", where, raw)
	}
	return s, nil
}

func decode(src []byte, name string) (map[string]any, error) {
	doc := map[string]any{}
	if err := toml.Unmarshal(src, &doc); err != nil {
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, col := de.Position()
			return nil, fmt.Errorf("containerd config %s:%d:%d is not valid TOML: %w", name, row, col, err)
		}
		return nil, fmt.Errorf("containerd config %s is not valid TOML: %w", name, err)
	}
	return doc, nil
}

func imports(doc map[string]any) ([]string, error) {
	raw, ok := doc["imports"]
	if !ok {
		return nil, nil
	}
	list, ok := raw.([]any)
	if !ok {
		return nil, fmt.Errorf("key imports: %v is not an array", raw)
	}
	out := make([]string, 0, len(list))
	for _, x := range list {
		s, ok := x.(string)
		if !ok {
			return nil, fmt.Errorf("key imports: %v is not a string", x)
		}
		out = append(out, s)
	}
	return out, nil
}

func dig(m map[string]any, keys ...string) map[string]any {
	for _, k := range keys {
		next, ok := m[k].(map[string]any)
		if !ok {
			return nil
		}
		m = next
	}
	return m
}

// Covers reports whether one of imports (as written in the config at
// configPath) names dropIn, the way containerd resolves them: relative
// entries against the config's directory, entries with `*` as globs.
func Covers(imports []string, configPath, dropIn string) bool {
	dropIn = filepath.Clean(dropIn)
	for _, imp := range imports {
		p := filepath.Clean(imp)
		if !filepath.IsAbs(p) {
			p = filepath.Join(filepath.Dir(configPath), p)
		}
		if strings.Contains(p, "*") {
			if ok, err := filepath.Match(p, dropIn); err == nil && ok {
				return true
			}
			continue
		}
		if p == dropIn {
			return true
		}
	}
	return false
}

// Edit is one insertion into a config file: Text at byte Offset of the
// original. It is recorded at install so uninstall can take it out again.
type Edit struct {
	Offset int    `json:"offset"`
	Text   string `json:"text"`
}

// Apply returns src with the edit made.
func (e Edit) Apply(src []byte) []byte {
	out := make([]byte, 0, len(src)+len(e.Text))
	out = append(out, src[:e.Offset]...)
	out = append(out, e.Text...)
	return append(out, src[e.Offset:]...)
}

// AddImport computes the edit that appends path to the root `imports` array
// of src, or adds `imports = [path]` after the `version` line (at the top of
// the file when there is none). The edited document is decoded and compared
// with the original: any difference other than the added import is an
// error, and nothing should be written.
func AddImport(src []byte, path, name string) (Edit, error) {
	if strings.ContainsAny(path, "\"\\\n\r\t") {
		return Edit{}, fmt.Errorf("import path %q: quotes, backslashes and control characters are not supported", path)
	}
	before, err := decode(src, name)
	if err != nil {
		return Edit{}, err
	}
	pairs, err := rootPairs(src)
	if err != nil {
		return Edit{}, fmt.Errorf("containerd config %s: %w", name, err)
	}
	quoted := `"` + path + `"`
	var e Edit
	found := false
	for _, kv := range pairs {
		if len(kv.key) != 1 || kv.key[0] != "imports" {
			continue
		}
		if !kv.isArray {
			return Edit{}, fmt.Errorf("containerd config %s: key imports is not an array", name)
		}
		found = true
		if len(kv.elems) == 0 {
			e = Edit{Offset: kv.valueStart + 1, Text: quoted}
		} else {
			e = Edit{Offset: kv.elems[len(kv.elems)-1].end, Text: ", " + quoted}
		}
	}
	if !found {
		eol := "\n"
		if bytes.Contains(src, []byte("\r\n")) {
			eol = "\r\n"
		}
		line := "imports = [" + quoted + "]"
		e = Edit{Offset: 0, Text: line + eol}
		for _, kv := range pairs {
			if len(kv.key) == 1 && kv.key[0] == "version" {
				e = Edit{Offset: kv.lineEnd, Text: eol + line}
			}
		}
	}
	after, err := decode(e.Apply(src), name+" (edited)")
	if err != nil {
		return Edit{}, fmt.Errorf("adding %s to imports: %w", path, err)
	}
	if err := onlyImportAdded(before, after, path); err != nil {
		return Edit{}, fmt.Errorf("adding %s to imports of containerd config %s: %w; not changing the file", path, name, err)
	}
	return e, nil
}

// RemoveImport undoes an Edit made by AddImport on cur, the config as it is
// now. When the edit's text is still at its offset it is cut there;
// otherwise (the file changed since) it is cut where it occurs, if it
// occurs exactly once. The result is checked like AddImport's.
func RemoveImport(cur []byte, e Edit, path, name string) ([]byte, error) {
	var off int
	if e.Offset >= 0 && e.Offset+len(e.Text) <= len(cur) && string(cur[e.Offset:e.Offset+len(e.Text)]) == e.Text {
		off = e.Offset
	} else if n := bytes.Count(cur, []byte(e.Text)); n == 1 {
		off = bytes.Index(cur, []byte(e.Text))
	} else {
		return nil, fmt.Errorf("containerd config %s no longer holds veil's import %q as installed (found %d times): remove %s from its imports by hand", name, e.Text, n, path)
	}
	out := make([]byte, 0, len(cur))
	out = append(out, cur[:off]...)
	out = append(out, cur[off+len(e.Text):]...)
	after, err := decode(cur, name)
	if err != nil {
		return nil, err
	}
	before, err := decode(out, name+" (restored)")
	if err != nil {
		return nil, fmt.Errorf("removing %s from imports: %w", path, err)
	}
	if err := onlyImportAdded(before, after, path); err != nil {
		return nil, fmt.Errorf("removing %s from imports of containerd config %s: %w; not changing the file", path, name, err)
	}
	return out, nil
}

// onlyImportAdded checks that after is before with path appended to imports.
func onlyImportAdded(before, after map[string]any, path string) error {
	bi, err := imports(before)
	if err != nil {
		return err
	}
	ai, err := imports(after)
	if err != nil {
		return err
	}
	if want := append(slices.Clone(bi), path); !slices.Equal(ai, want) {
		return fmt.Errorf("imports would be %q, want %q", ai, want)
	}
	b, a := maps.Clone(before), maps.Clone(after)
	delete(b, "imports")
	delete(a, "imports")
	if !reflect.DeepEqual(a, b) {
		return errors.New("the edit changes more than imports")
	}
	return nil
}
