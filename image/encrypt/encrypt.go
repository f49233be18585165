// Package encrypt is the host side of encrypted images: it encrypts every
// layer of an image with github.com/containers/ocicrypt for JWE recipients
// (RSA-OAEP or ECDH-ES key wrapping of a fresh AES-256-CTR/HMAC-SHA256
// layer key), the format image/decrypt opens in the guest. The result is
// an OCI image whose layers have "+encrypted" media types and ocicrypt's
// annotations, and whose config keeps the plaintext diffIDs (the guest
// checks each decrypted layer against them). `veil image encrypt` uses it;
// it is never linked into the guest (image/ and its other packages are
// the guest-side library).
package encrypt

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/containers/ocicrypt"
	occonfig "github.com/containers/ocicrypt/config"
	ocutils "github.com/containers/ocicrypt/utils"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/veil-runtime/veil/image/decrypt"
)

// CheckRecipient tells whether pub is a public key ocicrypt can wrap a
// layer key for (PEM or DER RSA or EC public key, or a JWK).
func CheckRecipient(pub []byte) error {
	if len(pub) == 0 {
		return errors.New("empty key")
	}
	if ok, _ := ocutils.IsPrivateKey(pub, nil); ok {
		return errors.New("this is a private key; the recipient is the public half")
	}
	if !ocutils.IsPublicKey(pub) {
		return errors.New("not a public key ocicrypt can use (want a PEM or DER RSA/EC public key, or a JWK)")
	}
	return nil
}

// Image returns img with every layer encrypted for recipients (public
// keys, see CheckRecipient). The ciphertexts are written to files in dir,
// which must outlive the returned image (it reads them when pushed).
// Docker media types become their OCI equivalents; a layer that is
// already encrypted or foreign (non-distributable) is refused.
func Image(img v1.Image, recipients [][]byte, dir string) (v1.Image, error) {
	if len(recipients) == 0 {
		return nil, errors.New("no recipient key")
	}
	for i, r := range recipients {
		if err := CheckRecipient(r); err != nil {
			return nil, fmt.Errorf("recipient %d: %w", i+1, err)
		}
	}
	cc, err := occonfig.EncryptWithJwe(recipients)
	if err != nil {
		return nil, fmt.Errorf("recipient keys: %w", err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("reading the image config: %w", err)
	}
	m, err := img.Manifest()
	if err != nil {
		return nil, fmt.Errorf("reading the image manifest: %w", err)
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, fmt.Errorf("reading the image layers: %w", err)
	}
	if len(layers) != len(cfg.RootFS.DiffIDs) || len(layers) != len(m.Layers) {
		return nil, fmt.Errorf("image has %d layers, its config %d diffIDs", len(layers), len(cfg.RootFS.DiffIDs))
	}
	adds := make([]mutate.Addendum, len(layers))
	for i, l := range layers {
		el, err := layer(cc.EncryptConfig, l, m.Layers[i], cfg.RootFS.DiffIDs[i], filepath.Join(dir, fmt.Sprintf("layer-%d", i)))
		if err != nil {
			return nil, fmt.Errorf("layer %d (%s): %w", i, m.Layers[i].Digest, err)
		}
		adds[i] = el
	}
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	out, err := mutate.Append(base, adds...)
	if err != nil {
		return nil, err
	}
	// The original config, diffIDs (of the plaintext) and history included.
	out, err = mutate.ConfigFile(out, cfg)
	if err != nil {
		return nil, err
	}
	if len(m.Annotations) > 0 {
		out = mutate.Annotations(out, m.Annotations).(v1.Image)
	}
	return out, nil
}

// ociType maps a plaintext layer media type to the OCI type ocicrypt's
// suffix goes on.
func ociType(mt types.MediaType) (types.MediaType, error) {
	switch mt {
	case types.DockerLayer, types.OCILayer:
		return types.OCILayer, nil
	case types.DockerUncompressedLayer, types.OCIUncompressedLayer:
		return types.OCIUncompressedLayer, nil
	case types.OCILayerZStd:
		return mt, nil
	case types.DockerForeignLayer, types.OCIRestrictedLayer, types.OCIUncompressedRestrictedLayer:
		return "", fmt.Errorf("foreign layer (%s) cannot be re-pushed encrypted", mt)
	}
	if decrypt.IsEncrypted(string(mt)) {
		return "", fmt.Errorf("layer is already encrypted (%s)", mt)
	}
	return "", fmt.Errorf("layer media type %s is not supported", mt)
}

func layer(ec *occonfig.EncryptConfig, l v1.Layer, desc v1.Descriptor, diffID v1.Hash, path string) (mutate.Addendum, error) {
	mt, err := ociType(desc.MediaType)
	if err != nil {
		return mutate.Addendum{}, err
	}
	rc, err := l.Compressed()
	if err != nil {
		return mutate.Addendum{}, fmt.Errorf("reading: %w", err)
	}
	defer rc.Close()
	encR, finalize, err := ocicrypt.EncryptLayer(ec, rc, ocispec.Descriptor{
		MediaType: string(mt), Digest: digest.Digest(desc.Digest.String()), Size: desc.Size,
	})
	if err != nil {
		return mutate.Addendum{}, fmt.Errorf("encrypting: %w", err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return mutate.Addendum{}, err
	}
	h := v1.Hash{Algorithm: "sha256"}
	d := digest.SHA256.Digester()
	n, err := io.Copy(io.MultiWriter(f, d.Hash()), encR)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return mutate.Addendum{}, fmt.Errorf("encrypting: %w", err)
	}
	ann, err := finalize()
	if err != nil {
		return mutate.Addendum{}, fmt.Errorf("encrypting: %w", err)
	}
	h.Hex = d.Digest().Encoded()
	emt := types.MediaType(string(mt) + decrypt.EncryptedSuffix)
	return mutate.Addendum{
		Layer:       &fileLayer{path: path, digest: h, diffID: diffID, size: n, mediaType: emt},
		Annotations: ann,
		MediaType:   emt,
	}, nil
}

// fileLayer is an encrypted layer whose ciphertext is in a file.
type fileLayer struct {
	path      string
	digest    v1.Hash
	diffID    v1.Hash
	size      int64
	mediaType types.MediaType
}

func (l *fileLayer) Digest() (v1.Hash, error)            { return l.digest, nil }
func (l *fileLayer) DiffID() (v1.Hash, error)            { return l.diffID, nil }
func (l *fileLayer) Size() (int64, error)                { return l.size, nil }
func (l *fileLayer) MediaType() (types.MediaType, error) { return l.mediaType, nil }
func (l *fileLayer) Compressed() (io.ReadCloser, error)  { return os.Open(l.path) }
func (l *fileLayer) Uncompressed() (io.ReadCloser, error) {
	return nil, errors.New("an encrypted layer has no plaintext on the host")
}

// KeyType names a generated key pair's algorithm.
type KeyType string

// Key pair types GenerateKey makes.
const (
	RSA KeyType = "rsa" // RSA 3072, RSA-OAEP key wrapping
	EC  KeyType = "ec"  // P-256, ECDH-ES+A256KW key wrapping
)

// GenerateKey makes a key pair for layer encryption: the private key as
// PKCS#8 PEM ("PRIVATE KEY", what the guest gets from the broker) and the
// public key as PKIX PEM ("PUBLIC KEY", the recipient).
func GenerateKey(t KeyType) (privPEM, pubPEM []byte, err error) {
	var priv any
	switch t {
	case RSA:
		priv, err = rsa.GenerateKey(rand.Reader, 3072)
	case EC:
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	default:
		return nil, nil, fmt.Errorf("key type %q: want %s or %s", t, RSA, EC)
	}
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, nil, err
	}
	pub, err := x509.MarshalPKIXPublicKey(priv.(interface{ Public() crypto.PublicKey }).Public())
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), nil
}
