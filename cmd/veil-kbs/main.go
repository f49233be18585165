// Command veil-kbs is veil's key broker: it verifies TEE evidence from
// confidential pods and releases resources to those that match policy.
//
//	veil-kbs serve --store DIR --tls-cert CERT --tls-key KEY [--dev]
//	veil-kbs policy get|set FILE
//	veil-kbs resource-policy get|set FILE
//	veil-kbs resource set REPO/TYPE/TAG FILE
//	veil-kbs reference add FIELD HEX
//	veil-kbs version
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
