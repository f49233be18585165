package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/veil-runtime/veil/attestation/kbs/server"
	"github.com/veil-runtime/veil/cmd/internal/cli"
)

const usage = `usage:
  veil-kbs serve [flags]                               run the broker (refuses a policy unfit
                                                       for production unless --dev)
  veil-kbs policy get|set [flags] [FILE]               attestation policy (JSON)
  veil-kbs resource-policy get|set [flags] [FILE]      resource policy (JSON)
  veil-kbs resource set [flags] REPO/TYPE/TAG FILE     store a resource ("-" reads stdin)
  veil-kbs resource get|delete [flags] REPO/TYPE/TAG   read (to stdout) or delete a resource
  veil-kbs resource list [flags]                       list the stored resources
  veil-kbs reference add|remove [flags] FIELD HEX      add or remove a reference value
                                   (snp.measurement, tdx.mrtd, tdx.rtmr0..3, init-data)
  veil-kbs reference list [flags]                      list the reference values
  veil-kbs evidence list [flags]                       the last attestation of each client
  veil-kbs explain [flags] [--client ADDR | FILE]      replay a recorded attestation (the
                                   newest, a client's, or a file) against the current policy
                                   and print each check with expected and seen
admin flags: --url (default http://127.0.0.1:8081, the loopback admin listener),
  --admin-token-file, --ca, --client-cert/--client-key (admin listener with mTLS),
  --dev (policy set, resource-policy set: skip the production checks)
  veil-kbs version                                     the commit and the guest image digest
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
	case "policy", "resource-policy", "resource", "reference", "evidence", "explain":
		return adminCommand(args[0], args[1:], os.Stdout)
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

func printJSON(out io.Writer, v any) error {
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == ' ' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}
