package snapshotter

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/veil-runtime/veil/runtimeclass/containerdcfg"
)

// SandboxImage reads containerd's config at path the way containerd loads
// it (cmd/containerd/server/config.LoadConfig): the file, then the files it
// imports — relative entries against the importing file's directory,
// entries with `*` as globs — breadth first, each file once, later files
// overriding earlier ones. It returns the sandbox image the last file that
// names one pins (containerdcfg.Config.SandboxImage) and that file's path;
// ref is empty when no file does (containerd then pulls its default,
// containerdcfg.DefaultSandboxRepository).
func SandboxImage(path string) (ref, file string, err error) {
	loaded := map[string]bool{}
	pending := []string{path}
	for len(pending) > 0 {
		p := pending[0]
		pending = pending[1:]
		if loaded[p] {
			continue
		}
		loaded[p] = true
		src, err := os.ReadFile(p)
		if err != nil {
			return "", "", fmt.Errorf("reading containerd config: %w", err)
		}
		c, err := containerdcfg.Parse(src, p)
		if err != nil {
			return "", "", err
		}
		if c.SandboxImage != "" {
			ref, file = c.SandboxImage, p
		}
		for _, imp := range c.Imports {
			imp = filepath.Clean(imp)
			if !filepath.IsAbs(imp) {
				imp = filepath.Join(filepath.Dir(p), imp)
			}
			if !strings.Contains(imp, "*") {
				pending = append(pending, imp)
				continue
			}
			matches, err := filepath.Glob(imp)
			if err != nil {
				return "", "", fmt.Errorf("containerd config %s: import %q: %w", p, imp, err)
			}
			pending = append(pending, matches...)
		}
	}
	return ref, file, nil
}
