// Package api is the veil agent API: agent.proto, the protobuf and ttrpc code
// generated from it (committed; `make proto` regenerates it and `make
// proto-check` fails on any drift), and Client, which bundles the services on
// one connection for the host side. Beside it: the method names walked from
// the descriptors (methods.go, checked by TestMethodNames and rewritten by
// `make proto`), PrefixOf, how both sides spell addresses, and wire/, the
// facts host and guest share outside the messages.
package api
