// Package storage mounts what the host asks for in the guest (virtio-9p
// shares, tmpfs, bind mounts) and resolves paths inside the sandbox's
// shared filesystem without letting them escape it.
package storage

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
	securejoin "github.com/cyphar/filepath-securejoin"
)

// Resolve returns the path of rel inside root. rel must be relative, must
// not contain "..", and must not leave root through a symlink; any of those
// is errdefs.ErrInvalidArgument. A path that does not exist is
// errdefs.ErrNotFound.
func Resolve(root, rel string) (string, error) {
	if err := CheckRelative(rel); err != nil {
		return "", err
	}
	realRoot, err := filepath.EvalSymlinks(root)
	if err != nil {
		return "", fmt.Errorf("resolving shared directory %s: %w", root, err)
	}
	// The scoped path treats symlinks as if root were "/"; the followed
	// path is where the kernel would really go. They differ exactly when a
	// symlink points out of root.
	scoped, err := securejoin.SecureJoin(realRoot, rel)
	if err != nil {
		return "", fmt.Errorf("resolving %q in %s: %w", rel, root, err)
	}
	followed, err := filepath.EvalSymlinks(filepath.Join(realRoot, rel))
	if errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("path %q in %s: %w", rel, root, errdefs.ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("resolving %q in %s: %w", rel, root, err)
	}
	if followed != scoped || !within(realRoot, followed) {
		return "", fmt.Errorf("path %q leaves %s through a symlink: %w", rel, root, errdefs.ErrInvalidArgument)
	}
	return followed, nil
}

// CheckRelative rejects a path that is empty, absolute or has a ".."
// element, with errdefs.ErrInvalidArgument.
func CheckRelative(rel string) error {
	if rel == "" {
		return fmt.Errorf("empty path: %w", errdefs.ErrInvalidArgument)
	}
	if filepath.IsAbs(rel) {
		return fmt.Errorf("path %q is absolute; give a path relative to the shared directory: %w", rel, errdefs.ErrInvalidArgument)
	}
	for _, el := range strings.Split(rel, "/") {
		if el == ".." {
			return fmt.Errorf("path %q contains \"..\": %w", rel, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

func within(root, p string) bool {
	return p == root || strings.HasPrefix(p, root+string(filepath.Separator))
}
