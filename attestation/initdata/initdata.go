// Package initdata owns the init-data document: the TOML a pod owner
// supplies (broker URL and certificate, agent policy, image security
// policy, extra files), its validation, its SHA-256 digest as bound into
// the TEE at launch (SNP HOSTDATA, TDX MRCONFIGID) and its annotation
// encoding (io.veil.initdata: base64 of gzip).
//
// The digest is over the document's exact bytes, never a re-encoding, so
// the runtime, the guest and the broker agree without sharing a TOML
// library. The layout keeps Trustee's top-level keys (version, algorithm,
// and a [data] table of named files) so a Trustee broker can read it too.
package initdata

import (
	"bytes"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// MaxSize bounds a document: it travels in a pod annotation and in the
// guest's memory.
const MaxSize = 256 << 10

// Version is the document version veil writes and reads.
const Version = "0.1.0"

// Algorithm is the only digest algorithm veil binds: SHA-256 fits SNP
// HOSTDATA exactly.
const Algorithm = "sha256"

// Document is a parsed init-data document.
type Document struct {
	// Version must be "0.1.0".
	Version string `toml:"version"`
	// Algorithm must be "sha256".
	Algorithm string `toml:"algorithm"`
	// Broker says where the guest attests and fetches keys.
	Broker Broker `toml:"broker"`
	// Agent holds the guest agent's policy.
	Agent Agent `toml:"agent"`
	// Image holds the guest's image security policy.
	Image Image `toml:"image"`
	// Data holds extra named files handed to the guest (Trustee's [data]).
	Data map[string]string `toml:"data"`
}

// Broker is the [broker] table.
type Broker struct {
	// URL of the key broker (https, or http only for loopback dev setups).
	URL string `toml:"url"`
	// Cert is the PEM certificate (or CA) the guest trusts for URL.
	Cert string `toml:"cert"`
}

// Agent is the [agent] table.
type Agent struct {
	// Policy is the agent policy document, interpreted by the guest agent.
	Policy string `toml:"policy"`
}

// Image is the [image] table.
type Image struct {
	// Policy is the image security policy (containers-policy.json).
	Policy string `toml:"policy"`
}

// Parse decodes and validates a document. Unknown keys are an error that
// names them.
func Parse(doc []byte) (*Document, error) {
	if len(doc) > MaxSize {
		return nil, fmt.Errorf("init-data is %d bytes, the limit is %d", len(doc), MaxSize)
	}
	dec := toml.NewDecoder(bytes.NewReader(doc)).DisallowUnknownFields()
	var d Document
	if err := dec.Decode(&d); err != nil {
		var strict *toml.StrictMissingError
		if errors.As(err, &strict) {
			keys := make([]string, 0, len(strict.Errors))
			for _, e := range strict.Errors {
				keys = append(keys, strings.Join(e.Key(), "."))
			}
			return nil, fmt.Errorf("init-data: unknown keys %s (known: version, algorithm, broker.url, broker.cert, agent.policy, image.policy, data)", strings.Join(keys, ", "))
		}
		return nil, fmt.Errorf("parsing init-data toml: %w", err)
	}
	if err := d.Validate(); err != nil {
		return nil, err
	}
	return &d, nil
}

// Validate checks the fields of a document.
func (d *Document) Validate() error {
	if d.Version != Version {
		return fmt.Errorf("init-data version: %q, want %q", d.Version, Version)
	}
	if d.Algorithm != Algorithm {
		return fmt.Errorf("init-data algorithm: %q, want %q", d.Algorithm, Algorithm)
	}
	if d.Broker.URL != "" {
		u, err := url.Parse(d.Broker.URL)
		if err != nil {
			return fmt.Errorf("init-data broker.url: %w", err)
		}
		if u.Scheme != "https" && u.Scheme != "http" {
			return fmt.Errorf("init-data broker.url %q: scheme %q, want https (or http)", d.Broker.URL, u.Scheme)
		}
		if u.Host == "" {
			return fmt.Errorf("init-data broker.url %q: no host", d.Broker.URL)
		}
	}
	if d.Broker.Cert != "" && !strings.Contains(d.Broker.Cert, "-----BEGIN CERTIFICATE-----") {
		return fmt.Errorf("init-data broker.cert: not a PEM certificate")
	}
	for name := range d.Data {
		if name == "" || strings.Contains(name, "..") || strings.HasPrefix(name, "/") {
			return fmt.Errorf("init-data data key %q: want a relative file name without '..'", name)
		}
	}
	return nil
}

// Marshal encodes a document as TOML.
func Marshal(d *Document) ([]byte, error) {
	var buf bytes.Buffer
	enc := toml.NewEncoder(&buf)
	enc.SetIndentTables(false)
	if err := enc.Encode(d); err != nil {
		return nil, fmt.Errorf("encoding init-data toml: %w", err)
	}
	if buf.Len() > MaxSize {
		return nil, fmt.Errorf("init-data is %d bytes, the limit is %d", buf.Len(), MaxSize)
	}
	return buf.Bytes(), nil
}
