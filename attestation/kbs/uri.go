package kbs

import (
	"fmt"
	"net/url"
	"strings"
)

// ParseResourceURI turns a resource URI as Confidential Containers writes
// it — kbs:///repo/type/tag, or kbs://host:port/repo/type/tag naming a
// broker — into the broker address (possibly empty) and "repo/type/tag".
func ParseResourceURI(uri string) (host, path string, err error) {
	u, err := url.Parse(uri)
	if err != nil {
		return "", "", fmt.Errorf("resource uri %q: %w", uri, err)
	}
	if u.Scheme != "kbs" {
		return "", "", fmt.Errorf("resource uri %q: scheme %q, want kbs", uri, u.Scheme)
	}
	parts := strings.Split(strings.TrimPrefix(u.Path, "/"), "/")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return "", "", fmt.Errorf("resource uri %q: want kbs:///repo/type/tag", uri)
	}
	return u.Host, strings.Join(parts, "/"), nil
}
