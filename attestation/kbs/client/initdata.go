package client

import (
	"errors"
	"log/slog"

	"github.com/veil-runtime/veil/attestation/evidence"
	"github.com/veil-runtime/veil/attestation/initdata"
)

// FromInitData returns a client for the broker an init-data document
// names, trusting only the document's broker certificate when it has one,
// and sending the document with the evidence. Outside the sample TEE the
// broker URL must be https (initdata.CheckBrokerFor). The caller has already
// checked the document against the TEE (evidence.CheckInitData).
func FromInitData(doc []byte, a evidence.Attester, log *slog.Logger) (*Client, error) {
	d, err := initdata.Parse(doc)
	if err != nil {
		return nil, err
	}
	if d.Broker.URL == "" {
		return nil, errors.New("init-data names no broker (broker.url)")
	}
	if err := d.CheckBrokerFor(string(a.Tee())); err != nil {
		return nil, err
	}
	return New(Config{URL: d.Broker.URL, Attester: a, InitData: doc, RootCAsPEM: []byte(d.Broker.Cert), Log: log})
}
