package evidence

import (
	"fmt"
	"strings"

	"github.com/google/go-configfs-tsm/configfs/configfsi"
	"github.com/google/go-configfs-tsm/configfs/linuxtsm"
	"github.com/google/go-configfs-tsm/report"
	"github.com/google/go-sev-guest/abi"
	sevclient "github.com/google/go-sev-guest/client"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	tdxclient "github.com/google/go-tdx-guest/client"
)

// Providers named by configfs-tsm's report "provider" attribute.
const (
	providerSNP = "sev_guest"
	providerTDX = "tdx_guest"
)

// ConfigFS gets reports through configfs-tsm (/sys/kernel/config/tsm/report)
// over an injectable client, so tests can use go-configfs-tsm's faketsm.
// It implements go-sev-guest's and go-tdx-guest's quote provider
// interfaces for the provider it is created for.
type ConfigFS struct {
	Client   configfsi.Client
	provider string
}

// ConfigFSSNP is a configfs-tsm source of SEV-SNP reports; the certificate
// table comes from the report's auxblob.
type ConfigFSSNP struct{ ConfigFS }

// ConfigFSTDX is a configfs-tsm source of TDX quotes.
type ConfigFSTDX struct{ ConfigFS }

var (
	_ sevclient.QuoteProvider = (*ConfigFSSNP)(nil)
	_ tdxclient.QuoteProvider = (*ConfigFSTDX)(nil)
)

// NewConfigFSSNP returns an SNP report source over client.
func NewConfigFSSNP(client configfsi.Client) *ConfigFSSNP {
	return &ConfigFSSNP{ConfigFS{Client: client, provider: providerSNP}}
}

// NewConfigFSTDX returns a TDX quote source over client.
func NewConfigFSTDX(client configfsi.Client) *ConfigFSTDX {
	return &ConfigFSTDX{ConfigFS{Client: client, provider: providerTDX}}
}

func (c *ConfigFS) get(reportData [64]byte, aux bool) (*report.Response, error) {
	resp, err := report.Get(c.Client, &report.Request{InBlob: reportData[:], GetAuxBlob: aux})
	if err != nil {
		return nil, fmt.Errorf("getting configfs-tsm report: %w", err)
	}
	if got := strings.TrimSpace(resp.Provider); got != c.provider {
		return nil, fmt.Errorf("configfs-tsm provider: expected %s, seen %q", c.provider, got)
	}
	return resp, nil
}

func (c *ConfigFS) supported() error {
	r, err := report.Create(c.Client, &report.Request{})
	if err != nil {
		return fmt.Errorf("opening configfs-tsm report: %w", err)
	}
	defer func() { _ = r.Destroy() }() // a probe: its answer is already taken
	// The provider is readable at any time on a kernel; writing inblob
	// first also satisfies configfs emulations that render attributes
	// only after a write.
	if err := r.WriteOption("inblob", make([]byte, 64)); err != nil {
		return fmt.Errorf("writing configfs-tsm inblob: %w", err)
	}
	p, err := r.ReadOption("provider")
	if err != nil {
		return fmt.Errorf("reading configfs-tsm provider: %w", err)
	}
	if got := strings.TrimSpace(string(p)); got != c.provider {
		return fmt.Errorf("configfs-tsm provider: expected %s, seen %q", c.provider, got)
	}
	return nil
}

// IsSupported implements sevclient.QuoteProvider.
func (c *ConfigFSSNP) IsSupported() bool { return c.supported() == nil }

// GetRawQuote implements sevclient.QuoteProvider: the report followed by
// the certificate table.
func (c *ConfigFSSNP) GetRawQuote(reportData [64]byte) ([]byte, error) {
	resp, err := c.get(reportData, true)
	if err != nil {
		return nil, err
	}
	return append(append([]byte(nil), resp.OutBlob...), resp.AuxBlob...), nil
}

// Product implements sevclient.QuoteProvider.
func (c *ConfigFSSNP) Product() *spb.SevProduct { return abi.SevProduct() }

// IsSupported implements tdxclient.QuoteProvider.
func (c *ConfigFSTDX) IsSupported() error { return c.supported() }

// GetRawQuote implements tdxclient.QuoteProvider.
func (c *ConfigFSTDX) GetRawQuote(reportData [64]byte) ([]byte, error) {
	resp, err := c.get(reportData, false)
	if err != nil {
		return nil, err
	}
	return resp.OutBlob, nil
}

// linuxConfigFS returns the kernel's configfs-tsm client, or an error when
// the kernel has none.
func linuxConfigFS() (configfsi.Client, error) {
	c, err := linuxtsm.MakeClient()
	if err != nil {
		return nil, fmt.Errorf("opening configfs-tsm: %w", err)
	}
	return c, nil
}
