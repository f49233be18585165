package podpolicy

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"strings"

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
	doc := noCapabilities(buf.String(), p.Containers)
	back, err := policy.Parse(doc)
	if err != nil {
		return "", fmt.Errorf("checking the generated agent policy: %w", err)
	}
	for i, c := range back.Containers {
		if (c.Capabilities == nil) != (p.Containers[i].Capabilities == nil) {
			return "", fmt.Errorf("checking the generated agent policy: container %s's capabilities %q read back as %q", c.Name, p.Containers[i].Capabilities, c.Capabilities)
		}
	}
	return doc, nil
}

// noCapabilities writes "capabilities = []" for each container whose
// capability set is empty (drop ALL): the schema's omitempty would leave
// the key out, and an absent key means containerd's default set.
func noCapabilities(doc string, cs []policy.Container) string {
	const table = "\n[[containers]]\n"
	var out strings.Builder
	for _, c := range cs {
		i := strings.Index(doc, table)
		if i < 0 {
			break
		}
		head := i + len(table)
		out.WriteString(doc[:head])
		doc = doc[head:]
		if c.Capabilities == nil || len(c.Capabilities) > 0 {
			continue
		}
		// The table's first line is its name; the key goes after it.
		end := strings.IndexByte(doc, '\n') + 1
		out.WriteString(doc[:end] + "capabilities = []\n")
		doc = doc[end:]
	}
	out.WriteString(doc)
	return out.String()
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

// Options configure GenerateDocuments.
type Options struct {
	// Resolver looks the images up (its Pin chooses digest or signature).
	Resolver *Resolver
	// Base is the rest of each document: broker, image policy, keys,
	// mirrors, TLS roots. An empty image policy becomes
	// DefaultImagePolicy of the pod's images (digest pins only).
	Base initdata.Document
	// Source names the manifest in each document's header comment.
	Source string
}

// Output is one workload's init-data document.
type Output struct {
	Result *Result
	// Doc is the init-data document (TOML).
	Doc []byte
	// Annotation is Doc encoded as the io.veil.initdata annotation value.
	Annotation string
	// Rebound maps each image reference of the manifest that the policy
	// binds under another spelling (name:tag -> name@sha256:...) to that
	// spelling: the pod must ask for the bound one.
	Rebound map[string]string
}

// GenerateDocuments resolves objs' images and writes one init-data
// document per workload.
func GenerateDocuments(ctx context.Context, objs *Objects, opts Options) ([]Output, error) {
	if len(objs.Workloads) == 0 {
		return nil, fmt.Errorf("%s: no Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job or CronJob", opts.Source)
	}
	r := opts.Resolver
	if r == nil {
		r = &Resolver{}
	}
	imgs, err := ResolveAll(ctx, r, objs)
	if err != nil {
		return nil, err
	}
	var outs []Output
	for i := range objs.Workloads {
		w := &objs.Workloads[i]
		res, err := Generate(w, objs, imgs)
		if err != nil {
			return nil, err
		}
		out := Output{Result: res, Rebound: map[string]string{}}
		var bound []string
		header := []string{fmt.Sprintf("Generated by veil policy generate from %s (%s).", opts.Source, w.ID())}
		for _, ref := range append(images(w.Spec.InitContainers), images(w.Spec.Containers)...) {
			b := imgs[ref].Ref
			if !contains(bound, b) {
				bound = append(bound, b)
			}
			if b != ref && out.Rebound[ref] == "" {
				out.Rebound[ref] = b
				header = append(header, fmt.Sprintf("The pod must use image %s (the manifest says %s).", b, ref))
			}
		}
		base := opts.Base
		switch {
		case r.Pin == PinSignature:
			if err := RequireSignatures(base.Image.Policy, bound); err != nil {
				return nil, fmt.Errorf("%s: %w", w.ID(), err)
			}
		case base.Image.Policy == "":
			if base.Image.Policy, err = DefaultImagePolicy(bound); err != nil {
				return nil, err
			}
		}
		if out.Doc, err = Document(res, base, header...); err != nil {
			return nil, err
		}
		if out.Annotation, err = initdata.EncodeAnnotation(out.Doc); err != nil {
			return nil, fmt.Errorf("%s: %w", w.ID(), err)
		}
		outs = append(outs, out)
	}
	return outs, nil
}
