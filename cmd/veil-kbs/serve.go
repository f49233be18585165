package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/veil-runtime/veil/attestation/kbs"
	"github.com/veil-runtime/veil/attestation/kbs/server"
	"github.com/veil-runtime/veil/attestation/verify"
	"github.com/veil-runtime/veil/cmd/internal/cli"
)

// addrs are the addresses serve listens on.
type addrs struct {
	Public, Admin string
}

// serve runs the broker until ctx ends. ready, when not nil, receives the
// listening addresses.
func serve(ctx context.Context, args []string, ready chan<- addrs) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	listen := fs.String("listen", ":8080", "address guests reach the protocol on (TLS)")
	adminListen := fs.String("admin-listen", "127.0.0.1:8081", "address of the admin API and /metrics: loopback (plain HTTP), or any address with --admin-client-ca (mutual TLS); \"off\" disables it")
	adminClientCA := fs.String("admin-client-ca", "", "CA (PEM) the admin listener requires client certificates from (mutual TLS, with --tls-cert)")
	storeDir := fs.String("store", "/var/lib/veil-kbs", "store directory (policies, resources, keys)")
	tlsCert := fs.String("tls-cert", "", "TLS certificate (PEM)")
	tlsKey := fs.String("tls-key", "", "TLS private key (PEM)")
	insecureHTTP := fs.Bool("insecure-http", false, "serve plain HTTP: on a loopback --listen only (behind a TLS-terminating proxy), unless --dev")
	dev := fs.Bool("dev", false, "INSECURE: accept sample (software) evidence and policies unfit for production")
	adminTokenFile := fs.String("admin-token-file", "", "admin token file, created when missing (default STORE/admin-token)")
	snpRoots := fs.String("snp-roots", "", "pin these AMD ASK+ARK (PEM, KDS cert_chain) instead of the embedded AMD roots")
	snpProductLine := fs.String("snp-product-line", "Milan", "product line of --snp-roots")
	snpCRL := fs.String("snp-crl", "", "AMD KDS CRL recorded from https://kdsintf.amd.com/vcek/v1/<product>/crl (DER or PEM): reports whose ASK or VCEK it revokes are refused")
	vcekCache := fs.String("vcek-cache", "", "directory of VCEK certificates for reports without a certificate table")
	tdxCollateral := fs.String("tdx-collateral", "", "recorded Intel PCS responses (JSON: QE identity, TCB info, PCK and root CRLs); required for TDX outside --dev")
	nonceTTL := fs.Duration("nonce-ttl", 5*time.Minute, "how long a challenge nonce stays valid")
	grantTTL := fs.Duration("grant-ttl", 10*time.Minute, "how long an attestation lets a guest read resources")
	perClient := fs.Int("max-sessions-per-client", 64, "sessions one client (source address, IPv6 /64) may hold at once")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	if (*tlsCert == "" || *tlsKey == "") && !*insecureHTTP {
		return errors.New("serve: --tls-cert and --tls-key are required (or --insecure-http for loopback dev setups)")
	}
	if *insecureHTTP && !*dev {
		// Behind a TLS-terminating proxy on the same host is fine; on the
		// network, guests' tokens and sealed resources would not be.
		host, _, err := net.SplitHostPort(*listen)
		if err != nil {
			return fmt.Errorf("serve: --listen %q: %w", *listen, err)
		}
		if !loopbackHost(host) {
			return fmt.Errorf("serve: --insecure-http with --listen %q: plain HTTP outside --dev needs a loopback address (127.0.0.1, [::1]; a TLS-terminating proxy in front), seen %q: give --tls-cert and --tls-key", *listen, host)
		}
	}
	adminTLS, err := adminTLSConfig(*adminListen, *adminClientCA, *tlsCert, *tlsKey)
	if err != nil {
		return err
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
	if *snpCRL != "" {
		if snp.CRL, err = verify.LoadCRL(*snpCRL); err != nil {
			return err
		}
		if now := time.Now(); now.After(snp.CRL.NextUpdate) {
			return fmt.Errorf("serve: --snp-crl %s: expected a current CRL, seen next update %s (now %s): record a fresh one from AMD's KDS; every SEV-SNP report would be refused", *snpCRL, snp.CRL.NextUpdate.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
		}
	}
	tdx := &verify.TDX{}
	if *tdxCollateral != "" {
		if tdx.Collateral, err = verify.LoadCollateral(*tdxCollateral); err != nil {
			return err
		}
		if err := tdx.Collateral.Complete(); err != nil {
			return fmt.Errorf("--tdx-collateral %s: %w", *tdxCollateral, err)
		}
	}
	srv, err := server.New(server.Config{
		Store:                store,
		Verifiers:            map[kbs.Tee]verify.Verifier{kbs.TeeSNP: snp, kbs.TeeTDX: tdx},
		Dev:                  *dev,
		AdminToken:           token,
		TokenKey:             key,
		NonceTTL:             *nonceTTL,
		GrantTTL:             *grantTTL,
		MaxSessionsPerClient: *perClient,
		Log:                  log,
	})
	if err != nil {
		return err
	}
	if err := srv.CheckStore(); err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listening: %w", err)
	}
	hs := server.NewHTTPServer(*listen, srv)
	servers := []*http.Server{hs}
	errc := make(chan error, 2)
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
	a := addrs{Public: ln.Addr().String()}
	if *adminListen != "off" {
		aln, err := net.Listen("tcp", *adminListen)
		if err != nil {
			_ = hs.Close()
			return fmt.Errorf("listening for the admin API: %w", err)
		}
		a.Admin = aln.Addr().String()
		ahs := server.NewHTTPServer(*adminListen, srv.Admin())
		servers = append(servers, ahs)
		go func() {
			log.Info("serving the admin API", "listen", aln.Addr().String(), "mtls", adminTLS != nil)
			if adminTLS == nil {
				errc <- ahs.Serve(aln)
				return
			}
			ahs.TLSConfig = adminTLS
			errc <- ahs.ServeTLS(aln, *tlsCert, *tlsKey)
		}()
	}
	if ready != nil {
		ready <- a
	}
	select {
	case err := <-errc:
		for _, s := range servers {
			_ = s.Close()
		}
		return fmt.Errorf("serving: %w", err)
	case <-ctx.Done():
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var errs []error
		for _, s := range servers {
			errs = append(errs, s.Shutdown(shut))
		}
		return errors.Join(errs...)
	}
}

// adminTLSConfig decides how the admin listener is served: plain HTTP on
// a loopback address (nil), mutual TLS with a client CA, and nothing
// else: the admin API is never exposed beyond the host without client
// certificates.
func adminTLSConfig(listen, clientCA, cert, key string) (*tls.Config, error) {
	if listen == "off" {
		return nil, nil
	}
	if clientCA == "" {
		host, _, err := net.SplitHostPort(listen)
		if err != nil {
			return nil, fmt.Errorf("--admin-listen %q: %w", listen, err)
		}
		if !loopbackHost(host) {
			return nil, fmt.Errorf("--admin-listen %q: expected a loopback address (127.0.0.1:8081, [::1]:8081), or --admin-client-ca for mutual TLS, seen %q", listen, host)
		}
		return nil, nil
	}
	if cert == "" || key == "" {
		return nil, errors.New("--admin-client-ca: the admin listener serves mutual TLS with --tls-cert and --tls-key; give them")
	}
	raw, err := os.ReadFile(clientCA)
	if err != nil {
		return nil, fmt.Errorf("reading --admin-client-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(raw) {
		return nil, fmt.Errorf("--admin-client-ca %s: no PEM certificate", clientCA)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}, nil
}

// loopbackHost reports whether host (an address's host part, or a URL's)
// names this machine's loopback: localhost, 127.0.0.0/8 or ::1.
func loopbackHost(host string) bool {
	ip := net.ParseIP(host)
	return host == "localhost" || ip != nil && ip.IsLoopback()
}
