package main

import (
	"github.com/veil-runtime/veil/cmd/internal/cli"

	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/veil-runtime/veil/attestation/initdata"
	"github.com/veil-runtime/veil/attestation/podpolicy"
	"github.com/veil-runtime/veil/guest-agent/api"
	"github.com/veil-runtime/veil/guest-agent/policy"
	"github.com/veil-runtime/veil/shim"
)

const policyUsage = `usage:
  veil policy generate -f MANIFEST [-f MANIFEST]... [-o FILE]
                       [--pin digest|signature] [--insecure-registry HOST]...
                       [--broker-url URL] [--broker-cert FILE] [--image-policy FILE]
                       [--image-key kbs:///R/T/TAG]... [--registry-auth kbs:///R/T/TAG]
                       [--mirror REGISTRY=MIRROR]... [--registry-roots FILE]
        Write the init-data document that binds a confidential pod's spec:
        the agent policy's [[containers]] predict, for each container of the
        manifest's Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job or
        CronJob, the spec containerd will write (image, args, env, working dir,
        user, capabilities, seccomp, sysctls, mounts, allowed execs), and
        print the annotation to paste into the pod template:
            io.veil.initdata: <base64 of gzip>
        Give the ConfigMaps and Secrets the containers' env references with
        -f too: their values are bound exactly, otherwise any value is
        admitted for those variables.
        --pin digest (default): each image tag is resolved to its digest
        (linux/amd64) and bound as name@sha256:...; the pod must then use that
        reference. The registry must be reachable. Without --image-policy the
        document's image policy accepts only the pod's repositories.
        --pin signature: references are bound as written and --image-policy
        must demand a signature (sigstoreSigned) for each.
        With one workload the document goes to -o FILE (stdout without -o);
        with several, -o FILE is required and each goes to
        FILE-STEM-<kind>-<name>.EXT (initdata.toml -> initdata-deployment-web.toml).
        Pod template annotations:
            io.veil.policy/allow-read-output: "true"    the host may read the logs
            io.veil.policy/exec.<container>: '[["cat", "/tmp/ready"]]'
                                                        commands the host may exec
        Exec probes and exec lifecycle hooks are allowed automatically.
  veil policy check --initdata FILE | --annotation VALUE  --spec FILE [--image REF] [--name NAME]
        Decide a container spec as a confidential pod's agent would (the
        PullImage of its image, then CreateContainer), and say which rule
        denies it (exit status 1), or "allowed". --spec is an OCI
        config.json as containerd wrote it (a bundle's, or crictl inspect
        output, whose info.runtimeSpec is used); "-" reads stdin. The shim's
        rewriting is applied first (volumes as guest copies, the rootfs the
        guest-pulled image). --image and --name set the image and container
        name when the spec lacks the CRI's annotations.
Registry credentials come from the Docker config (~/.docker/config.json).`

func policyCmd(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New(policyUsage) //nolint:staticcheck // ST1005: the usage text is the message
	}
	switch args[0] {
	case "generate":
		return policyGenerate(context.Background(), args[1:], stdout, os.Stderr)
	case "check":
		return policyCheck(args[1:], stdout)
	case "-h", "--help", "help":
		fmt.Fprintln(stdout, policyUsage)
		return nil
	}
	return fmt.Errorf("policy: unknown subcommand %q\n%s", args[0], policyUsage)
}

func policyGenerate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("policy generate", flag.ContinueOnError)
	var manifests, insecure, keys listFlag
	fs.Var(&manifests, "f", "manifest file (YAML or JSON, several documents; repeatable; - is stdin)")
	fs.Var(&insecure, "insecure-registry", "registry host[:port] reached over plain HTTP (repeatable)")
	pin := fs.String("pin", string(podpolicy.PinDigest), "bind images by digest or signature")
	out := fs.String("o", "", "write the document here (with several workloads: FILE-STEM-<kind>-<name>.EXT)")
	brokerURL := fs.String("broker-url", "", "key broker URL")
	brokerCert := fs.String("broker-cert", "", "PEM certificate the guest trusts for the broker")
	imagePolicy := fs.String("image-policy", "", "image security policy file (containers-policy.json)")
	fs.Var(&keys, "image-key", "broker resource with a layer decryption key, kbs:///repo/type/tag (repeatable)")
	registryAuth := fs.String("registry-auth", "", "broker resource with registry credentials, kbs:///repo/type/tag")
	mirrors := mirrorFlags{}
	fs.Var(mirrors, "mirror", "registry mirror for the guest's pulls, REGISTRY=MIRROR (repeatable)")
	registryRoots := fs.String("registry-roots", "", "PEM file of extra TLS roots for registries")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	if len(manifests) == 0 || fs.NArg() != 0 {
		return errors.New("policy generate: want -f MANIFEST (and no other arguments)\n" + policyUsage) //nolint:staticcheck // ST1005: the usage text follows the message
	}
	if *pin != string(podpolicy.PinDigest) && *pin != string(podpolicy.PinSignature) {
		return fmt.Errorf("--pin %q: want digest or signature", *pin)
	}
	objs := &podpolicy.Objects{}
	for _, m := range manifests {
		var data []byte
		var err error
		if m == "-" {
			data, err = io.ReadAll(os.Stdin)
		} else {
			data, err = os.ReadFile(m)
		}
		if err != nil {
			return fmt.Errorf("reading manifest %s: %w", m, err)
		}
		o, err := podpolicy.Decode(m, data)
		if err != nil {
			return err
		}
		objs.Merge(o)
	}
	base := initdata.Document{Version: initdata.Version, Algorithm: initdata.Algorithm}
	base.Broker.URL = *brokerURL
	var err error
	if base.Broker.Cert, err = readOptional(*brokerCert); err != nil {
		return err
	}
	if base.Image.Policy, err = readOptional(*imagePolicy); err != nil {
		return err
	}
	if base.Image.TLSRoots, err = readOptional(*registryRoots); err != nil {
		return err
	}
	base.Image.Keys, base.Image.RegistryAuth = keys, *registryAuth
	if len(mirrors) > 0 {
		base.Image.Mirrors = mirrors
	}
	outs, err := podpolicy.GenerateDocuments(ctx, objs, podpolicy.Options{
		Resolver: &podpolicy.Resolver{Pin: podpolicy.Pin(*pin), Insecure: insecure},
		Base:     base,
		Source:   strings.Join(manifests, ", "),
	})
	if err != nil {
		return err
	}
	if len(outs) > 1 && *out == "" {
		return fmt.Errorf("the manifests hold %d workloads: give -o FILE (each goes to FILE-STEM-<kind>-<name>.EXT)", len(outs))
	}
	for _, o := range outs {
		for _, w := range o.Result.Warnings {
			fmt.Fprintln(stderr, "warning:", w)
		}
		refs := make([]string, 0, len(o.Rebound))
		for ref := range o.Rebound {
			refs = append(refs, ref)
		}
		sort.Strings(refs)
		for _, ref := range refs {
			fmt.Fprintf(stderr, "%s: image %s is bound as %s: use that reference in the manifest\n", o.Result.Workload.ID(), ref, o.Rebound[ref])
		}
		line := fmt.Sprintf("%s: %s", initdata.Annotation, o.Annotation)
		if *out == "" {
			if _, err := stdout.Write(o.Doc); err != nil {
				return err
			}
			fmt.Fprintf(stderr, "# paste into the pod template's metadata.annotations of %s:\n%s\n", o.Result.Workload.ID(), line)
			continue
		}
		file := *out
		if len(outs) > 1 {
			file = documentName(*out, o.Result.Workload)
		}
		if err := os.WriteFile(file, o.Doc, 0o644); err != nil {
			return fmt.Errorf("writing %s: %w", file, err)
		}
		fmt.Fprintf(stdout, "# %s -> %s; paste into the pod template's metadata.annotations:\n%s\n", o.Result.Workload.ID(), file, line)
	}
	return nil
}

// documentName is where a workload's document goes when a manifest holds
// several: initdata.toml -> initdata-deployment-web.toml.
func documentName(out string, w *podpolicy.Workload) string {
	ext := filepath.Ext(out)
	return strings.TrimSuffix(out, ext) + "-" + strings.ToLower(w.Kind) + "-" + w.Name + ext
}

func policyCheck(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("policy check", flag.ContinueOnError)
	docFile := fs.String("initdata", "", "init-data document (- is stdin)")
	annotation := fs.String("annotation", "", "the "+initdata.Annotation+" annotation value instead of --initdata")
	specFile := fs.String("spec", "", "OCI config.json, or crictl inspect output (- is stdin)")
	image := fs.String("image", "", "image reference (sets the "+shim.ImageNameAnnotation+" annotation)")
	name := fs.String("name", "", "container name (sets the "+containerNameAnnotation+" annotation)")
	if err := cli.Parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 || *specFile == "" || (*docFile == "") == (*annotation == "") {
		return errors.New("policy check: want --initdata FILE or --annotation VALUE, and --spec FILE\n" + policyUsage) //nolint:staticcheck // ST1005: the usage text follows the message
	}
	var doc []byte
	var err error
	if *annotation != "" {
		doc, err = initdata.DecodeAnnotation(*annotation)
	} else {
		doc, err = readInput(*docFile, initdata.MaxSize+1)
	}
	if err != nil {
		return err
	}
	d, err := initdata.Parse(doc)
	if err != nil {
		return err
	}
	p, err := policy.Parse(d.Agent.Policy)
	if err != nil {
		return err
	}
	raw, err := readInput(*specFile, 16<<20)
	if err != nil {
		return err
	}
	spec, err := runtimeSpec(raw)
	if err != nil {
		return fmt.Errorf("reading spec %s: %w", *specFile, err)
	}
	if spec.Annotations == nil {
		spec.Annotations = map[string]string{}
	}
	if *image != "" {
		spec.Annotations[shim.ImageNameAnnotation] = *image
	}
	if *name != "" {
		spec.Annotations[containerNameAnnotation] = *name
	}
	cname := spec.Annotations[containerNameAnnotation]
	if cname == "" {
		cname = "checked"
	}
	gspec, err := shim.ConfidentialGuestSpec(cname, spec)
	if err != nil {
		return err
	}
	// The shim first asks the guest to pull the container's image, then
	// to create the container from it: both are decided.
	ref := spec.Annotations[shim.ImageNameAnnotation]
	if den := p.Check(policy.MethodPullImage, &api.PullImageRequest{Image: ref, ContainerId: cname}); den != nil {
		return fmt.Errorf("denied: PullImage %s: rule %s: %s", ref, den.Rule, den.Why)
	}
	if den := p.CheckContainer(cname, ref, gspec); den != nil {
		return fmt.Errorf("denied: CreateContainer: rule %s: %s", den.Rule, den.Why)
	}
	_, err = fmt.Fprintf(stdout, "allowed: container %s (image %s) matches the init-data's policy\n", cname, spec.Annotations[shim.ImageNameAnnotation])
	return err
}

// containerNameAnnotation is the CRI's container name annotation.
const containerNameAnnotation = policy.ContainerNameAnnotation

// runtimeSpec reads an OCI spec, or crictl inspect output's
// info.runtimeSpec.
func runtimeSpec(raw []byte) (*specs.Spec, error) {
	var inspect struct {
		Info struct {
			RuntimeSpec json.RawMessage `json:"runtimeSpec"`
		} `json:"info"`
	}
	if err := json.Unmarshal(raw, &inspect); err != nil {
		return nil, err
	}
	if len(inspect.Info.RuntimeSpec) > 0 {
		raw = inspect.Info.RuntimeSpec
	}
	var s specs.Spec
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, err
	}
	if s.Process == nil {
		return nil, errors.New("no process: not an OCI runtime spec (or crictl inspect output with info.runtimeSpec)")
	}
	return &s, nil
}

func readInput(name string, limit int64) ([]byte, error) {
	var b []byte
	var err error
	if name == "-" {
		b, err = io.ReadAll(io.LimitReader(os.Stdin, limit))
	} else {
		b, err = os.ReadFile(name)
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	return b, nil
}
