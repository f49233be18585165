// Package attest is the guest agent's side of a confidential pod: it finds
// the TEE the agent runs in, checks the init-data document the host hands
// over against the digest the TEE was launched with, installs the
// document's agent policy (guest-agent/policy), and attests to the broker
// the document names (attestation/kbs/client). It also hands the Image
// service what the document says about guest pull (the [image] table) and
// fetches broker resources (layer keys, registry credentials) after
// attestation.
//
// The TEE comes from the hardware first (hardware.go: an SEV-SNP or TDX
// guest is enforced as one whatever the command line says, and a
// veil.tee naming something else there locks the agent down), then from
// the kernel command line, which the host sets but cannot change unseen:
// it is measured at launch (SNP kernel-hashes, TDX RTMR), so the broker's
// reference values catch a host that drops or alters it:
//
//	veil.tee=snp|tdx     find the report interface of the TEE guest drivers
//	                     built into the kernel (configfs-tsm,
//	                     /dev/sev-guest, /dev/tdx_guest); none found locks
//	                     the agent down
//	veil.tee=sample      veil-dev: software evidence, INSECURE; the digest
//	veil.initdata_digest=<hex>  is the "bound" init-data
//	(absent or none)     an ordinary pod: no checks, unless the guest
//	                     is an SNP or TDX guest
package attest

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/veil-runtime/veil/attestation/evidence"
	"github.com/veil-runtime/veil/attestation/initdata"
	"github.com/veil-runtime/veil/attestation/kbs/client"
	"github.com/veil-runtime/veil/guest-agent/api/wire"
	"github.com/veil-runtime/veil/guest-agent/policy"
)

// Kernel parameters (the shim writes them: shim/config.GuestKernelArgs).
const (
	TEEParam            = wire.TEEParam
	InitDataDigestParam = wire.InitDataDigestParam
)

// TEE names as SetInitDataResponse reports them.
const (
	None   = string(wire.TEENone)
	Sample = string(wire.TEESample)
	SNP    = string(wire.TEESNP)
	TDX    = string(wire.TEETDX)
)

// Config is what New needs from the guest.
type Config struct {
	// Params is the parsed kernel command line.
	Params map[string]string
	// Detect finds the hardware attester (evidence.Detect).
	Detect func() (evidence.Attester, error)
	// Hardware is the TEE the guest shows before any driver loads
	// (ProbeHardware); nil means none.
	Hardware func() Hardware
	Log      *slog.Logger
}

// State is the agent's confidential state, shared by the Attestation
// service and the policy enforcer.
type State struct {
	tee      string
	attester evidence.Attester
	enforcer *policy.Enforcer
	log      *slog.Logger

	mu     sync.Mutex
	doc    []byte
	parsed *initdata.Document // nil without a document
	set    bool
	client *client.Client
}

// New reads the TEE from cfg.Params and prepares it. It fails only on a
// command line it cannot read; a TEE it cannot find locks the agent down
// (every request but the health ones fails with the reason) rather than
// stopping it, so the host sees why.
func New(cfg Config) (*State, error) {
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var hw Hardware
	if cfg.Hardware != nil {
		hw = cfg.Hardware()
	}
	d, err := DecideTEE(cfg.Params, hw)
	if err != nil {
		return nil, err
	}
	tee := d.TEE
	s := &State{tee: tee, log: log}
	if d.Lock != "" {
		s.enforcer = policy.NewEnforcer(true)
		s.enforcer.Lock(d.Lock)
		log.Error("TEE mismatch: locked down", "reason", d.Lock)
		return s, nil
	}
	if cfg.Params[TEEParam] == "" && tee != None {
		log.Warn("no "+TEEParam+" on the kernel command line, but the guest runs in a TEE: enforcing as confidential", "tee", tee, "evidence", hw.Evidence)
	}
	switch tee {
	case None:
		s.enforcer = policy.NewEnforcer(false)
		return s, nil
	case Sample:
		var digest []byte
		if v := cfg.Params[InitDataDigestParam]; v != "" {
			d, err := hex.DecodeString(v)
			if err != nil || len(d) != 32 {
				return nil, fmt.Errorf("kernel parameter %s=%q: want 64 hex digits (SHA-256)", InitDataDigestParam, v)
			}
			digest = d
		}
		s.attester = evidence.NewSample(digest, log)
		s.enforcer = policy.NewEnforcer(true)
		log.Warn("confidential pod with the sample TEE", "insecure", evidence.SampleWarning)
		return s, nil
	case SNP, TDX:
		s.enforcer = policy.NewEnforcer(true)
		a, err := cfg.Detect()
		if err != nil {
			s.enforcer.Lock(fmt.Sprintf("launched as %s, but: %v", tee, err))
			return s, nil
		}
		if string(a.Tee()) != tee {
			s.enforcer.Lock(fmt.Sprintf("launched as %s, but the guest runs in %s", tee, a.Tee()))
			return s, nil
		}
		s.attester = a
		return s, nil
	}
	return nil, fmt.Errorf("kernel parameter %s=%q: want none, sample, snp or tdx", TEEParam, tee)
}

// TEE is the TEE the agent runs in (none, sample, snp, tdx).
func (s *State) TEE() string { return s.tee }

// Enforcer is the policy enforcer to install as a ttrpc interceptor.
func (s *State) Enforcer() *policy.Enforcer { return s.enforcer }

// SetInitData checks doc against the TEE and installs its agent policy,
// returning the document's SHA-256. A mismatch, a document that does not
// parse or a policy that does not parse locks the agent down: the host
// gets the reason now and on every later request.
func (s *State) SetInitData(ctx context.Context, doc []byte) ([32]byte, error) {
	digest := initdata.Digest(doc)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.set {
		return digest, errors.New("init-data was already set: it is set once, before CreateSandbox")
	}
	if !s.enforcer.Confidential() {
		s.doc, s.set = doc, true
		return digest, nil
	}
	if reason := s.enforcer.Locked(); reason != "" {
		return digest, errors.New("the agent is locked down: " + reason)
	}
	lock := func(err error) ([32]byte, error) {
		s.enforcer.Lock(err.Error())
		s.log.Error("refusing init-data: locked down", "err", err)
		return digest, err
	}
	if err := evidence.CheckInitData(ctx, s.attester, doc); err != nil {
		return lock(err)
	}
	pol := policy.Default()
	var parsed *initdata.Document
	if len(doc) > 0 {
		d, err := initdata.Parse(doc)
		if err != nil {
			return lock(err)
		}
		if err := d.CheckBrokerFor(s.tee); err != nil {
			return lock(err)
		}
		if pol, err = policy.Parse(d.Agent.Policy); err != nil {
			return lock(fmt.Errorf("init-data agent.policy: %w", err))
		}
		parsed = d
	}
	s.doc, s.parsed, s.set = doc, parsed, true
	s.enforcer.SetPolicy(pol)
	s.log.Info("init-data accepted", "tee", s.tee, "digest", hex.EncodeToString(digest[:]), "policy", fmt.Sprintf("%+v", pol))
	return digest, nil
}

// image is the accepted document's [image] table; empty before
// SetInitData, without a document, and for an ordinary pod (whose host is
// trusted and whose document is not checked, so not read).
func (s *State) image() initdata.Image {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.parsed == nil {
		return initdata.Image{}
	}
	return s.parsed.Image
}

// ImagePolicy is the init-data's image security policy
// (containers-policy.json text); empty when the document has none.
func (s *State) ImagePolicy() string { return s.image().Policy }

// ImageKeys are the broker URIs (kbs:///repo/type/tag) of the layer
// decryption keys the init-data names.
func (s *State) ImageKeys() []string { return slices.Clone(s.image().Keys) }

// ImageRegistry is what the init-data says about reaching registries: the
// broker resource with the registry credentials, mirrors, extra TLS roots.
func (s *State) ImageRegistry() (auth string, mirrors map[string][]string, tlsRoots string) {
	im := s.image()
	return im.RegistryAuth, maps.Clone(im.Mirrors), im.TLSRoots
}

// ImageLimits are the init-data's pull caps ([image] max_* keys); zero
// fields (and an ordinary pod's) take the image package's defaults.
func (s *State) ImageLimits() initdata.ImageLimits { return s.image().ImageLimits }

// VolumeLimits are the init-data's [volumes] caps on the host's volume
// copies; zero fields (and an ordinary pod's) take the volume package's
// defaults.
func (s *State) VolumeLimits() initdata.VolumeLimits {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.parsed == nil {
		return initdata.VolumeLimits{}
	}
	return s.parsed.Volumes
}

// Resource fetches a broker resource named kbs:///repo/type/tag from the
// init-data's broker, attesting first when the session has none (the
// broker releases it only after attestation, encrypted to a key that
// lives in this process).
func (s *State) Resource(ctx context.Context, uri string) ([]byte, error) {
	path, err := initdata.ResourcePath(uri)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	c, err := s.clientLocked()
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	// The client's errors name the resource ("broker refused resource
	// repo/type/tag ..."); callers say what it was for.
	return c.Resource(ctx, path)
}

// clientLocked returns the broker client, made on first use.
func (s *State) clientLocked() (*client.Client, error) {
	if s.attester == nil {
		return nil, fmt.Errorf("no TEE to attest (tee %s)", s.tee)
	}
	if !s.set {
		return nil, errors.New("no init-data: call SetInitData first")
	}
	if len(s.doc) == 0 {
		return nil, errors.New("the pod has no init-data, so no broker to attest to")
	}
	if s.client == nil {
		c, err := client.FromInitData(s.doc, s.attester, s.log)
		if err != nil {
			return nil, err
		}
		s.client = c
	}
	return s.client, nil
}

// Attestation is the outcome of Attest.
type Attestation struct {
	Broker string
	// Claims is the JSON payload of the broker's token (never the token
	// itself: it is a bearer credential).
	Claims json.RawMessage
}

// Attest attests to the broker the init-data names and returns the
// token's claims.
func (s *State) Attest(ctx context.Context) (Attestation, error) {
	s.mu.Lock()
	c, err := s.clientLocked()
	var broker string
	if err == nil {
		broker = s.parsed.Broker.URL
	}
	s.mu.Unlock()
	if err != nil {
		return Attestation{}, err
	}
	token, err := c.Attest(ctx)
	if err != nil {
		return Attestation{}, fmt.Errorf("attesting to %s: %w", broker, err)
	}
	claims, err := tokenClaims(token)
	if err != nil {
		return Attestation{}, err
	}
	return Attestation{Broker: broker, Claims: claims}, nil
}

// tokenClaims decodes a JWT's payload.
func tokenClaims(token string) (json.RawMessage, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, fmt.Errorf("broker token: %d parts, want a JWT of 3", len(parts))
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, fmt.Errorf("broker token payload: %w", err)
	}
	if !json.Valid(raw) {
		return nil, errors.New("broker token payload is not JSON")
	}
	return bytes.Clone(raw), nil
}
