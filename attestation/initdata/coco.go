package initdata

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// CoCoAnnotation is the pod annotation Confidential Containers (Kata)
// reads init-data from: base64 (standard) of the gzipped TOML document, as
// CoCo's tooling writes it (`gzip -c initdata.toml | base64 -w0`).
const CoCoAnnotation = "io.katacontainers.config.hypervisor.cc_init_data"

// Files of a CoCo init-data document's [data] table that configure
// guest-components; Trustee's initdata spec (kbs/docs/initdata.md) puts
// them there by these names.
const (
	CoCoAgentPolicy = "policy.rego" // Kata agent policy, Rego for OPA
	CoCoAAConfig    = "aa.toml"     // attestation agent
	CoCoCDHConfig   = "cdh.toml"    // confidential data hub
)

// DecodeCoCoAnnotation decodes the cc_init_data annotation, with the same
// size limits as DecodeAnnotation.
func DecodeCoCoAnnotation(value string) ([]byte, error) {
	return decodeGzipBase64(CoCoAnnotation, value)
}

// coCoAA is the part of guest-components' attestation agent configuration
// (aa.toml) veil maps: the KBS it attests to.
type coCoAA struct {
	TokenConfigs struct {
		KBS *struct {
			URL  string `toml:"url"`
			Cert string `toml:"cert"`
		} `toml:"kbs"`
	} `toml:"token_configs"`
}

// coCoCDH is the part of the confidential data hub configuration
// (cdh.toml) veil maps: the KBS resources come from.
type coCoCDH struct {
	Socket      string `toml:"socket"`
	Credentials []any  `toml:"credentials"`
	KBC         *struct {
		Name    string `toml:"name"`
		URL     string `toml:"url"`
		KBSCert string `toml:"kbs_cert"`
	} `toml:"kbc"`
}

// applyCoCo reads the guest-components files of a document's [data]
// table. What veil honours is mapped: the KBS URL and certificate
// (aa.toml [token_configs.kbs] url/cert, cdh.toml [kbc] url/kbs_cert)
// become the broker when [broker] names none. What a CoCo guest would
// enforce and veil would not is refused, naming the file and key: a Rego
// agent policy, a CoCo attestation service, event logs, CDH credentials
// and image settings. Anything else in those files is refused too rather
// than ignored.
func (d *Document) applyCoCo() error {
	if _, ok := d.Data[CoCoAgentPolicy]; ok {
		return fmt.Errorf("init-data data.%q: a Kata agent policy in Rego is not supported (veil enforces its own rule list, not OPA); "+
			"write the policy as [agent] policy, e.g. with `veil policy generate`", CoCoAgentPolicy)
	}
	var urls []struct{ where, url, cert string }
	if raw, ok := d.Data[CoCoAAConfig]; ok {
		var aa coCoAA
		if err := strictTOML(raw, &aa); err != nil {
			return fmt.Errorf("init-data data.%q: %w; veil maps only [token_configs.kbs] url and cert (no CoCo attestation service, event log or other settings)", CoCoAAConfig, err)
		}
		if k := aa.TokenConfigs.KBS; k != nil {
			urls = append(urls, struct{ where, url, cert string }{CoCoAAConfig + " token_configs.kbs", k.URL, k.Cert})
		}
	}
	if raw, ok := d.Data[CoCoCDHConfig]; ok {
		var cdh coCoCDH
		if err := strictTOML(raw, &cdh); err != nil {
			return fmt.Errorf("init-data data.%q: %w; veil maps only [kbc] name, url and kbs_cert (image settings belong in [image])", CoCoCDHConfig, err)
		}
		if len(cdh.Credentials) > 0 {
			return fmt.Errorf("init-data data.%q credentials: expected none, seen %d: veil does not place broker resources as files; use [image] registry_auth or keys", CoCoCDHConfig, len(cdh.Credentials))
		}
		if k := cdh.KBC; k != nil {
			if k.Name != "cc_kbc" {
				return fmt.Errorf("init-data data.%q kbc.name: expected \"cc_kbc\" (a key broker reached after attestation), seen %q", CoCoCDHConfig, k.Name)
			}
			urls = append(urls, struct{ where, url, cert string }{CoCoCDHConfig + " kbc", k.URL, k.KBSCert})
		}
	}
	for _, u := range urls {
		if u.url == "" {
			return fmt.Errorf("init-data data %s: no url", u.where)
		}
		switch {
		case d.Broker.URL == "":
			d.Broker.URL, d.Broker.Cert = u.url, u.cert
		case strings.TrimSuffix(d.Broker.URL, "/") != strings.TrimSuffix(u.url, "/"):
			return fmt.Errorf("init-data data %s url: expected the broker %q, seen %q (one document names one broker)", u.where, d.Broker.URL, u.url)
		case u.cert != "" && d.Broker.Cert != "" && u.cert != d.Broker.Cert:
			return fmt.Errorf("init-data data %s: its certificate differs from the broker certificate given before it", u.where)
		case d.Broker.Cert == "":
			d.Broker.Cert = u.cert
		}
	}
	return nil
}

// strictTOML decodes a file, refusing keys the target does not name.
func strictTOML(doc string, v any) error {
	dec := toml.NewDecoder(bytes.NewReader([]byte(doc))).DisallowUnknownFields()
	err := dec.Decode(v)
	var strict *toml.StrictMissingError
	if errors.As(err, &strict) {
		var keys []string
		for _, e := range strict.Errors {
			keys = append(keys, strings.Join(e.Key(), "."))
		}
		slices.Sort(keys)
		return fmt.Errorf("unsupported keys %s", strings.Join(slices.Compact(keys), ", "))
	}
	if err != nil {
		return fmt.Errorf("parsing toml: %w", err)
	}
	return nil
}
