package image

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
)

// Auth maps a registry host ("registry.example.com:5000", "docker.io") to
// its credentials.
type Auth map[string]authn.AuthConfig

// ParseAuth reads registry credentials in the Docker config.json format
// ({"auths": {"host": {"auth": "base64(user:password)"}}}), the form the
// broker delivers them in.
func ParseAuth(data []byte) (Auth, error) {
	var doc struct {
		Auths map[string]authn.AuthConfig `json:"auths"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("parsing registry credentials: %w", err)
	}
	a := Auth{}
	for host, c := range doc.Auths {
		a[normalizeHost(host)] = c
	}
	return a, nil
}

// Resolve implements authn.Keychain: a registry without an entry is
// pulled anonymously.
func (a Auth) Resolve(r authn.Resource) (authn.Authenticator, error) {
	if c, ok := a[normalizeHost(r.RegistryStr())]; ok {
		return authn.FromConfig(c), nil
	}
	return authn.Anonymous, nil
}

// normalizeHost strips a scheme and path and spells Docker Hub docker.io.
func normalizeHost(h string) string {
	h = strings.TrimPrefix(strings.TrimPrefix(h, "https://"), "http://")
	h, _, _ = strings.Cut(h, "/")
	switch h {
	case name.DefaultRegistry, "registry-1.docker.io":
		return "docker.io"
	}
	return h
}

// registryOf is ref's registry as Auth and Mirrors key it.
func registryOf(ref name.Reference) string { return normalizeHost(ref.Context().RegistryStr()) }

// httpTransport is the HTTP transport with the configured extra TLS roots.
func httpTransport(rootsPEM []byte) (http.RoundTripper, error) {
	t := http.DefaultTransport.(*http.Transport).Clone()
	if len(rootsPEM) > 0 {
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(rootsPEM) {
			return nil, fmt.Errorf("registry TLS roots: no PEM certificate found")
		}
		t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return t, nil
}

// candidates lists where ref can be pulled from: its mirrors in order,
// then its own registry.
func candidates(ref name.Reference, mirrors map[string][]string) ([]name.Reference, error) {
	var out []name.Reference
	for _, m := range mirrors[registryOf(ref)] {
		s := strings.TrimSuffix(normalizeHost(m), "/") + "/" + ref.Context().RepositoryStr()
		if d, ok := ref.(name.Digest); ok {
			s += "@" + d.DigestStr()
		} else {
			s += ":" + ref.Identifier()
		}
		mr, err := name.ParseReference(s, name.StrictValidation)
		if err != nil {
			return nil, fmt.Errorf("mirror %q of %s: %w", m, registryOf(ref), err)
		}
		out = append(out, mr)
	}
	return append(out, ref), nil
}

// keySource reads keys named by URI: kbs:///repo/type/tag through the
// broker fetcher, anything else as a file in the guest.
type keySource struct{ broker KeyFetcher }

func (k keySource) Key(ctx context.Context, uri string) ([]byte, error) {
	if strings.HasPrefix(uri, "kbs://") {
		if k.broker == nil {
			return nil, fmt.Errorf("key %s is a broker resource and no broker is configured", uri)
		}
		return k.broker.Key(ctx, uri)
	}
	b, err := os.ReadFile(uri)
	if err != nil {
		return nil, fmt.Errorf("reading key: %w", err)
	}
	return b, nil
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
