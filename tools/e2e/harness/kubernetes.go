package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// KubernetesVersion is the Kubernetes release tools/k8s/build.sh builds
// (with etcd) into .cache/k8s/KubernetesVersion/bin.
const KubernetesVersion = "v1.37.2"

// The single-node cluster's fixed addresses, all inside the environment's
// network namespace (so they never collide with the host's or another
// environment's).
const (
	// NodeIP is the node's InternalIP, an address of the namespace's lo
	// (this kernel has no dummy interfaces): the kubelet refuses a
	// loopback node IP (127.0.0.0/8), and CNI's bridge appears only with
	// the first pod.
	NodeIP   = "10.87.0.1"
	NodeName = "veil-e2e"
	// apiPort is the API server's port, 443 so that the kubernetes
	// Service's ClusterIP (also an address of lo) reaches it without a
	// kube-proxy: pods using in-cluster config (the installer) work.
	apiPort     = "443"
	serviceCIDR = "10.96.0.0/24"
	serviceIP   = "10.96.0.1"
)

// Cluster is a single-node Kubernetes on an environment's containerd:
// etcd, kube-apiserver, kube-controller-manager, kube-scheduler and a
// kubelet, each a process in the environment's network namespace, with
// every file (certificates, etcd's data, the kubelet's root directory and
// pod logs) under Dir. No kube-proxy and no cluster DNS: Services get a
// ClusterIP that nothing routes, except the kubernetes Service's, which is
// an address of the node (see apiPort).
type Cluster struct {
	Dir        string // ENV/k8s
	BinDir     string // the Kubernetes binaries
	Kubeconfig string // cluster-admin (system:masters)
	// CgroupRoot is the kubelet's cgroupRoot, a top-level cgroup of the
	// environment's own (/veil-e2e-k8s-<test pid>-<suffix>) in every
	// mounted hierarchy: the kubelet makes its kubepods tree (QoS
	// classes, pod<uid> with the pod's limits plus its RuntimeClass
	// overhead) below it. Env.Close removes it with everything below.
	CgroupRoot string
	env        *Env
	daemons    []*daemon // in start order
}

type daemon struct {
	name string
	cmd  *exec.Cmd
	done chan error
}

// KubernetesBinDir is where tools/k8s/build.sh puts the binaries.
func (e *Env) KubernetesBinDir() string {
	return filepath.Join(e.RepoRoot, ".cache/k8s", KubernetesVersion, "bin")
}

// BuildKubernetes runs tools/k8s/build.sh: it returns at once when the
// pinned binaries are in KubernetesBinDir, waits for the build `make test`
// started in the background (the script holds a lock while it builds), and
// builds them itself otherwise. The script's output goes to w.
func (e *Env) BuildKubernetes(ctx context.Context, w io.Writer) error {
	cmd := exec.CommandContext(ctx, filepath.Join(e.RepoRoot, "tools/k8s/build.sh"), filepath.Join(e.RepoRoot, ".cache"))
	cmd.Dir = e.RepoRoot
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("tools/k8s/build.sh: %w", err)
	}
	return nil
}

// StartKubernetes starts the single-node cluster on the environment's
// containerd and waits until the node is Ready and the default service
// account exists. Env.Close stops it (Cluster.Stop stops it earlier).
func (e *Env) StartKubernetes(ctx context.Context) (c *Cluster, err error) {
	c = &Cluster{Dir: filepath.Join(e.Dir, "k8s"), BinDir: e.KubernetesBinDir(), env: e}
	for _, b := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kubectl"} {
		if _, err := os.Stat(filepath.Join(c.BinDir, b)); err != nil {
			return nil, fmt.Errorf("finding %s (Env.BuildKubernetes runs tools/k8s/build.sh): %w", b, err)
		}
	}
	e.beforeClose = append(e.beforeClose, c.Stop)
	defer func() {
		if err != nil {
			if serr := c.Stop(); serr != nil {
				e.log.Warn("stopping the cluster after a failed start", "err", serr)
			}
		}
	}()
	start := time.Now()
	for _, d := range []string{"pki", "etcd", "kubelet", "pod-logs", "run"} {
		if err := os.MkdirAll(filepath.Join(c.Dir, d), 0o700); err != nil {
			return c, fmt.Errorf("creating %s: %w", d, err)
		}
	}
	if out, err := e.NetNS.Command(ctx, "sh", "-c",
		"ip addr add "+NodeIP+"/32 dev lo && ip addr add "+serviceIP+"/32 dev lo").CombinedOutput(); err != nil {
		return c, fmt.Errorf("adding the node address %s: %w: %s", NodeIP, err, out)
	}
	// The kubelet refuses a cgroupRoot that is missing from a hierarchy.
	c.CgroupRoot = kubeCgroupName(os.Getpid(), e.Dir)
	e.kubeCgroup = c.CgroupRoot
	if err := makeCgroupRoot(c.CgroupRoot); err != nil {
		return c, err
	}
	if err := c.writeFiles(); err != nil {
		return c, err
	}
	pki := filepath.Join(c.Dir, "pki")
	p := func(name string) string { return filepath.Join(pki, name) }

	if err := c.startDaemon("etcd", "etcd", "--name=node", "--data-dir="+filepath.Join(c.Dir, "etcd"),
		"--listen-client-urls=http://127.0.0.1:2379", "--advertise-client-urls=http://127.0.0.1:2379",
		"--listen-peer-urls=http://127.0.0.1:2380", "--initial-advertise-peer-urls=http://127.0.0.1:2380",
		"--initial-cluster=node=http://127.0.0.1:2380", "--unsafe-no-fsync", "--log-level=warn"); err != nil {
		return c, err
	}
	if err := c.startDaemon("kube-apiserver", "kube-apiserver",
		"--etcd-servers=http://127.0.0.1:2379", "--bind-address=0.0.0.0", "--secure-port="+apiPort,
		"--advertise-address="+NodeIP, "--cert-dir="+pki,
		"--tls-cert-file="+p("apiserver.crt"), "--tls-private-key-file="+p("apiserver.key"),
		"--client-ca-file="+p("ca.crt"),
		"--kubelet-client-certificate="+p("apiserver-kubelet-client.crt"), "--kubelet-client-key="+p("apiserver-kubelet-client.key"),
		"--kubelet-certificate-authority="+p("ca.crt"), "--kubelet-preferred-address-types=InternalIP",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+p("sa.pub"), "--service-account-signing-key-file="+p("sa.key"),
		"--service-cluster-ip-range="+serviceCIDR, "--authorization-mode=Node,RBAC", "--allow-privileged=true",
		"--profiling=false"); err != nil {
		return c, err
	}
	if err := c.waitFor(ctx, "the API server", 3*time.Minute, func(ctx context.Context) error {
		_, err := c.env.Run(ctx, c.Kubectl(ctx, "get", "--raw", "/readyz"))
		return err
	}); err != nil {
		return c, err
	}
	e.log.Info("kube-apiserver ready", "took", time.Since(start).Round(time.Millisecond))
	if err := c.startDaemon("kube-controller-manager", "kube-controller-manager",
		"--kubeconfig="+filepath.Join(c.Dir, "controller-manager.kubeconfig"), "--leader-elect=false",
		"--bind-address=127.0.0.1", "--cert-dir="+filepath.Join(c.Dir, "run"),
		"--service-account-private-key-file="+p("sa.key"), "--root-ca-file="+p("ca.crt"),
		"--use-service-account-credentials=true", "--profiling=false"); err != nil {
		return c, err
	}
	if err := c.startDaemon("kube-scheduler", "kube-scheduler",
		"--kubeconfig="+filepath.Join(c.Dir, "scheduler.kubeconfig"), "--leader-elect=false",
		"--bind-address=127.0.0.1", "--cert-dir="+filepath.Join(c.Dir, "run"), "--profiling=false"); err != nil {
		return c, err
	}
	if err := c.startDaemon("kubelet", "kubelet",
		"--config="+filepath.Join(c.Dir, "kubelet.yaml"), "--kubeconfig="+filepath.Join(c.Dir, "kubelet.kubeconfig"),
		"--root-dir="+filepath.Join(c.Dir, "kubelet"), "--cert-dir="+filepath.Join(c.Dir, "run"),
		"--hostname-override="+NodeName, "--node-ip="+NodeIP); err != nil {
		return c, err
	}
	if err := c.waitFor(ctx, "node "+NodeName+" Ready and the default service account", 3*time.Minute, func(ctx context.Context) error {
		out, err := c.env.Run(ctx, c.Kubectl(ctx, "get", "node", NodeName, "-o",
			`jsonpath={.status.conditions[?(@.type=="Ready")].status}`))
		if err != nil {
			return err
		}
		if out != "True" {
			return fmt.Errorf("node Ready condition %q, want True", out)
		}
		// Pods are refused until the service account controller made
		// "default", and wait for kube-root-ca.crt (their token volume).
		if _, err := c.env.Run(ctx, c.Kubectl(ctx, "get", "serviceaccount/default", "configmap/kube-root-ca.crt")); err != nil {
			return err
		}
		return nil
	}); err != nil {
		return c, err
	}
	e.log.Info("kubernetes ready", "node", NodeName, "took", time.Since(start).Round(time.Millisecond))
	return c, nil
}

// Kubectl returns a kubectl command as cluster-admin, in the namespace
// (the API server listens there only).
func (c *Cluster) Kubectl(ctx context.Context, args ...string) *exec.Cmd {
	return c.env.NetNS.Command(ctx, filepath.Join(c.BinDir, "kubectl"), append([]string{"--kubeconfig=" + c.Kubeconfig}, args...)...)
}

// waitFor polls check every half second until it succeeds, a daemon exits,
// or timeout passes.
func (c *Cluster) waitFor(ctx context.Context, what string, timeout time.Duration, check func(context.Context) error) error {
	deadline := time.Now().Add(timeout)
	for {
		cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		err := check(cctx)
		cancel()
		if err == nil {
			return nil
		}
		for _, d := range c.daemons {
			select {
			case derr := <-d.done:
				d.done <- derr
				return fmt.Errorf("waiting for %s: %s exited (%w); see %s", what, d.name, derr,
					filepath.Join(c.env.LogDir, d.name+".log"))
			default:
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("waiting for %s: %w (logs in %s)", what, err, c.env.LogDir)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// startDaemon runs one of the cluster's programs in the namespace, its
// output in LogDir/name.log. It lives until Stop (or Env.Close).
func (c *Cluster) startDaemon(name, bin string, args ...string) error {
	logf, err := os.Create(filepath.Join(c.env.LogDir, name+".log"))
	if err != nil {
		return fmt.Errorf("creating the %s log: %w", name, err)
	}
	defer logf.Close()
	cmd := c.env.NetNS.Command(context.Background(), filepath.Join(c.BinDir, bin), args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = c.Dir // so a crashed test's sweep finds it by its cwd
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", name, err)
	}
	d := &daemon{name: name, cmd: cmd, done: make(chan error, 1)}
	go func() { d.done <- cmd.Wait() }()
	c.daemons = append(c.daemons, d)
	return nil
}

// Stop stops the cluster's programs, the kubelet first and etcd last
// (SIGTERM, SIGKILL after ten seconds). The pods stay in containerd for
// Env.Close to remove. Stopping twice is fine.
func (c *Cluster) Stop() error {
	var errs []error
	for i := len(c.daemons) - 1; i >= 0; i-- {
		d := c.daemons[i]
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-d.done:
			if err != nil && !stoppedOK(d.name, err) {
				errs = append(errs, fmt.Errorf("stopping %s: %w", d.name, err))
			}
		case <-time.After(10 * time.Second):
			_ = d.cmd.Process.Kill()
			if err := <-d.done; err != nil && !stoppedOK(d.name, err) {
				errs = append(errs, fmt.Errorf("stopping %s: %w", d.name, err))
			}
		}
	}
	c.daemons = nil
	return errors.Join(errs...)
}

// stopExitCodes are exit codes a daemon returns on SIGTERM by design:
// kube-scheduler without leader election ends its run with "finished
// without leader elect" and exit status 1.
var stopExitCodes = map[string]int{"kube-scheduler": 1}

// stoppedOK reports whether err is how daemon name ends on SIGTERM.
func stoppedOK(name string, err error) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	if !ee.Exited() {
		return true
	}
	code, ok := stopExitCodes[name]
	return ok && ee.ExitCode() == code
}

// writeFiles writes the certificates, kubeconfigs and the kubelet's config.
func (c *Cluster) writeFiles() error {
	pkiDir := filepath.Join(c.Dir, "pki")
	ca, err := newPKI(pkiDir)
	if err != nil {
		return err
	}
	if err := ca.serviceAccountKey(); err != nil {
		return err
	}
	node := net.ParseIP(NodeIP)
	loop := net.ParseIP("127.0.0.1")
	for _, r := range []certRequest{
		{name: "apiserver", cn: "kube-apiserver", server: true, ips: []net.IP{loop, node, net.ParseIP(serviceIP)},
			dns: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}},
		{name: "apiserver-kubelet-client", cn: "kube-apiserver-kubelet-client", orgs: []string{"system:masters"}, client: true},
		{name: "admin", cn: "kubernetes-admin", orgs: []string{"system:masters"}, client: true},
		{name: "controller-manager", cn: "system:kube-controller-manager", client: true},
		{name: "scheduler", cn: "system:kube-scheduler", client: true},
		{name: "kubelet-client", cn: "system:node:" + NodeName, orgs: []string{"system:nodes"}, client: true},
		{name: "kubelet", cn: NodeName, server: true, ips: []net.IP{node, loop}, dns: []string{NodeName}},
	} {
		if err := ca.issue(r); err != nil {
			return err
		}
	}
	p := func(name string) string { return filepath.Join(pkiDir, name) }
	kubeconfig := func(user string) string {
		return fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: veil-e2e
  cluster:
    server: https://127.0.0.1:%s
    certificate-authority: %s
users:
- name: %s
  user:
    client-certificate: %s
    client-key: %s
contexts:
- name: veil-e2e
  context: {cluster: veil-e2e, user: %s}
current-context: veil-e2e
`, apiPort, p("ca.crt"), user, p(user+".crt"), p(user+".key"), user)
	}
	c.Kubeconfig = filepath.Join(c.Dir, "admin.kubeconfig")
	files := map[string]string{
		"admin.kubeconfig":              kubeconfig("admin"),
		"controller-manager.kubeconfig": kubeconfig("controller-manager"),
		"scheduler.kubeconfig":          kubeconfig("scheduler"),
		"kubelet.kubeconfig":            kubeconfig("kubelet-client"),
		"kubelet.yaml":                  c.kubeletConfig(),
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(c.Dir, name), []byte(content), 0o600); err != nil {
			return fmt.Errorf("writing %s: %w", name, err)
		}
	}
	return nil
}

// kubeletConfig is the kubelet's KubeletConfiguration, fitted to a shared
// host it must not disturb (and to this machine's cgroup v1 hierarchy):
//   - cgroupsPerQOS with cgroupRoot CgroupRoot: the kubelet's kubepods
//     tree (kubepods/burstable/pod<uid>, the pod's limits plus its
//     RuntimeClass overhead; the sandbox's cgroup, where veil puts QEMU, is
//     below it) is the environment's, never the host's /kubepods;
//   - no node allocatable enforcement (enforceNodeAllocatable empty; QoS
//     cgroups do not need it): kubepods is sized to the node's capacity,
//     no reservation is taken from the host;
//   - failCgroupV1 false: recent kubelets refuse cgroup v1 otherwise;
//   - failSwapOn false, localStorageCapacityIsolation false, eviction and
//     image garbage collection thresholds that never trigger: the host's
//     swap, disks and memory are other people's business;
//   - the pod logs and every mount (volumes, tokens) under Dir;
//   - syncFrequency 10s: a configMap update reaches a running pod within
//     that (the default minute would dominate the scenario).
func (c *Cluster) kubeletConfig() string {
	p := filepath.Join(c.Dir, "pki")
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %s
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: %s/kubelet.crt
tlsPrivateKeyFile: %s/kubelet.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: %s/ca.crt}
authorization: {mode: AlwaysAllow}
containerRuntimeEndpoint: unix://%s
imageServiceEndpoint: unix://%s
podLogsDir: %s
cgroupDriver: cgroupfs
cgroupsPerQOS: true
cgroupRoot: %s
enforceNodeAllocatable: []
failCgroupV1: false
failSwapOn: false
localStorageCapacityIsolation: false
evictionHard: {memory.available: "1Mi", nodefs.available: "1%%", imagefs.available: "1%%", nodefs.inodesFree: "1%%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
runtimeRequestTimeout: 10m
syncFrequency: 10s
fileCheckFrequency: 10s
rotateCertificates: false
resolvConf: ""
staticPodPath: ""
`, NodeIP, p, p, p, c.env.Address, c.env.Address, filepath.Join(c.Dir, "pod-logs"), c.CgroupRoot)
}

// Label sets labels (KEY=VALUE) on the node, as veil install's --label
// would.
func (c *Cluster) Label(ctx context.Context, labels ...string) error {
	_, err := c.env.Run(ctx, c.Kubectl(ctx, append([]string{"label", "--overwrite", "node", NodeName}, labels...)...))
	return err
}

// Apply applies manifests (YAML) with kubectl.
func (c *Cluster) Apply(ctx context.Context, manifest string) error {
	cmd := c.Kubectl(ctx, "apply", "-f", "-")
	cmd.Stdin = strings.NewReader(manifest)
	_, err := c.env.Run(ctx, cmd)
	return err
}
