package main

import (
	"github.com/veil-runtime/veil/cmd/internal/cli"

	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/veil-runtime/veil/attestation/initdata"
	"github.com/veil-runtime/veil/image/policy"
)

const initdataUsage = `usage:
  veil initdata build [--broker-url URL] [--broker-cert FILE] [--agent-policy FILE]
                      [--image-policy FILE] [--image-key kbs:///R/T/TAG]... [--registry-auth kbs:///R/T/TAG]
                      [--mirror REGISTRY=MIRROR]... [--registry-roots FILE] [--file NAME=PATH]... [-o FILE]
  veil initdata print  FILE | --annotation VALUE    the document, its digests and annotation
  veil initdata digest [--field sha256|hostdata|mrconfigid|annotation] FILE | --annotation VALUE
  veil initdata check  [--digest HEX] FILE | --annotation VALUE
FILE "-" reads stdin.`

func initdataCmd(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New(initdataUsage) //nolint:staticcheck // ST1005: the usage text is the message
	}
	switch args[0] {
	case "build":
		return initdataBuild(args[1:], stdout)
	case "print":
		return initdataPrint(args[1:], stdout)
	case "digest":
		return initdataDigest(args[1:], stdout)
	case "check":
		return initdataCheck(args[1:], stdout)
	case "-h", "--help", "help":
		fmt.Fprintln(stdout, initdataUsage)
		return nil
	}
	return fmt.Errorf("initdata: unknown subcommand %q\n%s", args[0], initdataUsage)
}

// fileFlags collects repeated NAME=PATH flags.
type fileFlags map[string]string

func (f fileFlags) String() string { return fmt.Sprint(map[string]string(f)) }
func (f fileFlags) Set(v string) error {
	name, path, ok := strings.Cut(v, "=")
	if !ok || name == "" || path == "" {
		return fmt.Errorf("--file %q: want NAME=PATH", v)
	}
	f[name] = path
	return nil
}

// listFlag collects a repeated flag's values.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// mirrorFlags collects repeated REGISTRY=MIRROR flags, in order.
type mirrorFlags map[string][]string

func (m mirrorFlags) String() string { return fmt.Sprint(map[string][]string(m)) }
func (m mirrorFlags) Set(v string) error {
	reg, mirror, ok := strings.Cut(v, "=")
	if !ok || reg == "" || mirror == "" {
		return fmt.Errorf("--mirror %q: want REGISTRY=MIRROR", v)
	}
	m[reg] = append(m[reg], mirror)
	return nil
}

func initdataBuild(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("initdata build", flag.ContinueOnError)
	brokerURL := fs.String("broker-url", "", "key broker URL")
	brokerCert := fs.String("broker-cert", "", "PEM certificate the guest trusts for the broker")
	agentPolicy := fs.String("agent-policy", "", "agent policy file")
	imagePolicy := fs.String("image-policy", "", "image security policy file (containers-policy.json)")
	out := fs.String("o", "", "write the document here instead of stdout")
	files := fileFlags{}
	fs.Var(files, "file", "extra file for the guest, NAME=PATH (repeatable)")
	var keys listFlag
	fs.Var(&keys, "image-key", "broker resource with a layer decryption key, kbs:///repo/type/tag (repeatable)")
	registryAuth := fs.String("registry-auth", "", "broker resource with registry credentials (Docker config.json), kbs:///repo/type/tag")
	mirrors := mirrorFlags{}
	fs.Var(mirrors, "mirror", "registry mirror for guest pull, REGISTRY=MIRROR (repeatable; tried in order)")
	registryRoots := fs.String("registry-roots", "", "PEM file of extra TLS roots for registries")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	d := &initdata.Document{Version: initdata.Version, Algorithm: initdata.Algorithm}
	d.Broker.URL = *brokerURL
	var err error
	if d.Broker.Cert, err = readOptional(*brokerCert); err != nil {
		return err
	}
	if d.Agent.Policy, err = readOptional(*agentPolicy); err != nil {
		return err
	}
	if d.Image.Policy, err = readOptional(*imagePolicy); err != nil {
		return err
	}
	d.Image.Keys, d.Image.RegistryAuth = keys, *registryAuth
	if d.Image.Policy != "" && len(keys) > 0 {
		// The guest refuses it at the first pull; say so now.
		pol, err := policy.Parse([]byte(d.Image.Policy))
		if err != nil {
			return fmt.Errorf("--image-policy %s: %w", *imagePolicy, err)
		}
		if err := pol.RequireSigned(); err != nil {
			return fmt.Errorf("--image-policy %s with --image-key: %w", *imagePolicy, err)
		}
	}
	if len(mirrors) > 0 {
		d.Image.Mirrors = mirrors
	}
	if d.Image.TLSRoots, err = readOptional(*registryRoots); err != nil {
		return err
	}
	if len(files) > 0 {
		d.Data = map[string]string{}
		for name, path := range files {
			if d.Data[name], err = readOptional(path); err != nil {
				return err
			}
		}
	}
	if err := d.Validate(); err != nil {
		return err
	}
	doc, err := initdata.Marshal(d)
	if err != nil {
		return err
	}
	// What we wrote must be what the runtime and the guest accept.
	if _, err := initdata.Parse(doc); err != nil {
		return fmt.Errorf("checking the built document: %w", err)
	}
	if *out == "" {
		_, err = stdout.Write(doc)
		return err
	}
	if err := os.WriteFile(*out, doc, 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", *out, err)
	}
	return nil
}

func readOptional(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", path, err)
	}
	return string(b), nil
}

// loadDoc reads a document from FILE, stdin ("-") or --annotation and
// checks that it parses.
func loadDoc(fs *flag.FlagSet, annotation string) ([]byte, error) {
	doc, err := readDoc(fs, annotation)
	if err != nil {
		return nil, err
	}
	if _, err := initdata.Parse(doc); err != nil {
		return nil, err
	}
	return doc, nil
}

func readDoc(fs *flag.FlagSet, annotation string) ([]byte, error) {
	if annotation != "" {
		if fs.NArg() != 0 {
			return nil, errors.New("give a FILE or --annotation, not both")
		}
		return initdata.DecodeAnnotation(annotation)
	}
	if fs.NArg() != 1 {
		return nil, errors.New("want one FILE argument (or --annotation VALUE)")
	}
	name := fs.Arg(0)
	var doc []byte
	var err error
	if name == "-" {
		doc, err = io.ReadAll(io.LimitReader(os.Stdin, initdata.MaxSize+1))
	} else {
		doc, err = os.ReadFile(name)
	}
	if err != nil {
		return nil, fmt.Errorf("reading init-data %s: %w", name, err)
	}
	return doc, nil
}

func initdataPrint(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("initdata print", flag.ContinueOnError)
	annotation := fs.String("annotation", "", "decode this "+initdata.Annotation+" annotation value")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	doc, err := loadDoc(fs, *annotation)
	if err != nil {
		return err
	}
	ann, err := initdata.EncodeAnnotation(doc)
	if err != nil {
		return err
	}
	d := initdata.Digest(doc)
	host := initdata.SNPHostData(doc)
	mr := initdata.TDXMRConfigID(doc)
	fmt.Fprintf(stdout, "%s\n# sha256:         %s\n# snp hostdata:   %s\n# tdx mrconfigid: %s\n# annotation %s=%s\n",
		strings.TrimRight(string(doc), "\n"), hex.EncodeToString(d[:]), hex.EncodeToString(host[:]), hex.EncodeToString(mr[:]), initdata.Annotation, ann)
	return nil
}

func initdataDigest(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("initdata digest", flag.ContinueOnError)
	annotation := fs.String("annotation", "", "decode this "+initdata.Annotation+" annotation value")
	field := fs.String("field", "sha256", "sha256, hostdata (SNP, 32 bytes), mrconfigid (TDX, 48 bytes) or annotation")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	doc, err := loadDoc(fs, *annotation)
	if err != nil {
		return err
	}
	var out string
	switch *field {
	case "sha256":
		d := initdata.Digest(doc)
		out = hex.EncodeToString(d[:])
	case "hostdata":
		d := initdata.SNPHostData(doc)
		out = hex.EncodeToString(d[:])
	case "mrconfigid":
		d := initdata.TDXMRConfigID(doc)
		out = hex.EncodeToString(d[:])
	case "annotation":
		if out, err = initdata.EncodeAnnotation(doc); err != nil {
			return err
		}
	default:
		return fmt.Errorf("--field %q: want sha256, hostdata, mrconfigid or annotation", *field)
	}
	_, err = fmt.Fprintln(stdout, out)
	return err
}

func initdataCheck(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("initdata check", flag.ContinueOnError)
	annotation := fs.String("annotation", "", "decode this "+initdata.Annotation+" annotation value")
	want := fs.String("digest", "", "expected digest (hex sha256, hostdata or mrconfigid)")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	doc, err := loadDoc(fs, *annotation)
	if err != nil {
		return err
	}
	d := initdata.Digest(doc)
	got := hex.EncodeToString(d[:])
	if *want != "" {
		w := strings.ToLower(strings.TrimSpace(*want))
		// A hostdata or mrconfigid value is the digest, zero padded.
		if strings.TrimRight(w, "0") != strings.TrimRight(got, "0") || len(w) < len(got) {
			return fmt.Errorf("init-data digest: expected %s, seen %s", w, got)
		}
	}
	_, err = fmt.Fprintf(stdout, "ok %s\n", got)
	return err
}
