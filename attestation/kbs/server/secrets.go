package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

const (
	tokenKeyFile   = "token-key.pem" //nolint:gosec // G101: a file name, not a credential
	adminTokenFile = "admin-token"
)

// TokenKey returns the key that signs attestation tokens, creating it on
// first use so tokens survive restarts.
func (s *Store) TokenKey() (*ecdsa.PrivateKey, error) {
	path := filepath.Join(s.dir, tokenKeyFile)
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("generating token key: %w", err)
		}
		der, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			return nil, fmt.Errorf("encoding token key: %w", err)
		}
		if err := writeAtomic(path, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})); err != nil {
			return nil, err
		}
		return key, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading token key: %w", err)
	}
	block, _ := pem.Decode(raw)
	if block == nil {
		return nil, fmt.Errorf("token key %s: no PEM block", path)
	}
	key, err := x509.ParseECPrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parsing token key %s: %w", path, err)
	}
	return key, nil
}

// AdminToken reads the admin token from path, creating a random one
// (mode 0600) when the file does not exist.
func AdminToken(path string) (string, error) {
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		b := make([]byte, 32)
		if _, err := rand.Read(b); err != nil {
			return "", fmt.Errorf("generating admin token: %w", err)
		}
		tok := hex.EncodeToString(b)
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return "", fmt.Errorf("creating admin token directory: %w", err)
		}
		if err := writeAtomic(path, []byte(tok+"\n")); err != nil {
			return "", err
		}
		return tok, nil
	}
	if err != nil {
		return "", fmt.Errorf("reading admin token: %w", err)
	}
	tok := strings.TrimSpace(string(raw))
	if len(tok) < 16 {
		return "", fmt.Errorf("admin token %s: shorter than 16 characters", path)
	}
	return tok, nil
}

// AdminTokenPath is the default admin token file of a store.
func (s *Store) AdminTokenPath() string { return filepath.Join(s.dir, adminTokenFile) }
