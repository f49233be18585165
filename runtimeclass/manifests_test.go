package runtimeclass

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	nodev1 "k8s.io/api/node/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/veil-runtime/veil/runtimeclass/containerdcfg"
	"github.com/veil-runtime/veil/runtimeclass/install"
)

// kustomization is the part of kustomize's file format veil uses.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Resources  []string `json:"resources"`
	Patches    []struct {
		Path string `json:"path"`
	} `json:"patches"`
	Images []struct {
		Name    string `json:"name"`
		NewTag  string `json:"newTag"`
		NewName string `json:"newName"`
	} `json:"images"`
}

// objects holds every manifest object, decoded strictly.
type objects struct {
	runtimeClasses []nodev1.RuntimeClass
	daemonSets     []appsv1.DaemonSet
	serviceAccts   []corev1.ServiceAccount
	namespaces     []corev1.Namespace
	clusterRoles   []rbacv1.ClusterRole
	bindings       []rbacv1.ClusterRoleBinding
	policies       []admissionv1.ValidatingAdmissionPolicy
	policyBindings []admissionv1.ValidatingAdmissionPolicyBinding
	pods           []corev1.Pod
}

var docSep = regexp.MustCompile(`(?m)^---\s*$`)

// decodeFile decodes every YAML document of path into its k8s.io/api type;
// an unknown field, kind or apiVersion fails the test.
func decodeFile(t *testing.T, path string, into *objects) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i, doc := range docSep.Split(string(b), -1) {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			t.Fatalf("%s document %d: %v", path, i, err)
		}
		strict := func(v any) {
			if err := yaml.UnmarshalStrict([]byte(doc), v); err != nil {
				t.Fatalf("%s document %d (%s): %v", path, i, tm.Kind, err)
			}
		}
		switch tm.APIVersion + " " + tm.Kind {
		case "node.k8s.io/v1 RuntimeClass":
			var o nodev1.RuntimeClass
			strict(&o)
			into.runtimeClasses = append(into.runtimeClasses, o)
		case "apps/v1 DaemonSet":
			var o appsv1.DaemonSet
			strict(&o)
			into.daemonSets = append(into.daemonSets, o)
		case "v1 ServiceAccount":
			var o corev1.ServiceAccount
			strict(&o)
			into.serviceAccts = append(into.serviceAccts, o)
		case "v1 Namespace":
			var o corev1.Namespace
			strict(&o)
			into.namespaces = append(into.namespaces, o)
		case "rbac.authorization.k8s.io/v1 ClusterRole":
			var o rbacv1.ClusterRole
			strict(&o)
			into.clusterRoles = append(into.clusterRoles, o)
		case "rbac.authorization.k8s.io/v1 ClusterRoleBinding":
			var o rbacv1.ClusterRoleBinding
			strict(&o)
			into.bindings = append(into.bindings, o)
		case "admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy":
			var o admissionv1.ValidatingAdmissionPolicy
			strict(&o)
			into.policies = append(into.policies, o)
		case "admissionregistration.k8s.io/v1 ValidatingAdmissionPolicyBinding":
			var o admissionv1.ValidatingAdmissionPolicyBinding
			strict(&o)
			into.policyBindings = append(into.policyBindings, o)
		case "v1 Pod":
			var o corev1.Pod
			strict(&o)
			into.pods = append(into.pods, o)
		default:
			t.Fatalf("%s document %d: unexpected %s %s", path, i, tm.APIVersion, tm.Kind)
		}
	}
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, l := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// loadKustomization decodes dir/kustomization.yaml strictly and the
// resources it names (recursing into directories), checking each exists.
func loadKustomization(t *testing.T, dir string, into *objects, seen map[string]bool) kustomization {
	t.Helper()
	p := filepath.Join(dir, "kustomization.yaml")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var k kustomization
	if err := yaml.UnmarshalStrict(b, &k); err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		t.Fatalf("%s: %s %s", p, k.APIVersion, k.Kind)
	}
	seen[p] = true
	for _, r := range k.Resources {
		rp := filepath.Join(dir, r)
		st, err := os.Stat(rp)
		if err != nil {
			t.Fatalf("%s names %s: %v", p, r, err)
		}
		if st.IsDir() {
			loadKustomization(t, rp, into, seen)
			continue
		}
		if strings.HasPrefix(r, "..") {
			t.Fatalf("%s names a file outside its directory (%s): kustomize refuses that", p, r)
		}
		decodeFile(t, rp, into)
		seen[rp] = true
	}
	return k
}

func TestManifests(t *testing.T) {
	var o objects
	seen := map[string]bool{}
	loadKustomization(t, ".", &o, seen)

	// Every YAML file is used: by the kustomizations, or as an example or
	// the uninstall overlay (checked below).
	files, _ := filepath.Glob("*.yaml")
	more, _ := filepath.Glob("base/*.yaml")
	for _, f := range append(files, more...) {
		if !seen[f] {
			t.Errorf("%s is in no kustomization", f)
		}
	}

	// RuntimeClasses: one per installer handler, handler = name, overhead,
	// and node selectors on the labels the installer sets.
	var names []string
	for _, rc := range o.runtimeClasses {
		names = append(names, rc.Name)
		if rc.Handler != rc.Name {
			t.Errorf("RuntimeClass %s: handler %q, want the CRI handler of the same name", rc.Name, rc.Handler)
		}
		if rc.Overhead == nil || rc.Overhead.PodFixed.Cpu().IsZero() || rc.Overhead.PodFixed.Memory().IsZero() {
			t.Errorf("RuntimeClass %s: overhead.podFixed needs cpu and memory", rc.Name)
		} else if rc.Overhead.PodFixed.Memory().Cmp(resource.MustParse("256Mi")) < 0 {
			t.Errorf("RuntimeClass %s: memory overhead %s is below the guest's 256 MiB base", rc.Name, rc.Overhead.PodFixed.Memory())
		}
		if rc.Scheduling == nil {
			t.Fatalf("RuntimeClass %s: no scheduling", rc.Name)
		}
		want := map[string]string{install.LabelRuntime: "true"}
		switch rc.Name {
		case "veil-snp":
			want[install.LabelTEE] = "snp"
		case "veil-tdx":
			want[install.LabelTEE] = "tdx"
		}
		if !mapsEqual(rc.Scheduling.NodeSelector, want) {
			t.Errorf("RuntimeClass %s: nodeSelector %v, want %v", rc.Name, rc.Scheduling.NodeSelector, want)
		}
	}
	sort.Strings(names)
	wantNames := slices.Sorted(slices.Values(install.Handlers))
	if !slices.Equal(names, wantNames) {
		t.Errorf("RuntimeClasses %v, want one per installer handler %v", names, wantNames)
	}

	// The installer: namespace, service account, RBAC and admission policy
	// agree on names; the ClusterRole grants nodes/patch and nothing else.
	if len(o.namespaces) != 1 || len(o.serviceAccts) != 1 || len(o.daemonSets) != 1 || len(o.clusterRoles) != 1 || len(o.bindings) != 1 || len(o.policies) != 1 || len(o.policyBindings) != 1 {
		t.Fatalf("want one each of Namespace, ServiceAccount, DaemonSet, ClusterRole(Binding), ValidatingAdmissionPolicy(Binding): %d %d %d %d %d %d %d",
			len(o.namespaces), len(o.serviceAccts), len(o.daemonSets), len(o.clusterRoles), len(o.bindings), len(o.policies), len(o.policyBindings))
	}
	ns, sa, ds := o.namespaces[0].Name, o.serviceAccts[0], o.daemonSets[0]
	if sa.Namespace != ns || ds.Namespace != ns {
		t.Errorf("namespaces: ServiceAccount %s, DaemonSet %s, want %s", sa.Namespace, ds.Namespace, ns)
	}
	role := o.clusterRoles[0]
	if len(role.Rules) != 1 || !slices.Equal(role.Rules[0].Resources, []string{"nodes"}) || !slices.Equal(role.Rules[0].Verbs, []string{"patch"}) ||
		!slices.Equal(role.Rules[0].APIGroups, []string{""}) || len(role.Rules[0].NonResourceURLs) != 0 {
		t.Errorf("ClusterRole %s rules %+v, want only core nodes: patch", role.Name, role.Rules)
	}
	b := o.bindings[0]
	if b.RoleRef.Kind != "ClusterRole" || b.RoleRef.Name != role.Name || len(b.Subjects) != 1 ||
		b.Subjects[0].Kind != "ServiceAccount" || b.Subjects[0].Name != sa.Name || b.Subjects[0].Namespace != ns {
		t.Errorf("ClusterRoleBinding %+v does not bind %s to %s/%s", b, role.Name, ns, sa.Name)
	}
	pol, pb := o.policies[0], o.policyBindings[0]
	user := "system:serviceaccount:" + ns + ":" + sa.Name
	if len(pol.Spec.MatchConditions) != 1 || !strings.Contains(pol.Spec.MatchConditions[0].Expression, "'"+user+"'") {
		t.Errorf("ValidatingAdmissionPolicy does not match the installer's user %s: %+v", user, pol.Spec.MatchConditions)
	}
	if pol.Spec.FailurePolicy == nil || *pol.Spec.FailurePolicy != admissionv1.Fail || len(pol.Spec.Validations) == 0 {
		t.Errorf("ValidatingAdmissionPolicy must fail closed and validate something: %+v", pol.Spec)
	}
	if pb.Spec.PolicyName != pol.Name || !slices.Contains(pb.Spec.ValidationActions, admissionv1.Deny) {
		t.Errorf("ValidatingAdmissionPolicyBinding %+v does not deny with %s", pb.Spec, pol.Name)
	}

	// The DaemonSet: selects its own pods, runs `veil install` as the
	// service account with the node name from the downward API.
	sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
	if err != nil || sel.Empty() || !sel.Matches(labelSet(ds.Spec.Template.Labels)) {
		t.Errorf("DaemonSet selector %v does not select its template %v (%v)", ds.Spec.Selector, ds.Spec.Template.Labels, err)
	}
	spec := ds.Spec.Template.Spec
	if spec.ServiceAccountName != sa.Name {
		t.Errorf("DaemonSet runs as %q, want %s", spec.ServiceAccountName, sa.Name)
	}
	if len(spec.Containers) != 2 {
		t.Fatalf("DaemonSet containers: %d, want the installer and veil-snapshotter", len(spec.Containers))
	}
	c := spec.Containers[0]
	// Ready only once install finished (labels included): the file
	// `veil install --wait` writes last.
	if p := c.ReadinessProbe; p == nil || p.Exec == nil || !slices.Equal(p.Exec.Command, []string{"test", "-e", install.ReadyFile}) {
		t.Errorf("installer readiness probe %+v, want test -e %s", p, install.ReadyFile)
	}
	// veil-snapshotter serves the socket the drop-in names, from
	// directories mounted at their host paths.
	sn := spec.Containers[1]
	if len(sn.Command) != 1 || filepath.Base(sn.Command[0]) != "veil-snapshotter" || !slices.Contains(sn.Args, "--address="+containerdcfg.SnapshotterAddress) {
		t.Errorf("second container %s: command %q args %q, want veil-snapshotter --address=%s", sn.Name, sn.Command, sn.Args, containerdcfg.SnapshotterAddress)
	}
	hostPaths := map[string]string{}
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			hostPaths[v.Name] = v.HostPath.Path
		}
	}
	for _, m := range sn.VolumeMounts {
		if hostPaths[m.Name] != m.MountPath {
			t.Errorf("snapshotter mounts volume %s (host path %q) at %s: containerd would not find its snapshots", m.Name, hostPaths[m.Name], m.MountPath)
		}
	}
	if c.Image == "" || len(c.Args) == 0 || c.Args[0] != "install" || !slices.Contains(c.Args, "--wait") || !slices.Contains(c.Args, "--node=$(NODE_NAME)") {
		t.Errorf("DaemonSet container %s: image %q args %q, want `install ... --node=$(NODE_NAME) --wait`", c.Name, c.Image, c.Args)
	}
	if !hasFieldEnv(c, "NODE_NAME", "spec.nodeName") {
		t.Error("DaemonSet container lacks NODE_NAME from spec.nodeName")
	}
	if c.SecurityContext == nil || c.SecurityContext.Privileged == nil || !*c.SecurityContext.Privileged {
		t.Error("DaemonSet container is not privileged: it cannot write the node's files or restart containerd")
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Error("DaemonSet container needs cpu requests and a memory limit")
	}

	// Uninstall overlay: the same base, the container's args patched.
	var u objects
	uk := loadKustomization(t, "uninstall", &u, map[string]bool{})
	if len(u.runtimeClasses) != 0 || len(u.daemonSets) != 1 {
		t.Errorf("uninstall overlay: %d RuntimeClasses, %d DaemonSets", len(u.runtimeClasses), len(u.daemonSets))
	}
	if len(uk.Patches) != 1 {
		t.Fatalf("uninstall overlay patches: %+v", uk.Patches)
	}
	var patch objects
	decodeFile(t, filepath.Join("uninstall", uk.Patches[0].Path), &patch)
	if len(patch.daemonSets) != 1 || patch.daemonSets[0].Name != ds.Name || patch.daemonSets[0].Namespace != ds.Namespace {
		t.Fatalf("uninstall patch does not target DaemonSet %s/%s", ds.Namespace, ds.Name)
	}
	pc := patch.daemonSets[0].Spec.Template.Spec.Containers
	if len(pc) != 1 || pc[0].Name != c.Name || len(pc[0].Args) == 0 || pc[0].Args[0] != "uninstall" {
		t.Errorf("uninstall patch containers %+v, want %s running uninstall", pc, c.Name)
	}

	// Examples: one pod per handler, each naming it.
	var ex objects
	exFiles, _ := filepath.Glob("examples/*.yaml")
	for _, f := range exFiles {
		decodeFile(t, f, &ex)
	}
	var handlers []string
	for _, p := range ex.pods {
		if p.Spec.RuntimeClassName == nil || len(p.Spec.Containers) == 0 || p.Spec.Containers[0].Image == "" {
			t.Errorf("example pod %s: needs runtimeClassName and a container image", p.Name)
			continue
		}
		handlers = append(handlers, *p.Spec.RuntimeClassName)
	}
	sort.Strings(handlers)
	if !slices.Equal(handlers, wantNames) {
		t.Errorf("example pods for %v, want one per handler %v", handlers, wantNames)
	}
}

// A manifest with a misspelt field fails the strict decoding the test uses.
func TestStrictDecodingCatchesTypos(t *testing.T) {
	doc := []byte("apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata:\n  name: x\nhandler: x\nscheduling:\n  nodeSelecter:\n    a: b\n")
	var rc nodev1.RuntimeClass
	if err := yaml.UnmarshalStrict(doc, &rc); err == nil || !strings.Contains(err.Error(), "nodeSelecter") {
		t.Fatalf("strict decoding of a typo: %v", err)
	}
	if !bytes.Contains(doc, []byte("nodeSelecter")) {
		t.Fatal("unreachable")
	}
}

type labelSet map[string]string

func (l labelSet) Has(k string) bool              { _, ok := l[k]; return ok }
func (l labelSet) Get(k string) string            { return l[k] }
func (l labelSet) Lookup(k string) (string, bool) { v, ok := l[k]; return v, ok }

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func hasFieldEnv(c corev1.Container, name, field string) bool {
	for _, e := range c.Env {
		if e.Name == name && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == field {
			return true
		}
	}
	return false
}
