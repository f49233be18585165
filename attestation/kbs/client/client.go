// Package client is the guest's side of the key broker protocol: it
// attests the TEE to a broker (Trustee's KBS or veil-kbs) and fetches
// resources, which arrive encrypted to a TEE key generated here and kept
// in memory only.
package client

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"sync"
	"time"

	"github.com/veil-runtime/veil/attestation/evidence"
	"github.com/veil-runtime/veil/attestation/kbs"
)

// maxResponse bounds what the client reads from the broker.
const maxResponse = 4 << 20

// Config configures a Client.
type Config struct {
	// URL of the broker, e.g. https://kbs.example:8080.
	URL string
	// Attester produces the evidence.
	Attester evidence.Attester
	// InitData is the init-data document the guest was launched with; it
	// is sent with the evidence when not empty.
	InitData []byte
	// RootCAsPEM, when set, is the only trust for the broker's TLS
	// certificate (init-data's broker.cert).
	RootCAsPEM []byte
	// HTTPClient overrides the HTTP client (its cookie jar is replaced).
	HTTPClient *http.Client
	// Log receives progress; nil discards.
	Log *slog.Logger
}

// Client talks to one broker.
type Client struct {
	cfg  Config
	http *http.Client
	key  *ecdsa.PrivateKey
	log  *slog.Logger

	mu    sync.Mutex
	token string
}

// Error is a broker's refusal, carrying its ErrorInformation.
type Error struct {
	Status int
	Info   kbs.ErrorInformation
	Step   string
}

func (e *Error) Error() string {
	typ := e.Info.Type
	if i := strings.LastIndex(typ, "/"); i >= 0 {
		typ = typ[i+1:]
	}
	return fmt.Sprintf("broker refused %s (%d %s): %s", e.Step, e.Status, typ, e.Info.Detail)
}

// New returns a client with a fresh P-256 TEE key.
func New(cfg Config) (*Client, error) {
	if cfg.Attester == nil {
		return nil, errors.New("kbs client: no attester")
	}
	if cfg.URL == "" {
		return nil, errors.New("kbs client: no broker url")
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("broker", cfg.URL, "tee", cfg.Attester.Tee())
	if cfg.Attester.Tee() == kbs.TeeSample {
		log = log.With("insecure", evidence.SampleWarning)
	}
	hc := &http.Client{Timeout: 30 * time.Second}
	if cfg.HTTPClient != nil {
		c := *cfg.HTTPClient
		hc = &c
	}
	if len(cfg.RootCAsPEM) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(cfg.RootCAsPEM) {
			return nil, errors.New("kbs client: broker certificate: no PEM certificate found")
		}
		hc.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	}
	jar, err := cookiejar.New(nil)
	if err != nil {
		return nil, fmt.Errorf("creating cookie jar: %w", err)
	}
	hc.Jar = jar
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating tee key: %w", err)
	}
	return &Client{cfg: cfg, http: hc, key: key, log: log}, nil
}

// Attest runs the RCAR handshake and returns the broker's token.
func (c *Client) Attest(ctx context.Context) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.attestLocked(ctx)
}

func (c *Client) attestLocked(ctx context.Context) (string, error) {
	extra, _ := json.Marshal(map[string][]kbs.HashAlgorithm{kbs.ExtraSupportedHashAlgorithms: {kbs.SHA256, kbs.SHA384, kbs.SHA512}})
	var ch kbs.Challenge
	if err := c.post(ctx, "auth", kbs.PathAuth, kbs.Request{Version: kbs.ProtocolVersion, Tee: c.cfg.Attester.Tee(), ExtraParams: extra}, &ch); err != nil {
		return "", err
	}
	alg, err := kbs.SelectedHashAlgorithm(ch.ExtraParams)
	if err != nil {
		return "", err
	}
	pub, err := kbs.PublicKeyJWK(c.key)
	if err != nil {
		return "", err
	}
	rd := kbs.RuntimeData{Nonce: ch.Nonce, TeePubKey: pub}
	reportData, err := kbs.ExpectedReportData(rd, "", alg)
	if err != nil {
		return "", err
	}
	ev, err := c.cfg.Attester.Evidence(ctx, reportData)
	if err != nil {
		return "", fmt.Errorf("producing evidence: %w", err)
	}
	att := kbs.Attestation{RuntimeData: rd, TeeEvidence: kbs.CompositeEvidence{PrimaryEvidence: ev}}
	if len(c.cfg.InitData) > 0 {
		att.InitData = &kbs.InitData{Format: "toml", Body: string(c.cfg.InitData)}
	}
	var res kbs.AttestationResult
	if err := c.post(ctx, "attestation", kbs.PathAttest, att, &res); err != nil {
		return "", err
	}
	c.token = res.Token
	c.log.Info("attested")
	return res.Token, nil
}

// Resource fetches "repo/type/tag", attesting first when needed (and once
// more if the broker no longer knows the session), and returns the
// decrypted bytes.
func (c *Client) Resource(ctx context.Context, path string) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.token == "" {
		if _, err := c.attestLocked(ctx); err != nil {
			return nil, err
		}
	}
	resp, err := c.getResource(ctx, path)
	var kerr *Error
	// 401 means "attest (again)", except Trustee's policy refusal, which
	// it also sends as 401 (veil-kbs sends 403): attesting again cannot
	// change that answer.
	if errors.As(err, &kerr) && kerr.Status == http.StatusUnauthorized && kerr.Info.Type != kbs.ErrorPolicyDeny {
		if _, err := c.attestLocked(ctx); err != nil {
			return nil, err
		}
		resp, err = c.getResource(ctx, path)
	}
	if err != nil {
		return nil, err
	}
	plain, err := kbs.Open(c.key, resp)
	if err != nil {
		return nil, fmt.Errorf("decrypting resource %s: %w", path, err)
	}
	c.log.Info("resource received", "resource", path)
	return plain, nil
}

func (c *Client) getResource(ctx context.Context, path string) (kbs.Response, error) {
	var resp kbs.Response
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(c.cfg.URL, "/")+kbs.PathResource+path, nil)
	if err != nil {
		return resp, fmt.Errorf("building resource request: %w", err)
	}
	return resp, c.do(req, "resource "+path, &resp)
}

func (c *Client) post(ctx context.Context, step, path string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("encoding %s: %w", step, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(c.cfg.URL, "/")+path, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("building %s request: %w", step, err)
	}
	req.Header.Set("Content-Type", "application/json")
	return c.do(req, step, out)
}

func (c *Client) do(req *http.Request, step string, out any) error {
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("sending %s to broker: %w", step, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return fmt.Errorf("reading broker %s response: %w", step, err)
	}
	if resp.StatusCode != http.StatusOK {
		e := &Error{Status: resp.StatusCode, Step: step}
		if json.Unmarshal(raw, &e.Info) != nil || e.Info.Detail == "" {
			e.Info.Detail = strings.TrimSpace(string(raw))
		}
		return e
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("decoding broker %s response: %w", step, err)
	}
	return nil
}
