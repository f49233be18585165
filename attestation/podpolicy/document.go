package podpolicy

import (
	"bytes"
	"context"
	"fmt"
	"sort"

	"github.com/pelletier/go-toml/v2"

	"github.com/veil-runtime/veil/attestation/initdata"
	"github.com/veil-runtime/veil/guest-agent/policy"
)

// ImageRefs are the distinct image references of objs' workloads, sorted.
func ImageRefs(objs *Objects) []string {
	seen := map[string]bool{}
	var refs []string
	for _, w := range objs.Workloads {
		for _, list := range [][]string{images(w.Spec.InitContainers), images(w.Spec.Containers)} {
			for _, ref := range list {
				if !seen[ref] {
					seen[ref] = true
					refs = append(refs, ref)
				}
			}
		}
	}
	sort.Strings(refs)
	return refs
}

// ResolveAll resolves every image of objs.
func ResolveAll(ctx context.Context, r *Resolver, objs *Objects) (map[string]Image, error) {
	out := map[string]Image{}
	for _, ref := range ImageRefs(objs) {
		img, err := r.Resolve(ctx, ref)
		if err != nil {
			return nil, err
		}
		out[ref] = img
	}
	return out, nil
}

// PolicyTOML encodes p as the agent policy document ([agent] policy of
// init-data), after a comment line per entry of header, and checks that
// the agent parses it back.
func PolicyTOML(p policy.Policy, header ...string) (string, error) {
	var buf bytes.Buffer
	for _, h := range header {
		fmt.Fprintf(&buf, "# %s\n", h)
	}
	enc := toml.NewEncoder(&buf)
	enc.SetIndentTables(false)
	if err := enc.Encode(p); err != nil {
		return "", fmt.Errorf("encoding the agent policy: %w", err)
	}
	if _, err := policy.Parse(buf.String()); err != nil {
		return "", fmt.Errorf("checking the generated agent policy: %w", err)
	}
	return buf.String(), nil
}

// Document is base (broker, image policy, mirrors...) with res's policy
// as [agent] policy, encoded and checked as the runtime and the guest
// will read it.
func Document(res *Result, base initdata.Document, header ...string) ([]byte, error) {
	pol, err := PolicyTOML(res.Policy, header...)
	if err != nil {
		return nil, err
	}
	d := base
	d.Version, d.Algorithm = initdata.Version, initdata.Algorithm
	d.Agent.Policy = pol
	if err := d.Validate(); err != nil {
		return nil, err
	}
	doc, err := initdata.Marshal(&d)
	if err != nil {
		return nil, err
	}
	if _, err := initdata.Parse(doc); err != nil {
		return nil, fmt.Errorf("checking the generated init-data of %s: %w", res.Workload.ID(), err)
	}
	return doc, nil
}
