// Package image pulls container images inside the guest, so that for the
// confidential handlers the host never sees an image's plaintext: Puller
// resolves a reference (mirrors first, then the registry; linux/amd64 from
// an index), checks it against the image security policy
// (image/policy; the signatures it needs are read here: cosign v3's
// Sigstore bundles from the digest's OCI referrers, the referrers API or
// its sha256-<hex> tag fallback, in referrers.go, and legacy ones from the
// sha256-<hex>.sig tag, each read bounded in count and size), downloads layers concurrently into a per-pod content
// cache keyed by digest (each blob verified against its digest while it
// streams to disk; a layer shared by containers of the pod is fetched
// once), then unpacks them in order into a private temporary directory,
// decrypting ocicrypt layers (image/decrypt) with keys from a KeyFetcher
// and checking every layer's uncompressed digest against the config's
// diffID (image/unpack). Only when the whole image has verified is the
// directory renamed to the rootfs path; on any error it is removed, so no
// partial plaintext remains.
//
// Every pull is capped (Limits, limits.go): a layer's compressed size
// (checked on the manifest, before the download), its uncompressed size
// and entry count, and the sum of an image's uncompressed layers, the
// uncompressed caps enforced while the layer streams, so a decompression
// bomb stops at the cap. The caps come from the init-data's [image] table
// (max_layer_bytes, max_layer_compressed_bytes, max_layer_entries,
// max_image_bytes); unset, each is a quarter of the guest's memory (and
// one entry per KiB of that quarter: 52.7 MiB and 53,944 entries in the
// 256 MiB base guest), because the images live in tmpfs in guest memory
// (DefaultLimits explains the choice). A refusal wraps unpack.ErrLimit
// and names the key, its value, the image and the layer.
//
// Registry credentials, mirrors, extra TLS roots, the policy and the key
// URIs are passed in by the caller, never from the host: the agent's Image
// service (guest-agent/service/image.go) takes them from the init-data's
// [image] table (attestation/initdata) and fetches the credentials and keys
// from the key broker after attestation (guest-agent/attest). For the
// confidential handlers the shim asks for a pull at each container's
// Create (shim/guestpull.go), and containerd on the host leaves the
// layers to the guest (snapshotter/). The cache holds only what the
// registry served (ciphertext for encrypted layers) and lives as long as
// the Puller: one Puller per pod.
//
// The host side of the same formats lives in image/encrypt (ocicrypt layer
// encryption for JWE recipients, key pair generation) and image/sign
// (cosign key-based signatures: v3 Sigstore bundles as OCI referrers,
// made with sigstore-go's signer, or the legacy .sig tag; ECDSA P-256 PEM
// keys), behind `veil image encrypt`, `veil image sign` and `veil image
// keygen`; the guest links neither. Their tests round-trip through this package's Puller,
// image/decrypt and image/policy.
package image
