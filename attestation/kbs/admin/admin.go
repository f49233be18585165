// Package admin is the operator's client for the veil-kbs admin API:
// attestation policy (with its reference values), resource policy and
// resources.
package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"

	"github.com/veil-runtime/veil/attestation/kbs"
	"github.com/veil-runtime/veil/attestation/kbs/server"
	"github.com/veil-runtime/veil/attestation/policy"
)

// Client calls the admin API of one broker.
type Client struct {
	URL   string
	Token string
	HTTP  *http.Client
}

// AttestationPolicy fetches the attestation policy.
func (c *Client) AttestationPolicy(ctx context.Context) (policy.Attestation, error) {
	var p policy.Attestation
	return p, c.do(ctx, http.MethodGet, server.AdminPathAttestationPolicy, nil, &p)
}

// SetAttestationPolicy replaces the attestation policy.
func (c *Client) SetAttestationPolicy(ctx context.Context, p policy.Attestation) error {
	body, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("encoding attestation policy: %w", err)
	}
	return c.do(ctx, http.MethodPut, server.AdminPathAttestationPolicy, body, nil)
}

// ResourcePolicy fetches the resource policy.
func (c *Client) ResourcePolicy(ctx context.Context) (policy.Resources, error) {
	var p policy.Resources
	return p, c.do(ctx, http.MethodGet, server.AdminPathResourcePolicy, nil, &p)
}

// SetResourcePolicy replaces the resource policy.
func (c *Client) SetResourcePolicy(ctx context.Context, p policy.Resources) error {
	body, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("encoding resource policy: %w", err)
	}
	return c.do(ctx, http.MethodPut, server.AdminPathResourcePolicy, body, nil)
}

// SetResource stores a resource at "repo/type/tag".
func (c *Client) SetResource(ctx context.Context, path string, data []byte) error {
	if _, err := server.ResourcePath(path); err != nil {
		return err
	}
	return c.do(ctx, http.MethodPut, server.AdminPathResource+path, data, nil)
}

func (c *Client) do(ctx context.Context, method, path string, body []byte, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(c.URL, "/")+path, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("building admin request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("calling %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("reading %s %s response: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var info kbs.ErrorInformation
		if json.Unmarshal(raw, &info) == nil && info.Detail != "" {
			return fmt.Errorf("%s %s: %d: %s", method, path, resp.StatusCode, info.Detail)
		}
		return fmt.Errorf("%s %s: %d: %s", method, path, resp.StatusCode, strings.TrimSpace(string(raw)))
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("decoding %s %s response: %w", method, path, err)
		}
	}
	return nil
}

var hexValue = regexp.MustCompile(`^[0-9a-f]+$`)

// AddReference adds a reference value to a policy. Fields:
// snp.measurement (48 bytes), tdx.mrtd (48), tdx.rtmr0..tdx.rtmr3 (48),
// init-data (a digest, 32 to 64 bytes). Values are hex.
func AddReference(p *policy.Attestation, field, value string) error {
	v := strings.ToLower(strings.TrimSpace(value))
	if !hexValue.MatchString(v) || len(v)%2 != 0 {
		return fmt.Errorf("reference value for %s: %q is not hex", field, value)
	}
	size := len(v) / 2
	want := func(n int) error {
		if size != n {
			return fmt.Errorf("reference value for %s: %d bytes, want %d", field, size, n)
		}
		return nil
	}
	add := func(list *[]string) {
		if !slices.Contains(*list, v) {
			*list = append(*list, v)
		}
	}
	switch field {
	case "snp.measurement":
		if err := want(48); err != nil {
			return err
		}
		if p.SNP == nil {
			p.SNP = &policy.SNP{}
		}
		add(&p.SNP.Measurements)
	case "tdx.mrtd":
		if err := want(48); err != nil {
			return err
		}
		if p.TDX == nil {
			p.TDX = &policy.TDX{}
		}
		add(&p.TDX.MRTDs)
	case "tdx.rtmr0", "tdx.rtmr1", "tdx.rtmr2", "tdx.rtmr3":
		if err := want(48); err != nil {
			return err
		}
		if p.TDX == nil {
			p.TDX = &policy.TDX{}
		}
		add(&p.TDX.RTMRs[field[len(field)-1]-'0'])
	case "init-data":
		if size < 32 || size > 64 {
			return fmt.Errorf("reference value for init-data: %d bytes, want a 32 to 64 byte digest", size)
		}
		add(&p.InitDataDigests)
	default:
		return fmt.Errorf("reference field %q: want snp.measurement, tdx.mrtd, tdx.rtmr0..3 or init-data", field)
	}
	return nil
}
