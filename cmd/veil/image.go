package main

import (
	"github.com/veil-runtime/veil/cmd/internal/cli"

	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/veil-runtime/veil/image/encrypt"
	"github.com/veil-runtime/veil/image/sign"
)

const imageUsage = `usage:
  veil image encrypt (--recipient jwe:PUBKEY.pem)... [--generate-key FILE [--key-type rsa|ec]]
                     [--resource REPO/TYPE/TAG] [--platform OS/ARCH] [--insecure] SRC DST
        encrypt every layer of SRC (a registry reference, or an OCI layout directory)
        with ocicrypt for the recipients and push the result to DST
  veil image sign --key KEY.pem [--format bundle|legacy] [--insecure] REF
        sign REF's digest with a key, in a format image/policy's sigstoreSigned
        verifies in the guest: bundle (default, as cosign v3 signs: a Sigstore
        bundle attached as an OCI referrer) or legacy (cosign's simple-signing
        payload under the sha256-<hex>.sig tag)
  veil image keygen [-o PREFIX]
        write an ECDSA P-256 signing key pair: PREFIX.key (PEM, 0600) and PREFIX.pub
--insecure: the registry speaks plain HTTP (or TLS without a trusted certificate).
Registry credentials come from the Docker config (~/.docker/config.json).`

func imageCmd(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New(imageUsage) //nolint:staticcheck // ST1005: the usage text is the message
	}
	switch args[0] {
	case "encrypt":
		return imageEncrypt(context.Background(), args[1:], stdout)
	case "sign":
		return imageSign(args[1:], stdout)
	case "keygen":
		return imageKeygen(args[1:], stdout)
	case "-h", "--help", "help":
		fmt.Fprintln(stdout, imageUsage)
		return nil
	}
	return fmt.Errorf("image: unknown subcommand %q\n%s", args[0], imageUsage)
}

// registryOptions are the options every registry call of `veil image` uses.
func registryOptions(ctx context.Context, platform *v1.Platform, insecure bool) []remote.Option {
	opts := []remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain), remote.WithUserAgent("veil-image")}
	if insecure {
		t := remote.DefaultTransport.(*http.Transport).Clone()
		t.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // --insecure asks for it
		opts = append(opts, remote.WithTransport(t))
	}
	if platform != nil {
		opts = append(opts, remote.WithPlatform(*platform))
	}
	return opts
}

func parseRef(s string, insecure bool) (name.Reference, error) {
	var o []name.Option
	if insecure {
		o = append(o, name.Insecure)
	}
	r, err := name.ParseReference(s, o...)
	if err != nil {
		return nil, fmt.Errorf("%q is not an image reference: %w", s, err)
	}
	return r, nil
}

// readSource reads src: an OCI layout directory (also as oci:DIR), else a
// registry reference.
func readSource(src string, insecure bool, platform v1.Platform, opts []remote.Option) (v1.Image, error) {
	dir, isLayout := strings.CutPrefix(src, "oci:")
	if !isLayout {
		if fi, err := os.Stat(src); err == nil && fi.IsDir() {
			isLayout = true
		}
	}
	if isLayout {
		return fromLayout(dir, platform)
	}
	ref, err := parseRef(src, insecure)
	if err != nil {
		return nil, err
	}
	img, err := remote.Image(ref, opts...)
	if err != nil {
		return nil, fmt.Errorf("reading image %s: %w", ref, err)
	}
	return img, nil
}

// fromLayout picks the layout's only image, or the one for platform.
func fromLayout(dir string, platform v1.Platform) (v1.Image, error) {
	p, err := layout.FromPath(dir)
	if err != nil {
		return nil, fmt.Errorf("%s is not an OCI layout: %w", dir, err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		return nil, fmt.Errorf("OCI layout %s: %w", dir, err)
	}
	for range 4 { // nested indexes, bounded
		m, err := idx.IndexManifest()
		if err != nil {
			return nil, fmt.Errorf("OCI layout %s: %w", dir, err)
		}
		var pick *v1.Descriptor
		for i, d := range m.Manifests {
			if len(m.Manifests) == 1 || d.Platform == nil || d.Platform.Satisfies(platform) {
				pick = &m.Manifests[i]
				break
			}
		}
		if pick == nil {
			return nil, fmt.Errorf("OCI layout %s has no image for %s", dir, platform)
		}
		if pick.MediaType.IsIndex() {
			if idx, err = idx.ImageIndex(pick.Digest); err != nil {
				return nil, fmt.Errorf("OCI layout %s: %w", dir, err)
			}
			continue
		}
		img, err := idx.Image(pick.Digest)
		if err != nil {
			return nil, fmt.Errorf("OCI layout %s: image %s: %w", dir, pick.Digest, err)
		}
		return img, nil
	}
	return nil, fmt.Errorf("OCI layout %s: indexes nested too deep", dir)
}

func imageEncrypt(ctx context.Context, args []string, stdout io.Writer) (err error) {
	fs := flag.NewFlagSet("image encrypt", flag.ContinueOnError)
	var recipients listFlag
	fs.Var(&recipients, "recipient", "jwe:PUBKEY.pem: a recipient's public key (PEM, RSA or EC); repeatable")
	genKey := fs.String("generate-key", "", "generate a key pair: the private key to FILE (0600), the public key to FILE.pub; it becomes a recipient")
	keyType := fs.String("key-type", "rsa", "type of the generated key: rsa (RSA-OAEP) or ec (P-256, ECDH-ES)")
	resource := fs.String("resource", "default/image-key/app", "broker resource path the instructions name for the generated key")
	plat := fs.String("platform", "linux/amd64", "platform picked when SRC is an index")
	insecure := fs.Bool("insecure", false, "plain-HTTP (or untrusted TLS) registries")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return fmt.Errorf("image encrypt: want SRC and DST\n%s", imageUsage)
	}
	src, dst := fs.Arg(0), fs.Arg(1)
	platform, err := v1.ParsePlatform(*plat)
	if err != nil {
		return fmt.Errorf("--platform %q: %w", *plat, err)
	}
	var pubs [][]byte
	for _, r := range recipients {
		file, ok := strings.CutPrefix(r, "jwe:")
		if !ok {
			return fmt.Errorf("--recipient %q: only jwe:PUBKEY.pem recipients are supported", r)
		}
		b, err := os.ReadFile(file)
		if err != nil {
			return fmt.Errorf("--recipient: %w", err)
		}
		if err := encrypt.CheckRecipient(b); err != nil {
			return fmt.Errorf("--recipient %s: %w", file, err)
		}
		pubs = append(pubs, b)
	}
	if *genKey == "" && len(pubs) == 0 {
		return errors.New("image encrypt: no recipient: give --recipient jwe:PUBKEY.pem or --generate-key FILE")
	}
	dstRef, err := parseRef(dst, *insecure)
	if err != nil {
		return fmt.Errorf("DST: %w", err)
	}
	opts := registryOptions(ctx, platform, *insecure)
	img, err := readSource(src, *insecure, *platform, opts)
	if err != nil {
		return err
	}
	if *genKey != "" {
		priv, pub, gerr := encrypt.GenerateKey(encrypt.KeyType(*keyType))
		if gerr != nil {
			return fmt.Errorf("--key-type: %w", gerr)
		}
		if werr := writeNew(*genKey, priv, 0o600); werr != nil {
			return werr
		}
		if werr := writeNew(*genKey+".pub", pub, 0o644); werr != nil {
			os.Remove(*genKey)
			return werr
		}
		pubs = append(pubs, pub)
		defer func() {
			if err != nil { // nothing was pushed for this key
				os.Remove(*genKey)
				os.Remove(*genKey + ".pub")
			}
		}()
	}
	tmp, err := os.MkdirTemp("", "veil-image-encrypt-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	enc, err := encrypt.Image(img, pubs, tmp)
	if err != nil {
		return fmt.Errorf("encrypting %s: %w", src, err)
	}
	if err := remote.Write(dstRef, enc, opts...); err != nil {
		return fmt.Errorf("pushing %s: %w", dstRef, err)
	}
	d, err := enc.Digest()
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "pushed %s@%s (%d recipient(s))\n", dstRef.Context(), d, len(pubs))
	if *genKey != "" {
		fmt.Fprint(stdout, registerHelp(*genKey, *resource))
	}
	return nil
}

// registerHelp tells how the guest gets the private key.
func registerHelp(keyFile, resource string) string {
	abs, err := filepath.Abs(keyFile)
	if err != nil {
		abs = keyFile
	}
	return fmt.Sprintf(`private key: %[1]s (public: %[1]s.pub)
register it with veil-kbs as a resource and allow it to your pods' TEE (on the broker's host:
the admin API listens on loopback, or give --url https://KBS:8081 with --client-cert for mTLS):
  veil-kbs resource set --admin-token-file /var/lib/veil-kbs/admin-token %[2]s %[1]s
  veil-kbs resource-policy set rules.json   # a rule {"resource": "%[2]s", "tees": ["snp", "tdx"], "init_data_digests": [...]}
and name it in the pods' init-data:
  veil initdata build --broker-url https://KBS:8080 --image-policy policy.json --image-key kbs:///%[2]s ...
`, abs, resource)
}

// writeNew writes a file that must not exist yet.
func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
	}
	return err
}

func imageSign(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("image sign", flag.ContinueOnError)
	keyFile := fs.String("key", "", "PEM private key (from veil image keygen; ECDSA, RSA or Ed25519)")
	format := fs.String("format", "bundle", "bundle (cosign v3: a Sigstore bundle as an OCI referrer) or legacy (the .sig tag)")
	insecure := fs.Bool("insecure", false, "plain-HTTP (or untrusted TLS) registry")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 || *keyFile == "" {
		return fmt.Errorf("image sign: want --key KEY.pem and REF\n%s", imageUsage)
	}
	if *format != "bundle" && *format != "legacy" {
		return fmt.Errorf("image sign: --format %q: want bundle or legacy", *format)
	}
	b, err := os.ReadFile(*keyFile)
	if err != nil {
		return fmt.Errorf("--key: %w", err)
	}
	key, err := sign.ParsePrivateKey(b)
	if err != nil {
		return fmt.Errorf("--key %s: %w", *keyFile, err)
	}
	ref, err := parseRef(fs.Arg(0), *insecure)
	if err != nil {
		return err
	}
	opts := registryOptions(context.Background(), nil, *insecure)
	if *format == "bundle" {
		res, err := sign.SignBundle(ref, key, opts...)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "signed %s (%s); Sigstore bundle in referrer %s@%s\n", ref, res.Digest, ref.Context(), res.Referrer)
		return nil
	}
	res, err := sign.Sign(ref, key, opts...)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "signed %s (%s); signature in %s\n", ref, res.Digest, res.Tag)
	return nil
}

func imageKeygen(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("image keygen", flag.ContinueOnError)
	prefix := fs.String("o", "cosign", "output prefix: PREFIX.key and PREFIX.pub")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("image keygen: unexpected arguments %v\n%s", fs.Args(), imageUsage)
	}
	priv, pub, err := sign.Keygen()
	if err != nil {
		return err
	}
	if err := writeNew(*prefix+".key", priv, 0o600); err != nil {
		return err
	}
	if err := writeNew(*prefix+".pub", pub, 0o644); err != nil {
		os.Remove(*prefix + ".key")
		return err
	}
	fmt.Fprintf(stdout, "wrote %[1]s.key (private, PEM) and %[1]s.pub (the keyData/keyPath of a sigstoreSigned policy)\n", *prefix)
	return nil
}
