package portfwd

import (
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// TableName is the nftables table (family ip) Start adds to the pod's
// network namespace.
const TableName = "veil_portforward"

func redirectTable() *nftables.Table {
	return &nftables.Table{Name: TableName, Family: nftables.TableFamilyIPv4}
}

// redirectExprs is the rule "meta l4proto tcp ip daddr 127.0.0.0/8 redirect
// to :port".
func redirectExprs(port uint16) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		// ip daddr: 4 bytes at offset 16 of the IPv4 header.
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: []byte{0xff, 0, 0, 0}, Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{127, 0, 0, 0}},
		&expr.Immediate{Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
		&expr.Redir{RegisterProtoMin: 1},
	}
}

// addRedirect adds the table, its nat output chain and the rule in the
// namespace netnsFD refers to. A table left by an earlier shim of the pod
// is replaced.
func addRedirect(netnsFD int, port uint16) error {
	c, err := nftables.New(nftables.WithNetNSFd(netnsFD))
	if err != nil {
		return fmt.Errorf("opening nftables: %w", err)
	}
	t := redirectTable()
	// Adding then deleting an existing table is a no-op for a new one and
	// clears an old one, in one transaction.
	c.AddTable(t)
	c.DelTable(t)
	t = c.AddTable(t)
	ch := c.AddChain(&nftables.Chain{
		Name: "output", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityNATDest,
	})
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: redirectExprs(port)})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("adding nftables table ip %s (nat redirect of loopback TCP to port %d): %w", TableName, port, err)
	}
	return nil
}

// delRedirect removes the table from the namespace netnsFD refers to.
func delRedirect(netnsFD int) error {
	c, err := nftables.New(nftables.WithNetNSFd(netnsFD))
	if err != nil {
		return fmt.Errorf("opening nftables: %w", err)
	}
	c.DelTable(redirectTable())
	if err := c.Flush(); err != nil {
		return fmt.Errorf("removing nftables table ip %s: %w", TableName, err)
	}
	return nil
}
