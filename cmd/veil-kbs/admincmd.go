package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"text/tabwriter"
	"time"

	"github.com/veil-runtime/veil/attestation/kbs/admin"
	"github.com/veil-runtime/veil/attestation/kbs/server"
	"github.com/veil-runtime/veil/attestation/policy"
	"github.com/veil-runtime/veil/cmd/internal/cli"
)

// adminCommand runs an operator command against the admin listener.
func adminCommand(cmd string, args []string, out io.Writer) error {
	sub := ""
	if cmd != "explain" && len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		sub, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet(cmd+" "+sub, flag.ContinueOnError)
	urlFlag := fs.String("url", "http://127.0.0.1:8081", "admin listener URL (serve --admin-listen)")
	tokenFile := fs.String("admin-token-file", "/var/lib/veil-kbs/admin-token", "admin token file")
	caFile := fs.String("ca", "", "CA certificate (PEM) to trust for the broker")
	clientCert := fs.String("client-cert", "", "client certificate (PEM) for an admin listener with mutual TLS")
	clientKey := fs.String("client-key", "", "client key (PEM) for --client-cert")
	dev := fs.Bool("dev", false, "policy set, resource-policy set: skip the production checks (the broker checks again unless it runs with --dev)")
	client := fs.String("client", "", "explain: the client whose last attestation to replay (as evidence list shows it)")
	outFile := fs.String("o", "", "resource get: write to this file (0600) instead of stdout")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	c, err := adminClient(*urlFlag, *tokenFile, *caFile, *clientCert, *clientKey)
	if err != nil {
		return err
	}
	ctx := context.Background()
	rest := fs.Args()
	switch cmd + " " + sub {
	case "policy get":
		p, err := c.AttestationPolicy(ctx)
		if err != nil {
			return err
		}
		return printJSON(out, p)
	case "policy set":
		var p policy.Attestation
		if err := readJSONArg(rest, &p); err != nil {
			return err
		}
		if !*dev {
			rp, err := c.ResourcePolicy(ctx)
			if err != nil {
				return err
			}
			// The broker knows whether it has TDX collateral; it checks that.
			if err := policy.CheckProduction(p, rp, policy.Broker{TDXCollateral: true}); err != nil {
				return fmt.Errorf("%s: %w", rest[0], err)
			}
		}
		return c.SetAttestationPolicy(ctx, p)
	case "resource-policy get":
		p, err := c.ResourcePolicy(ctx)
		if err != nil {
			return err
		}
		return printJSON(out, p)
	case "resource-policy set":
		var p policy.Resources
		if err := readJSONArg(rest, &p); err != nil {
			return err
		}
		if !*dev {
			ap, err := c.AttestationPolicy(ctx)
			if err != nil {
				return err
			}
			if err := policy.CheckProduction(ap, p, policy.Broker{TDXCollateral: true}); err != nil {
				return fmt.Errorf("%s: %w", rest[0], err)
			}
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
	case "resource get":
		if len(rest) != 1 {
			return errors.New("usage: veil-kbs resource get [-o FILE] REPO/TYPE/TAG")
		}
		data, err := c.Resource(ctx, rest[0])
		if err != nil {
			return err
		}
		if *outFile != "" {
			return os.WriteFile(*outFile, data, 0o600)
		}
		_, err = out.Write(data)
		return err
	case "resource delete":
		if len(rest) != 1 {
			return errors.New("usage: veil-kbs resource delete REPO/TYPE/TAG")
		}
		return c.DeleteResource(ctx, rest[0])
	case "resource list":
		list, err := c.Resources(ctx)
		if err != nil {
			return err
		}
		for _, r := range list {
			fmt.Fprintln(out, r)
		}
		return nil
	case "reference add", "reference remove":
		if len(rest) != 2 {
			return fmt.Errorf("usage: veil-kbs reference %s FIELD HEX", sub)
		}
		p, err := c.AttestationPolicy(ctx)
		if err != nil {
			return err
		}
		edit := admin.AddReference
		if sub == "remove" {
			edit = admin.RemoveReference
		}
		if err := edit(&p, rest[0], rest[1]); err != nil {
			return err
		}
		return c.SetAttestationPolicy(ctx, p)
	case "reference list":
		p, err := c.AttestationPolicy(ctx)
		if err != nil {
			return err
		}
		for _, r := range admin.References(p) {
			fmt.Fprintln(out, r.Field, r.Value)
		}
		return nil
	case "evidence list":
		list, err := c.Evidence(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "CLIENT\tTIME\tTEE\tOUTCOME")
		for _, r := range list {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Client, r.Time.UTC().Format(time.RFC3339), r.Tee, r.Outcome)
		}
		return tw.Flush()
	case "explain ":
		var rec server.Recorded
		switch {
		case len(rest) == 1 && *client == "":
			if err := readJSONArg(rest, &rec); err != nil {
				return err
			}
		case len(rest) == 0:
			if rec, err = c.RecordedEvidence(ctx, *client); err != nil {
				return err
			}
		default:
			return errors.New("usage: veil-kbs explain [--client ADDR | FILE]")
		}
		ex, err := c.Explain(ctx, rec)
		if err != nil {
			return err
		}
		return printExplanation(out, ex)
	}
	return fmt.Errorf("unknown command %q\n%s", cmd+" "+sub, usage)
}

// adminClient builds the admin API client. The admin token never crosses
// a network in the clear: plain http only to a loopback host.
func adminClient(rawURL, tokenFile, caFile, certFile, keyFile string) (*admin.Client, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("--url: %w", err)
	}
	if u.Scheme == "http" {
		host := u.Hostname()
		if !loopbackHost(host) {
			return nil, fmt.Errorf("--url %s: expected https, or http to a loopback address, seen http to %s: the admin token would cross the network in the clear", rawURL, host)
		}
	} else if u.Scheme != "https" {
		return nil, fmt.Errorf("--url %s: expected an http(s) URL", rawURL)
	}
	raw, err := os.ReadFile(tokenFile)
	if err != nil {
		return nil, fmt.Errorf("reading admin token: %w", err)
	}
	c := &admin.Client{URL: rawURL, Token: string(trimSpace(raw)), HTTP: &http.Client{Timeout: 30 * time.Second}}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("reading ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca %s: no PEM certificate", caFile)
		}
		tc.RootCAs = pool
	}
	if certFile != "" || keyFile != "" {
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("loading --client-cert and --client-key: %w", err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	c.HTTP.Transport = &http.Transport{TLSClientConfig: tc}
	return c, nil
}

// printExplanation prints each check with expected and seen, the verdict,
// and what the resource policy would release.
func printExplanation(out io.Writer, ex server.Explanation) error {
	from := string(ex.Tee) + " evidence"
	if ex.Client != "" {
		from += " from " + ex.Client
	}
	fmt.Fprintln(out, from)
	if ex.Recorded != "" {
		fmt.Fprintln(out, "when received:", ex.Recorded)
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CHECK\tRESULT\tEXPECTED\tSEEN")
	failed := 0
	for _, c := range ex.Checks {
		res := "ok"
		if !c.OK {
			res, failed = "FAIL", failed+1
		}
		seen := c.Seen
		if seen == "" {
			seen = "(none)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", c.Field, res, c.Expected, seen)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if !ex.Accepted {
		fmt.Fprintf(out, "verdict: rejected by the current policy (%d check(s) failed; nonce freshness is not replayed)\n", failed)
		return nil
	}
	fmt.Fprintln(out, "verdict: accepted by the current policy (nonce freshness is not replayed)")
	for _, r := range ex.Resources {
		if r.Allowed {
			fmt.Fprintf(out, "resource %s: released\n", r.Resource)
		} else {
			fmt.Fprintf(out, "resource %s: refused: %s\n", r.Resource, r.Reason)
		}
	}
	return nil
}
