package main

import (
	"github.com/veil-runtime/veil/cmd/internal/cli"

	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/veil-runtime/veil/attestation/kbs"
	"github.com/veil-runtime/veil/attestation/kbs/admin"
	"github.com/veil-runtime/veil/attestation/kbs/server"
	"github.com/veil-runtime/veil/attestation/policy"
	"github.com/veil-runtime/veil/attestation/verify"
)

const usage = `usage:
  veil-kbs serve [flags]                       run the broker
  veil-kbs policy get|set [flags] [FILE]               attestation policy (JSON)
  veil-kbs resource-policy get|set [flags] [FILE]      resource policy (JSON)
  veil-kbs resource set [flags] REPO/TYPE/TAG FILE     store a resource ("-" reads stdin)
  veil-kbs reference add [flags] FIELD HEX             add a reference value
                                   (snp.measurement, tdx.mrtd, tdx.rtmr0..3, init-data)
  veil-kbs version                                     the commit and the guest image digest
admin flags: --url, --admin-token-file, --ca
run "veil-kbs COMMAND -h" for flags`

func run(args []string) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	switch args[0] {
	case "serve":
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return serve(ctx, args[1:], nil)
	case "policy", "resource-policy", "resource", "reference":
		return adminCommand(args[0], args[1:])
	case "-h", "--help", "help":
		fmt.Println(usage)
		return nil
	case "version", "--version", "-v":
		if len(args) != 1 {
			return fmt.Errorf("version takes no arguments, got %q", args[1:])
		}
		cli.PrintVersion(os.Stdout, "veil-kbs", true)
		return nil
	}
	return fmt.Errorf("unknown command %q\n%s", args[0], usage)
}

// serve runs the broker until ctx ends. ready, when not nil, receives the
// listening address.
func serve(ctx context.Context, args []string, ready chan<- string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	listen := fs.String("listen", ":8080", "address to listen on")
	storeDir := fs.String("store", "/var/lib/veil-kbs", "store directory (policies, resources, keys)")
	tlsCert := fs.String("tls-cert", "", "TLS certificate (PEM)")
	tlsKey := fs.String("tls-key", "", "TLS private key (PEM)")
	insecureHTTP := fs.Bool("insecure-http", false, "serve plain HTTP (tests and loopback dev setups only)")
	dev := fs.Bool("dev", false, "INSECURE: accept sample (software) evidence")
	adminTokenFile := fs.String("admin-token-file", "", "admin token file, created when missing (default STORE/admin-token)")
	snpRoots := fs.String("snp-roots", "", "pin these AMD ASK+ARK (PEM, KDS cert_chain) instead of the embedded AMD roots")
	snpProductLine := fs.String("snp-product-line", "Milan", "product line of --snp-roots")
	vcekCache := fs.String("vcek-cache", "", "directory of VCEK certificates for reports without a certificate table")
	tdxCollateral := fs.String("tdx-collateral", "", "recorded Intel PCS responses (JSON) for TDX TCB checks")
	nonceTTL := fs.Duration("nonce-ttl", 5*time.Minute, "how long a challenge nonce stays valid")
	grantTTL := fs.Duration("grant-ttl", 10*time.Minute, "how long an attestation lets a guest read resources")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	if (*tlsCert == "" || *tlsKey == "") && !*insecureHTTP {
		return errors.New("serve: --tls-cert and --tls-key are required (or --insecure-http for loopback dev setups)")
	}
	store, err := server.OpenStore(*storeDir)
	if err != nil {
		return err
	}
	if *adminTokenFile == "" {
		*adminTokenFile = store.AdminTokenPath()
	}
	token, err := server.AdminToken(*adminTokenFile)
	if err != nil {
		return err
	}
	key, err := store.TokenKey()
	if err != nil {
		return err
	}
	snp := &verify.SNP{VCEKCache: *vcekCache}
	if *snpRoots != "" {
		if snp.Roots, err = verify.LoadAMDRoots(*snpRoots, *snpProductLine); err != nil {
			return err
		}
	}
	tdx := &verify.TDX{}
	if *tdxCollateral != "" {
		if tdx.Collateral, err = verify.LoadCollateral(*tdxCollateral); err != nil {
			return err
		}
	}
	srv, err := server.New(server.Config{
		Store:      store,
		Verifiers:  map[kbs.Tee]verify.Verifier{kbs.TeeSNP: snp, kbs.TeeTDX: tdx},
		Dev:        *dev,
		AdminToken: token,
		TokenKey:   key,
		NonceTTL:   *nonceTTL,
		GrantTTL:   *grantTTL,
		Log:        log,
	})
	if err != nil {
		return err
	}
	hs := server.NewHTTPServer(*listen, srv)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listening: %w", err)
	}
	if ready != nil {
		ready <- ln.Addr().String()
	}
	errc := make(chan error, 1)
	go func() {
		log.Info("serving", "listen", ln.Addr().String(), "store", *storeDir, "tls", !*insecureHTTP, "dev", *dev)
		if *insecureHTTP {
			log.Warn("serving plain HTTP: tokens and sealed resources cross the network unencrypted")
			errc <- hs.Serve(ln)
			return
		}
		hs.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		errc <- hs.ServeTLS(ln, *tlsCert, *tlsKey)
	}()
	select {
	case err := <-errc:
		return fmt.Errorf("serving: %w", err)
	case <-ctx.Done():
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return hs.Shutdown(shut)
	}
}

func adminCommand(cmd string, args []string) error {
	sub := ""
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		sub, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet(cmd+" "+sub, flag.ContinueOnError)
	url := fs.String("url", "https://127.0.0.1:8080", "broker URL")
	tokenFile := fs.String("admin-token-file", "/var/lib/veil-kbs/admin-token", "admin token file")
	caFile := fs.String("ca", "", "CA certificate (PEM) to trust for the broker")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	raw, err := os.ReadFile(*tokenFile)
	if err != nil {
		return fmt.Errorf("reading admin token: %w", err)
	}
	c := &admin.Client{URL: *url, Token: string(trimSpace(raw)), HTTP: &http.Client{Timeout: 30 * time.Second}}
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			return fmt.Errorf("reading ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("ca %s: no PEM certificate", *caFile)
		}
		c.HTTP.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	}
	ctx := context.Background()
	rest := fs.Args()
	switch cmd + " " + sub {
	case "policy get":
		p, err := c.AttestationPolicy(ctx)
		if err != nil {
			return err
		}
		return printJSON(p)
	case "policy set":
		var p policy.Attestation
		if err := readJSONArg(rest, &p); err != nil {
			return err
		}
		return c.SetAttestationPolicy(ctx, p)
	case "resource-policy get":
		p, err := c.ResourcePolicy(ctx)
		if err != nil {
			return err
		}
		return printJSON(p)
	case "resource-policy set":
		var p policy.Resources
		if err := readJSONArg(rest, &p); err != nil {
			return err
		}
		return c.SetResourcePolicy(ctx, p)
	case "resource set":
		if len(rest) != 2 {
			return errors.New("usage: veil-kbs resource set REPO/TYPE/TAG FILE")
		}
		data, err := readArg(rest[1])
		if err != nil {
			return err
		}
		return c.SetResource(ctx, rest[0], data)
	case "reference add":
		if len(rest) != 2 {
			return errors.New("usage: veil-kbs reference add FIELD HEX")
		}
		p, err := c.AttestationPolicy(ctx)
		if err != nil {
			return err
		}
		if err := admin.AddReference(&p, rest[0], rest[1]); err != nil {
			return err
		}
		return c.SetAttestationPolicy(ctx, p)
	}
	return fmt.Errorf("unknown command %q\n%s", cmd+" "+sub, usage)
}

func readArg(name string) ([]byte, error) {
	if name == "-" {
		return io.ReadAll(io.LimitReader(os.Stdin, 1<<20+1))
	}
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	return data, nil
}

func readJSONArg(rest []string, v any) error {
	if len(rest) != 1 {
		return errors.New("want one FILE argument (\"-\" reads stdin)")
	}
	raw, err := readArg(rest[0])
	if err != nil {
		return err
	}
	if err := server.DecodeStrict(raw, v); err != nil {
		return fmt.Errorf("decoding %s: %w", rest[0], err)
	}
	return nil
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == ' ' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}
