// Command veil-kbs is veil's key broker: it verifies TEE evidence from
// confidential pods and releases resources to those that match policy.
//
//	veil-kbs serve --store DIR --tls-cert CERT --tls-key KEY [--admin-listen ADDR] [--dev]
//	veil-kbs policy get|set FILE
//	veil-kbs resource-policy get|set FILE
//	veil-kbs resource set|get|delete|list [REPO/TYPE/TAG [FILE]]
//	veil-kbs reference add|remove|list [FIELD HEX]
//	veil-kbs evidence list
//	veil-kbs explain [--client ADDR | FILE]
//	veil-kbs version
//
// Outside --dev, serve and policy set refuse a policy a production broker
// must not serve (attestation/policy.Production). The admin API and the
// metrics live on their own listener (loopback, or mutual TLS).
//
// See attestation/README.md.
package main

import (
	"os"

	"github.com/veil-runtime/veil/cmd/internal/cli"
)

func main() {
	cli.Exit("veil-kbs", run(os.Args[1:]))
}
