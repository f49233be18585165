package boot

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// ModulesFile lists the kernel modules the image wants loaded: one absolute
// .ko path per line, in load order.
const ModulesFile = "/etc/veil/modules"

// ParseModules returns the module paths of a modules file; blank lines and
// lines starting with '#' are skipped. A relative path is an error naming
// the line.
func ParseModules(content string) ([]string, error) {
	var out []string
	for i, line := range strings.Split(content, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if !strings.HasPrefix(line, "/") {
			return nil, fmt.Errorf("%s line %d: %q is not an absolute path to a .ko file", ModulesFile, i+1, line)
		}
		out = append(out, line)
	}
	return out, nil
}

// LoadModules loads the modules listed in ModulesFile; a missing file means
// none. A module that is already loaded (EEXIST) is fine.
func LoadModules(log *slog.Logger) error {
	b, err := os.ReadFile(ModulesFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading module list: %w", err)
	}
	paths, err := ParseModules(string(b))
	if err != nil {
		return err
	}
	for _, p := range paths {
		if err := loadModule(p); err != nil {
			return err
		}
		log.Debug("loaded kernel module", "path", p)
	}
	return nil
}

func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("opening kernel module: %w", err)
	}
	defer f.Close()
	err = unix.FinitModule(int(f.Fd()), "", 0)
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("loading kernel module %s: %w", path, err)
	}
	return nil
}
