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

// TEEModulesFile lists the TEE guest drivers (sev_guest, tdx_guest), in
// the format of ModulesFile. They refuse to load (ENODEV) outside their
// TEE, so the agent loads them only when launched as a TEE guest.
const TEEModulesFile = "/etc/veil/modules-tee"

// LoadTEEModules loads the modules listed in TEEModulesFile; a missing file
// means none. A driver for another TEE (ENODEV) is skipped; at least one
// must load when the file lists any, or the guest is not in a TEE.
func LoadTEEModules(log *slog.Logger) error {
	b, err := os.ReadFile(TEEModulesFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading TEE module list: %w", err)
	}
	paths, err := ParseModules(string(b))
	if err != nil {
		return fmt.Errorf("%s: %w", TEEModulesFile, err)
	}
	var loaded int
	for _, p := range paths {
		err := loadModule(p)
		if errors.Is(err, unix.ENODEV) {
			log.Debug("TEE guest driver not for this guest", "path", p)
			continue
		}
		if err != nil {
			return err
		}
		loaded++
		log.Info("loaded TEE guest driver", "path", p)
	}
	if len(paths) > 0 && loaded == 0 {
		return fmt.Errorf("no TEE guest driver of %s loads here (each reports ENODEV): the guest is not in a TEE", TEEModulesFile)
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
