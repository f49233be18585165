// Package initdata owns the init-data document: the TOML a pod owner
// supplies (broker URL and certificate, agent policy, image security
// policy and pull caps, volume copy caps, extra files), its validation, its SHA-256 digest as bound into
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
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"reflect"
	"strings"

	"github.com/pelletier/go-toml/v2"

	"github.com/veil-runtime/veil/guest-agent/api/wire"
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
	// Image holds the guest's image security policy and pull caps.
	Image Image `toml:"image"`
	// Volumes caps the volume copies the host makes into the guest.
	Volumes VolumeLimits `toml:"volumes,omitempty"`
	// Data holds extra named files handed to the guest (Trustee's [data]).
	Data map[string]string `toml:"data"`
}

// Broker is the [broker] table.
type Broker struct {
	// URL of the key broker: https (CheckBrokerFor), http only for
	// veil-dev.
	URL string `toml:"url"`
	// Cert is the PEM certificate (or CA) the guest trusts for URL.
	Cert string `toml:"cert,multiline"`
}

// Agent is the [agent] table.
type Agent struct {
	// Policy is the agent policy document, interpreted by the guest agent.
	Policy string `toml:"policy,multiline"`
}

// Image is the [image] table: how the guest pulls container images (the
// host never supplies any of it).
type Image struct {
	// Policy is the image security policy (containers-policy.json text).
	// Confidential pods pull nothing without one.
	Policy string `toml:"policy"`
	// Keys are the broker resources (kbs:///repo/type/tag) holding the
	// private keys for ocicrypt-encrypted layers, fetched after
	// attestation on the first encrypted layer.
	Keys []string `toml:"keys,omitempty"`
	// RegistryAuth is the broker resource (kbs:///repo/type/tag) holding
	// registry credentials as a Docker config.json ({"auths": {...}}).
	RegistryAuth string `toml:"registry_auth,omitempty"`
	// Mirrors maps a registry host ("docker.io", "registry:5000") to
	// mirror hosts tried in order before it.
	Mirrors map[string][]string `toml:"mirrors,omitempty"`
	// TLSRoots are extra PEM roots trusted for registries (and mirrors).
	TLSRoots string `toml:"tls_roots,omitempty,multiline"`
	// ImageLimits are the pull caps, keys of the same table.
	ImageLimits
}

// ImageLimits caps what one image pull may take of the guest's memory
// (guest-pulled images live in tmpfs). A key left out (or 0) takes the
// default, a quarter of the guest's memory (image.DefaultLimits); a pull
// over a cap is refused naming the key.
type ImageLimits struct {
	// MaxLayerBytes caps a layer's uncompressed size, in bytes.
	MaxLayerBytes int64 `toml:"max_layer_bytes,omitempty"`
	// MaxLayerCompressedBytes caps a layer blob as the registry serves it.
	MaxLayerCompressedBytes int64 `toml:"max_layer_compressed_bytes,omitempty"`
	// MaxLayerEntries caps the entries (files, directories, links) of a
	// layer; default about one per KiB of that quarter of memory.
	MaxLayerEntries int64 `toml:"max_layer_entries,omitempty"`
	// MaxImageBytes caps the sum of an image's uncompressed layers.
	MaxImageBytes int64 `toml:"max_image_bytes,omitempty"`
}

// VolumeLimits is the [volumes] table: caps on the configMap, secret,
// downward-API and projected volumes the host copies into the guest's
// memory (guest-agent/volume). A key left out (or 0) takes the default
// (volume.DefaultLimits); a copy over a cap is refused naming the key.
type VolumeLimits struct {
	// MaxVolumeBytes caps the file bytes of one volume.
	MaxVolumeBytes int64 `toml:"max_volume_bytes,omitempty"`
	// MaxVolumeEntries caps the files, directories and symlinks of one
	// volume.
	MaxVolumeEntries int64 `toml:"max_volume_entries,omitempty"`
	// MaxTotalBytes caps the file bytes of all the pod's volumes.
	MaxTotalBytes int64 `toml:"max_total_bytes,omitempty"`
	// MaxTotalEntries caps the entries of all the pod's volumes.
	MaxTotalEntries int64 `toml:"max_total_entries,omitempty"`
}

// Parse decodes and validates a document. Unknown keys are an error that
// names them. A Confidential Containers document (guest-components files
// in [data]) is read as CoCo's guests read it where veil can honour it
// (the broker from aa.toml or cdh.toml) and refused where it cannot
// (applyCoCo); the document's bytes, and so its digest, are unchanged.
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
			return nil, fmt.Errorf("init-data: unknown keys %s (known: %s)", strings.Join(keys, ", "), strings.Join(KnownKeys(), ", "))
		}
		return nil, fmt.Errorf("parsing init-data toml: %w", err)
	}
	if err := d.applyCoCo(); err != nil {
		return nil, err
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
		return fmt.Errorf("init-data algorithm: %q, want %q (veil binds the SHA-256 of the exact document bytes; a CoCo document written for another hash must say algorithm = %q)", d.Algorithm, Algorithm, Algorithm)
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
	if err := d.Image.validate(); err != nil {
		return err
	}
	if err := nonNegative("volumes", d.Volumes); err != nil {
		return err
	}
	for name := range d.Data {
		if name == "" || strings.Contains(name, "..") || strings.HasPrefix(name, "/") {
			return fmt.Errorf("init-data data key %q: want a relative file name without '..'", name)
		}
	}
	return nil
}

// DevTEE is the TEE whose guests may reach their broker over plain http:
// the sample TEE of veil-dev, which protects nothing anyway.
const DevTEE = string(wire.TEESample)

// CheckBrokerFor refuses a broker.url a guest in tee must not use: outside
// veil-dev (the sample TEE) it must be https. The protocol seals
// resources to the guest's key with ECDH-ES, which does not authenticate
// the sender, so over plain http a man in the middle could attest with
// nothing, answer with resources sealed to the guest's key, and hand the
// guest keys of its choosing; TLS to a broker the guest trusts (the
// system roots or broker.cert) is what authenticates the broker.
func (d *Document) CheckBrokerFor(tee string) error {
	if d.Broker.URL == "" || tee == DevTEE {
		return nil
	}
	u, err := url.Parse(d.Broker.URL)
	if err != nil {
		return fmt.Errorf("init-data broker.url: %w", err)
	}
	if u.Scheme != "https" {
		return fmt.Errorf("init-data broker.url %q: expected https for a %s guest (ECDH-ES resource sealing does not authenticate the broker: over %s a man in the middle could hand the guest keys of its choosing), seen %s; plain http is for veil-dev only",
			d.Broker.URL, tee, u.Scheme, u.Scheme)
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

// validate checks the [image] table's form; the guest agent parses the
// policy itself (image/policy) when it pulls.
func (im *Image) validate() error {
	if im.Policy != "" && !json.Valid([]byte(im.Policy)) {
		return errors.New("init-data image.policy: not JSON (want a containers-policy.json document)")
	}
	for i, k := range im.Keys {
		if _, err := ResourcePath(k); err != nil {
			return fmt.Errorf("init-data image.keys[%d]: %w", i, err)
		}
	}
	if im.RegistryAuth != "" {
		if _, err := ResourcePath(im.RegistryAuth); err != nil {
			return fmt.Errorf("init-data image.registry_auth: %w", err)
		}
	}
	for reg, ms := range im.Mirrors {
		if err := registryHost(reg); err != nil {
			return fmt.Errorf("init-data image.mirrors key %q: %w", reg, err)
		}
		if len(ms) == 0 {
			return fmt.Errorf("init-data image.mirrors.%q: no mirrors listed", reg)
		}
		for _, m := range ms {
			if err := registryHost(m); err != nil {
				return fmt.Errorf("init-data image.mirrors.%q: mirror %q: %w", reg, m, err)
			}
		}
	}
	if im.TLSRoots != "" {
		if err := pemCerts(im.TLSRoots); err != nil {
			return fmt.Errorf("init-data image.tls_roots: %w", err)
		}
	}
	return nonNegative("image", im.ImageLimits)
}

// nonNegative refuses a negative cap in a struct of int64 caps, naming
// its key in table.
func nonNegative(table string, caps any) error {
	v := reflect.ValueOf(caps)
	for i := range v.NumField() {
		if n := v.Field(i).Int(); n < 0 {
			return fmt.Errorf("init-data %s.%s: %d is negative; give a size in bytes (or a count), or leave it out for the default", table, tomlName(v.Type().Field(i)), n)
		}
	}
	return nil
}

// KnownKeys lists the document's keys, derived from the struct tags
// (tables as "table.key", maps by their own key).
func KnownKeys() []string { return keysOf(reflect.TypeFor[Document](), "") }

func keysOf(t reflect.Type, prefix string) []string {
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Anonymous && f.Tag.Get("toml") == "" {
			out = append(out, keysOf(f.Type, prefix)...)
			continue
		}
		name := prefix + tomlName(f)
		if f.Type.Kind() == reflect.Struct {
			out = append(out, keysOf(f.Type, name+".")...)
			continue
		}
		out = append(out, name)
	}
	return out
}

func tomlName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
	return name
}

// ResourcePath checks a broker resource URI, kbs:///repo/type/tag (a host
// part naming another broker is refused: the guest fetches only from the
// document's broker), and returns "repo/type/tag".
func ResourcePath(uri string) (string, error) {
	u, err := url.Parse(uri)
	if err != nil {
		return "", fmt.Errorf("resource uri %q: %w", uri, err)
	}
	if u.Scheme != "kbs" {
		return "", fmt.Errorf("resource uri %q: scheme %q, want kbs:///repo/type/tag", uri, u.Scheme)
	}
	if u.Host != "" {
		return "", fmt.Errorf("resource uri %q: names broker %q; write kbs:///repo/type/tag (resources come from broker.url)", uri, u.Host)
	}
	parts := strings.Split(strings.TrimPrefix(u.Path, "/"), "/")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("resource uri %q: want kbs:///repo/type/tag", uri)
	}
	return strings.Join(parts, "/"), nil
}

// registryHost checks a registry host[:port] with no scheme or path.
func registryHost(h string) error {
	if h == "" {
		return errors.New("empty host")
	}
	if strings.Contains(h, "://") || strings.ContainsAny(h, "/ \t@") {
		return errors.New("want host[:port], without scheme or path")
	}
	u, err := url.Parse("https://" + h)
	if err != nil || u.Host != h {
		return errors.New("want host[:port]")
	}
	return nil
}

// pemCerts checks that s holds PEM certificates and nothing else.
func pemCerts(s string) error {
	rest, n := []byte(s), 0
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return fmt.Errorf("PEM block %q, want CERTIFICATE", b.Type)
		}
		if _, err := x509.ParseCertificate(b.Bytes); err != nil {
			return fmt.Errorf("certificate %d: %w", n+1, err)
		}
		n++
	}
	if n == 0 {
		return errors.New("no PEM certificate found")
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return errors.New("trailing data after the PEM certificates")
	}
	return nil
}
