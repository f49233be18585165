package shim

import (
	"context"
	"encoding/hex"
	"fmt"

	"github.com/containerd/errdefs/pkg/errgrpc"

	"github.com/veil-runtime/veil/attestation/initdata"
	"github.com/veil-runtime/veil/guest-agent/api"
	"github.com/veil-runtime/veil/guest-agent/policy"
	"github.com/veil-runtime/veil/hypervisor"
	"github.com/veil-runtime/veil/shim/config"
)

// Kernel parameters that tell the agent it runs a confidential pod
// (config.GuestKernelArgs writes them).
const (
	TEEParam            = config.TEEParam
	InitDataDigestParam = config.InitDataDigestParam
)

// confidentialPod is what a confidential handler adds to a pod's start:
// the init-data document and its digest, bound into the launch and handed
// to the agent before CreateSandbox.
type confidentialPod struct {
	tee hypervisor.TEE
	// doc is the init-data document; nil when the pod has none.
	doc []byte
	// source says where doc came from, for logs and errors.
	source string
}

// resolveConfidential picks a confidential pod's init-data: the pod's
// io.veil.initdata annotation, or Confidential Containers'
// io.katacontainers.config.hypervisor.cc_init_data (same encoding; its
// guest-components files are mapped or refused by initdata.Parse), when
// the handler allows it; else the handler's default document, else none.
// It returns nil for a handler that is not confidential.
func resolveConfidential(c config.Confidential, annotations map[string]string) (*confidentialPod, error) {
	if !c.Enabled() {
		return nil, nil
	}
	p := &confidentialPod{tee: c.Kind(), source: "none"}
	veilValue, veilOK := annotations[initdata.Annotation]
	cocoValue, cocoOK := annotations[initdata.CoCoAnnotation]
	if veilOK && cocoOK {
		return nil, fmt.Errorf("pod annotations %s and %s: expected one init-data document, seen both", initdata.Annotation, initdata.CoCoAnnotation)
	}
	if veilOK || cocoOK {
		name, value, decode := initdata.Annotation, veilValue, initdata.DecodeAnnotation
		if cocoOK {
			name, value, decode = initdata.CoCoAnnotation, cocoValue, initdata.DecodeCoCoAnnotation
		}
		if !c.AllowAnnotationInitData {
			return nil, fmt.Errorf("pod annotation %s: this handler does not accept init-data from pods (confidential.allow_annotation_initdata = false)", name)
		}
		doc, err := decode(value)
		if err != nil {
			return nil, err
		}
		d, err := initdata.Parse(doc)
		if err != nil {
			return nil, fmt.Errorf("pod annotation %s: %w", name, err)
		}
		if err := d.CheckBrokerFor(string(p.tee)); err != nil {
			return nil, fmt.Errorf("pod annotation %s: %w", name, err)
		}
		p.doc, p.source = doc, "annotation "+name
		return p, nil
	}
	doc, err := c.LoadInitData()
	if err != nil {
		return nil, fmt.Errorf("handler init-data (confidential.initdata): %w", err)
	}
	if doc != nil {
		d, err := initdata.Parse(doc)
		if err != nil {
			return nil, fmt.Errorf("handler init-data %s: %w", c.InitData, err)
		}
		if err := d.CheckBrokerFor(string(p.tee)); err != nil {
			return nil, fmt.Errorf("handler init-data %s: %w", c.InitData, err)
		}
		p.doc, p.source = doc, c.InitData
	}
	return p, nil
}

// guestShareDir is the host directory the pod's VM gets over 9p: sharedDir,
// or none ("") for a confidential pod that pulls its images in the guest
// and whose init-data policy lets no host path into its containers. Such a
// VM has no 9p device at all; its volumes arrive as copies (volumes.go).
func guestShareDir(sharedDir string, c config.Confidential, p *confidentialPod) string {
	if p != nil && c.GuestPullEnabled() && !p.allowHostMounts() {
		return ""
	}
	return sharedDir
}

// allowHostMounts reports whether the pod's agent policy (init-data
// [agent] policy) lets host paths be shared into containers. The agent
// decides again on every request; the shim asks only to pick between
// refusing a host path up front and sharing it.
func (p *confidentialPod) allowHostMounts() bool {
	if p == nil || p.doc == nil {
		return false
	}
	d, err := initdata.Parse(p.doc)
	if err != nil {
		return false
	}
	pol, err := policy.Parse(d.Agent.Policy)
	return err == nil && pol.AllowHostMounts
}

// handler names the pod's handler for errors: the CRI handler that
// conventionally runs the TEE, and the config key that makes it one.
func (p *confidentialPod) handler() string {
	name := map[hypervisor.TEE]string{hypervisor.TEESample: "veil-dev", hypervisor.TEESNP: "veil-snp", hypervisor.TEETDX: "veil-tdx"}[p.tee]
	return fmt.Sprintf("the confidential handler %s (confidential.tee = %q)", name, p.tee)
}

// digest is the init-data digest bound at launch; nil without a document.
func (p *confidentialPod) digest() []byte {
	if p == nil || p.doc == nil {
		return nil
	}
	d := initdata.Digest(p.doc)
	return d[:]
}

// setInitData hands the agent the document (empty when none). The agent
// checks it against the digest its TEE reports and refuses on a mismatch;
// that refusal fails the pod with the agent's reason.
func (p *confidentialPod) setInitData(ctx context.Context, a api.AttestationService) error {
	if p == nil {
		return nil
	}
	resp, err := a.SetInitData(ctx, &api.SetInitDataRequest{Document: p.doc})
	if err != nil {
		return fmt.Errorf("handing init-data (%s) to the guest agent: %w", p.source, errgrpc.ToNative(err))
	}
	if want := hex.EncodeToString(p.digest()); p.doc != nil && resp.GetDigest() != want {
		return fmt.Errorf("guest agent reports init-data digest %s, the shim computed %s", resp.GetDigest(), want)
	}
	if resp.GetTee() != string(p.tee) {
		return fmt.Errorf("guest agent runs in TEE %q, the handler launched %q", resp.GetTee(), p.tee)
	}
	return nil
}
