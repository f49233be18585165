package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"

	"github.com/veil-runtime/veil/attestation/policy"
)

// Store is the broker's state in one directory:
//
//	attestation-policy.json   policy.Attestation
//	resource-policy.json      policy.Resources
//	resources/<repo>/<type>/<tag>   resource bytes (mode 0600)
//
// Writes are atomic (temporary file and rename).
type Store struct {
	dir string
	mu  sync.RWMutex
}

// ErrNotFound is returned for a resource the store does not have.
var ErrNotFound = errors.New("not found")

const (
	attestationPolicyFile = "attestation-policy.json"
	resourcePolicyFile    = "resource-policy.json"
	resourcesDir          = "resources"
)

// OpenStore creates dir if needed and returns the store in it.
func OpenStore(dir string) (*Store, error) {
	if err := os.MkdirAll(filepath.Join(dir, resourcesDir), 0o700); err != nil {
		return nil, fmt.Errorf("creating store %s: %w", dir, err)
	}
	return &Store{dir: dir}, nil
}

// Dir is the store's directory.
func (s *Store) Dir() string { return s.dir }

var resourceSegment = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// ResourcePath validates "repo/type/tag" and returns its three parts.
func ResourcePath(p string) ([3]string, error) {
	parts := strings.Split(p, "/")
	if len(parts) != 3 {
		return [3]string{}, fmt.Errorf("resource path %q: want repo/type/tag", p)
	}
	for _, part := range parts {
		if !resourceSegment.MatchString(part) {
			return [3]string{}, fmt.Errorf("resource path %q: segment %q: want letters, digits, '.', '_' or '-'", p, part)
		}
	}
	return [3]string{parts[0], parts[1], parts[2]}, nil
}

// AttestationPolicy returns the attestation policy; with none stored, the
// empty policy, which accepts nothing.
func (s *Store) AttestationPolicy() (policy.Attestation, error) {
	var p policy.Attestation
	err := s.readJSON(attestationPolicyFile, &p)
	return p, err
}

// SetAttestationPolicy stores p.
func (s *Store) SetAttestationPolicy(p policy.Attestation) error {
	return s.writeJSON(attestationPolicyFile, p)
}

// ResourcePolicy returns the resource policy; with none stored, the empty
// policy, which grants nothing.
func (s *Store) ResourcePolicy() (policy.Resources, error) {
	var p policy.Resources
	err := s.readJSON(resourcePolicyFile, &p)
	return p, err
}

// SetResourcePolicy validates and stores p.
func (s *Store) SetResourcePolicy(p policy.Resources) error {
	if err := p.Validate(); err != nil {
		return err
	}
	return s.writeJSON(resourcePolicyFile, p)
}

// Resource returns a resource's bytes.
func (s *Store) Resource(p string) ([]byte, error) {
	parts, err := ResourcePath(p)
	if err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	data, err := os.ReadFile(filepath.Join(s.dir, resourcesDir, parts[0], parts[1], parts[2]))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("resource %s: %w", p, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("reading resource %s: %w", p, err)
	}
	return data, nil
}

// SetResource stores a resource.
func (s *Store) SetResource(p string, data []byte) error {
	parts, err := ResourcePath(p)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	dir := filepath.Join(s.dir, resourcesDir, parts[0], parts[1])
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating resource directory: %w", err)
	}
	return writeAtomic(filepath.Join(dir, parts[2]), data)
}

// Resources lists the stored resources' paths (repo/type/tag), sorted.
func (s *Store) Resources() ([]string, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	root := filepath.Join(s.dir, resourcesDir)
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || strings.HasPrefix(d.Name(), ".tmp-") {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		if rel = filepath.ToSlash(rel); strings.Count(rel, "/") == 2 {
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing resources: %w", err)
	}
	return out, nil
}

// DeleteResource removes a resource, and its type and repo directories
// when they are left empty.
func (s *Store) DeleteResource(p string) error {
	parts, err := ResourcePath(p)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	file := filepath.Join(s.dir, resourcesDir, parts[0], parts[1], parts[2])
	if err := os.Remove(file); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("resource %s: %w", p, ErrNotFound)
	} else if err != nil {
		return fmt.Errorf("deleting resource %s: %w", p, err)
	}
	// Not empty is fine: other resources live there.
	_ = os.Remove(filepath.Dir(file))
	_ = os.Remove(filepath.Dir(filepath.Dir(file)))
	return nil
}

func (s *Store) readJSON(name string, v any) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	raw, err := os.ReadFile(filepath.Join(s.dir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading %s: %w", name, err)
	}
	if err := DecodeStrict(raw, v); err != nil {
		return fmt.Errorf("decoding %s: %w", filepath.Join(s.dir, name), err)
	}
	return nil
}

func (s *Store) writeJSON(name string, v any) error {
	raw, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding %s: %w", name, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return writeAtomic(filepath.Join(s.dir, name), append(raw, '\n'))
}

func writeAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// DecodeStrict decodes JSON, rejecting unknown fields and trailing data.
func DecodeStrict(raw []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}
