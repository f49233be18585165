// Package admin is the operator's client for the veil-kbs admin API:
// attestation policy (with its reference values: add, list, remove),
// resource policy, resources (set, get, list, delete), recorded evidence
// and its explanation.
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

// Resources lists the stored resources' paths.
func (c *Client) Resources(ctx context.Context) ([]string, error) {
	var list []string
	return list, c.do(ctx, http.MethodGet, server.AdminPathResources, nil, &list)
}

// Resource reads a stored resource.
func (c *Client) Resource(ctx context.Context, path string) ([]byte, error) {
	if _, err := server.ResourcePath(path); err != nil {
		return nil, err
	}
	var raw rawBody
	return raw, c.do(ctx, http.MethodGet, server.AdminPathResource+path, nil, &raw)
}

// DeleteResource removes a stored resource.
func (c *Client) DeleteResource(ctx context.Context, path string) error {
	if _, err := server.ResourcePath(path); err != nil {
		return err
	}
	return c.do(ctx, http.MethodDelete, server.AdminPathResource+path, nil, nil)
}

// Evidence lists the recorded attestations (the last per client), newest
// first, without their bodies.
func (c *Client) Evidence(ctx context.Context) ([]server.Recorded, error) {
	var list []server.Recorded
	return list, c.do(ctx, http.MethodGet, server.AdminPathEvidence, nil, &list)
}

// RecordedEvidence returns the last attestation recorded from client
// (as the evidence list names it); "" is the newest of all.
func (c *Client) RecordedEvidence(ctx context.Context, client string) (server.Recorded, error) {
	if client == "" {
		client = "latest"
	}
	var rec server.Recorded
	return rec, c.do(ctx, http.MethodGet, server.AdminPathEvidence+"/"+client, nil, &rec)
}

// Explain has the broker replay rec against its current policies.
func (c *Client) Explain(ctx context.Context, rec server.Recorded) (server.Explanation, error) {
	body, err := json.Marshal(rec)
	if err != nil {
		return server.Explanation{}, fmt.Errorf("encoding recorded attestation: %w", err)
	}
	var ex server.Explanation
	return ex, c.do(ctx, http.MethodPost, server.AdminPathExplain, body, &ex)
}

// rawBody takes a response body as is.
type rawBody []byte

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
	if rb, ok := out.(*rawBody); ok {
		*rb = raw
		return nil
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("decoding %s %s response: %w", method, path, err)
		}
	}
	return nil
}

var hexValue = regexp.MustCompile(`^[0-9a-f]+$`)

// Reference is one reference value of a policy.
type Reference struct {
	Field string `json:"field"`
	Value string `json:"value"`
}

// References lists a policy's reference values, field by field in the
// names AddReference takes.
func References(p policy.Attestation) []Reference {
	var out []Reference
	add := func(field string, vs []string) {
		for _, v := range vs {
			out = append(out, Reference{field, v})
		}
	}
	if p.SNP != nil {
		add("snp.measurement", p.SNP.Measurements)
	}
	if p.TDX != nil {
		add("tdx.mrtd", p.TDX.MRTDs)
		for i, vs := range p.TDX.RTMRs {
			add(fmt.Sprintf("tdx.rtmr%d", i), vs)
		}
	}
	add("init-data", p.InitDataDigests)
	return out
}

// RemoveReference removes a reference value from a policy; a value the
// policy does not hold is an error naming the field.
func RemoveReference(p *policy.Attestation, field, value string) error {
	v := strings.ToLower(strings.TrimSpace(value))
	var list *[]string
	switch {
	case field == "snp.measurement" && p.SNP != nil:
		list = &p.SNP.Measurements
	case field == "tdx.mrtd" && p.TDX != nil:
		list = &p.TDX.MRTDs
	case strings.HasPrefix(field, "tdx.rtmr") && len(field) == len("tdx.rtmr0") && field[8] >= '0' && field[8] <= '3' && p.TDX != nil:
		list = &p.TDX.RTMRs[field[8]-'0']
	case field == "init-data":
		list = &p.InitDataDigests
	case field == "snp.measurement", field == "tdx.mrtd", strings.HasPrefix(field, "tdx.rtmr"):
		return fmt.Errorf("reference value for %s: the policy has no %s section", field, field[:3])
	default:
		return fmt.Errorf("reference field %q: want snp.measurement, tdx.mrtd, tdx.rtmr0..3 or init-data", field)
	}
	i := slices.IndexFunc(*list, func(s string) bool { return strings.EqualFold(s, v) })
	if i < 0 {
		return fmt.Errorf("reference value for %s: %s is not one of %v", field, v, *list)
	}
	*list = slices.Delete(*list, i, i+1)
	return nil
}

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
