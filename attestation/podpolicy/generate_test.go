package podpolicy

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/veil-runtime/veil/guest-agent/policy"
)

const (
	appDigest = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	dbRef     = "registry.test/db@sha256:0000000000000000000000000000000000000000000000000000000000000001"
)

// testImages are the images of testdata's manifests as a registry would
// describe them.
var testImages = map[string]Image{
	"registry.test/app:1": {Ref: "registry.test/app@" + appDigest, Digest: appDigest, Config: &v1.Config{
		Entrypoint: []string{"/app/server"}, Cmd: []string{"--serve"},
		Env: []string{"PATH=/app/bin:/usr/bin", "IMAGE_VAR=image"}, WorkingDir: "/app",
	}},
	dbRef: {Ref: dbRef, Config: &v1.Config{
		Cmd: []string{"postgres"}, User: "999:999", Volumes: map[string]struct{}{"/var/lib/postgresql/data": {}},
	}},
	"registry.test/nameuser:1": {Ref: "registry.test/nameuser@" + appDigest, Config: &v1.Config{Cmd: []string{"nginx"}, User: "nginx"}},
	"registry.test/nocmd:1":    {Ref: "registry.test/nocmd@" + appDigest, Config: &v1.Config{Entrypoint: []string{""}}},
}

func decodeFiles(t *testing.T, files ...string) *Objects {
	t.Helper()
	objs := &Objects{}
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join("testdata", f))
		if err != nil {
			t.Fatal(err)
		}
		o, err := Decode(f, data)
		if err != nil {
			t.Fatal(err)
		}
		objs.Merge(o)
	}
	return objs
}

func generateAll(t *testing.T, objs *Objects) map[string]*Result {
	t.Helper()
	out := map[string]*Result{}
	for i := range objs.Workloads {
		r, err := Generate(&objs.Workloads[i], objs, testImages)
		if err != nil {
			t.Fatal(err)
		}
		out[objs.Workloads[i].ID()] = r
	}
	return out
}

func container(t *testing.T, r *Result, name string) policy.Container {
	t.Helper()
	for _, c := range r.Policy.Containers {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("%s: no container %s in %+v", r.Workload.ID(), name, r.Policy.Containers)
	return policy.Container{}
}

// patternFor returns the value pattern bound for exactly the variable name.
func patternFor(c policy.Container, name string) string {
	for _, p := range c.EnvPatterns {
		if p.Name == exactName(name) {
			return p.Value
		}
	}
	return ""
}

// admits reports whether c's env patterns admit NAME=value.
func admits(c policy.Container, name, value string) bool {
	for _, p := range c.EnvPatterns {
		if regexp.MustCompile(p.Name).MatchString(name) && regexp.MustCompile(p.Value).MatchString(value) {
			return true
		}
	}
	return false
}

func TestGenerate(t *testing.T) {
	res := generateAll(t, decodeFiles(t, "pod.yaml", "configmaps.yaml", "deployment.yaml", "workloads.yaml"))
	if len(res) != 4 {
		t.Fatalf("workloads %v, want pod/web, deployment/api, statefulset/db, cronjob/backup", slices.Collect(func(yield func(string) bool) {
			for k := range res {
				yield(k)
			}
		}))
	}
	web, api, db, backup := res["pod/web"], res["deployment/api"], res["statefulset/db"], res["cronjob/backup"]
	caps := func(names ...string) []string { return slices.Sorted(slices.Values(names)) }

	tests := []struct {
		name      string
		got, want any
	}{
		// A Pod: command given, so the image's Cmd is ignored; $(VAR)
		// expanded from env (a ConfigMap's value included), $$ escaped.
		{"pod image pinned", container(t, web, "app").Image, "registry.test/app@" + appDigest},
		{"pod args", container(t, web, "app").Args, []string{"/app/server", "--listen", ":8080", "--mode", "production", "$(literal)"}},
		{"pod env: image PATH, HOSTNAME = pod name, container env overrides image env in place",
			container(t, web, "app").Env, []string{"PATH=/app/bin:/usr/bin", "HOSTNAME=web", "IMAGE_VAR=overridden", "PORT=8080", "MODE=production"}},
		{"pod env: secret not given -> any value for that name", patternFor(container(t, web, "app"), "DB_PASSWORD"), anyValue},
		{"pod env: downward API podIP -> an IP", patternFor(container(t, web, "app"), "POD_IP"), "^" + ipExpr + "$"},
		{"pod working dir from the manifest", container(t, web, "app").WorkingDir, "/srv"},
		{"pod user: image default root", container(t, web, "app").User, policy.User{UID: 0, GID: 0, AdditionalGIDs: []uint32{0}}},
		{"pod caps: containerd's default", container(t, web, "app").Capabilities, caps(defaultCaps...)},
		{"pod seccomp unset -> Unconfined", container(t, web, "app").Seccomp, "Unconfined"},
		{"pod mounts by kind, token added", container(t, web, "app").Mounts, []policy.Mount{
			{Destination: "/etc/app", Kind: policy.MountCopy, ReadOnly: true},
			{Destination: "/data", Kind: policy.MountEmptyDir},
			{Destination: "/var/log/app", Kind: policy.MountHost},
			{Destination: ServiceAccountMountPath, Kind: policy.MountCopy, ReadOnly: true},
		}},
		{"pod exec: annotation, exec probe (expanded), exec hook", container(t, web, "app").Exec, []policy.Exec{
			{Args: []string{"cat", "/tmp/ready"}}, {Args: []string{"/bin/sh", "-c", "ls /data"}},
			{Args: []string{"test", "-f", "/tmp/8080"}}, {Args: []string{"/app/server", "drain"}},
		}},
		{"pod allow-read-output annotation", web.Policy.AllowReadOutput, true},
		{"pod other rules stay denied", web.Policy.AllowExec || web.Policy.AllowHostMounts || web.Policy.AllowUnboundContainers, false},

		// A Deployment: init container first; args only -> entrypoint + args.
		{"deployment containers in order", []string{api.Policy.Containers[0].Name, api.Policy.Containers[1].Name}, []string{"migrate", "api"}},
		{"init container: args only", container(t, api, "migrate").Args, []string{"/app/server", "migrate"}},
		{"neither command nor args: entrypoint + cmd", container(t, api, "api").Args, []string{"/app/server", "--serve"}},
		{"working dir from the image", container(t, api, "api").WorkingDir, "/app"},
		{"envFrom given: exact, prefix applied, invalid keys skipped", container(t, api, "api").Env, []string{
			"PATH=/app/bin:/usr/bin", "IMAGE_VAR=image", "CFG_LEVEL=debug", "CFG_mode=production", "TOKEN=s3cret"}},
		{"HOSTNAME of a Deployment's pods", patternFor(container(t, api, "api"), "HOSTNAME"), `^api-[a-z0-9](?:[-a-z0-9]*[a-z0-9])?$`},
		{"envFrom not given with a prefix", admits(container(t, api, "api"), "EXTRA_FOO", "x"), true},
		{"no service links: other services' variables refused", admits(container(t, api, "api"), "DB_SERVICE_HOST", "10.0.0.7"), false},
		{"no service links: KUBERNETES_* still admitted", admits(container(t, api, "api"), "KUBERNETES_SERVICE_HOST", "10.96.0.1"), true},
		{"user: runAsUser, runAsGroup, fsGroup, supplementalGroups", container(t, api, "api").User, policy.User{UID: 1000, GID: 3000, AdditionalGIDs: []uint32{2000, 3000, 4000}}},
		{"caps: drop ALL, add NET_BIND_SERVICE", container(t, api, "api").Capabilities, []string{"CAP_NET_BIND_SERVICE"}},
		{"allowPrivilegeEscalation false", container(t, api, "api").NoNewPrivileges, true},
		{"readOnlyRootFilesystem", container(t, api, "api").ReadOnlyRootFilesystem, true},
		{"init container keeps defaults", container(t, api, "migrate").NoNewPrivileges || container(t, api, "migrate").ReadOnlyRootFilesystem, false},
		{"seccomp from the pod", container(t, api, "api").Seccomp, "RuntimeDefault"},
		{"sysctls from the pod", container(t, api, "api").Sysctls, map[string]string{"net.ipv4.ping_group_range": "0 2147483647"}},
		{"automountServiceAccountToken false: no mounts", container(t, api, "api").Mounts, []policy.Mount(nil)},
		{"startup probe", container(t, api, "api").Exec, []policy.Exec{{Args: []string{"cat", "/tmp/started"}}}},
		{"no annotation: logs denied", api.Policy.AllowReadOutput, false},

		// A StatefulSet of a privileged container whose image runs as 999:999.
		{"statefulset digest kept", container(t, db, "db").Image, dbRef},
		{"no entrypoint: cmd", container(t, db, "db").Args, []string{"postgres"}},
		{"default PATH when the image has none", container(t, db, "db").Env, []string{DefaultPath}},
		{"HOSTNAME of a StatefulSet's pods", patternFor(container(t, db, "db"), "HOSTNAME"), `^db-[0-9]+$`},
		{"numeric image user", container(t, db, "db").User, policy.User{UID: 999, GID: 999, AdditionalGIDs: []uint32{999}}},
		{"privileged", container(t, db, "db").Privileged, true},
		{"privileged: all caps", container(t, db, "db").Capabilities, caps(allCaps...)},
		{"image VOLUME without a mount warned", strings.Contains(strings.Join(db.Warnings, "\n"), "VOLUME /var/lib/postgresql/data"), true},

		// A CronJob: spec.hostname, add ALL then drop (any case).
		{"cronjob hostname", container(t, backup, "backup").Env, []string{"PATH=/app/bin:/usr/bin", "HOSTNAME=backup-host", "IMAGE_VAR=image"}},
		{"add ALL, drop two", container(t, backup, "backup").Capabilities, caps(slices.DeleteFunc(slices.Clone(allCaps), func(c string) bool { return c == "CAP_SYS_ADMIN" || c == "CAP_NET_RAW" })...)},
	}
	for _, tc := range tests {
		if !reflect.DeepEqual(tc.got, tc.want) {
			t.Errorf("%s:\n got  %#v\n want %#v", tc.name, tc.got, tc.want)
		}
	}
	if w := strings.Join(web.Warnings, "\n"); !strings.Contains(w, "volume logs at /var/log/app/ comes from the host") {
		t.Errorf("pod warnings lack the host mount:\n%s", w)
	}
	if w := strings.Join(api.Warnings, "\n"); !strings.Contains(w, "envFrom ConfigMap absent was not given") {
		t.Errorf("deployment warnings lack the missing ConfigMap:\n%s", w)
	}
}

// TestServicePatternsNeverAdmitSensitiveNames: whatever services the host
// invents, the service-link patterns admit no loader or shell variable.
func TestServicePatternsNeverAdmitSensitiveNames(t *testing.T) {
	for _, links := range []bool{true, false} {
		c := policy.Container{EnvPatterns: serviceEnvPatterns(map[bool]string{true: servicePrefix, false: kubernetesPrefix}[links])}
		for _, n := range append(slices.Clone(sensitiveEnv), "LD_SERVICE_HOST", "LD_PORT", "LD_X_SERVICE_PORT", "LD_PORT_80_TCP_ADDR", "HOSTNAME") {
			for _, v := range []string{"10.0.0.1", "80", "tcp://10.0.0.1:80", "tcp"} {
				if admits(c, n, v) {
					t.Errorf("links=%v: %s=%s admitted", links, n, v)
				}
			}
		}
		for _, kv := range [][2]string{
			{"KUBERNETES_SERVICE_HOST", "10.96.0.1"}, {"KUBERNETES_SERVICE_PORT", "443"}, {"KUBERNETES_SERVICE_PORT_HTTPS", "443"},
			{"KUBERNETES_PORT", "tcp://10.96.0.1:443"}, {"KUBERNETES_PORT_443_TCP", "tcp://10.96.0.1:443"},
			{"KUBERNETES_PORT_443_TCP_PROTO", "tcp"}, {"KUBERNETES_PORT_443_TCP_PORT", "443"}, {"KUBERNETES_PORT_443_TCP_ADDR", "10.96.0.1"},
			{"KUBERNETES_SERVICE_HOST", "fd00::1"}, {"KUBERNETES_PORT", "tcp://[fd00::1]:443"},
		} {
			if !admits(c, kv[0], kv[1]) {
				t.Errorf("links=%v: %s=%s refused", links, kv[0], kv[1])
			}
		}
		for _, kv := range [][2]string{
			{"KUBERNETES_SERVICE_HOST", "10.96.0.1; rm -rf /"}, {"KUBERNETES_PORT", "http://evil:443"},
			{"KUBERNETES_SERVICE_PORT", "443\nLD_PRELOAD=/x.so"}, {"KUBERNETES_PORT_443_TCP_PROTO", "icmp"},
		} {
			if admits(c, kv[0], kv[1]) {
				t.Errorf("links=%v: %s=%q admitted", links, kv[0], kv[1])
			}
		}
		other := admits(c, "LDAP_SERVICE_HOST", "10.0.0.2") && admits(c, "L_SERVICE_PORT", "1") && admits(c, "MY_DB_PORT_5432_TCP", "tcp://10.0.0.3:5432")
		if other != links {
			t.Errorf("links=%v: other services' variables admitted = %v", links, other)
		}
	}
}

func TestGenerateRefuses(t *testing.T) {
	pod := func(spec string) string {
		return "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n" + spec
	}
	tests := []struct {
		name, manifest string
		want           []string
	}{
		{"image runs as a user name", "", []string{"registry.test/nameuser:1", `user "nginx"`, "runAsUser"}},
		{"localhost seccomp", pod("spec:\n  securityContext:\n    seccompProfile: {type: Localhost, localhostProfile: x.json}\n  containers:\n  - {name: a, image: registry.test/app:1}\n"),
			[]string{"container a", "seccompProfile Localhost", "RuntimeDefault"}},
		{"envFrom not given, no prefix", pod("spec:\n  containers:\n  - name: a\n    image: registry.test/app:1\n    envFrom: [{configMapRef: {name: cm}}]\n"),
			[]string{"envFrom ConfigMap cm", "LD_PRELOAD", "give the ConfigMap"}},
		{"envFrom not given, prefix LD_", pod("spec:\n  containers:\n  - name: a\n    image: registry.test/app:1\n    envFrom: [{secretRef: {name: s}, prefix: LD_}]\n"),
			[]string{"envFrom Secret s", `prefix "LD_"`}},
		{"envFrom not given, prefix L", pod("spec:\n  containers:\n  - name: a\n    image: registry.test/app:1\n    envFrom: [{secretRef: {name: s}, prefix: L}]\n"),
			[]string{"envFrom Secret s", `prefix "L"`}},
		{"unknown io.veil.policy annotation", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations: {io.veil.policy/allow-exec: \"true\"}\nspec:\n  containers:\n  - {name: a, image: registry.test/app:1}\n",
			[]string{"unknown annotation io.veil.policy/allow-exec"}},
		{"exec annotation for no container", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations: {io.veil.policy/exec.ap: '[[\"ls\"]]'}\nspec:\n  containers:\n  - {name: a, image: registry.test/app:1}\n",
			[]string{"io.veil.policy/exec.ap names no container"}},
		{"exec annotation not argv lists", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations: {io.veil.policy/exec.a: 'ls -l'}\nspec:\n  containers:\n  - {name: a, image: registry.test/app:1}\n",
			[]string{"io.veil.policy/exec.a", "JSON list of argv lists"}},
		{"args referencing a service variable", pod("spec:\n  containers:\n  - name: a\n    image: registry.test/app:1\n    args: [\"--api=$(KUBERNETES_SERVICE_HOST)\"]\n"),
			[]string{"args", "$(KUBERNETES_SERVICE_HOST)", "cannot be bound"}},
		{"missing ConfigMap key", pod("spec:\n  containers:\n  - name: a\n    image: registry.test/app:1\n    env: [{name: X, valueFrom: {configMapKeyRef: {name: app-config, key: nope}}}]\n"),
			[]string{"env X", "ConfigMap app-config has no key \"nope\""}},
		{"runAsNonRoot as root", pod("spec:\n  securityContext: {runAsNonRoot: true}\n  containers:\n  - {name: a, image: registry.test/app:1}\n"),
			[]string{"runAsNonRoot", "uid 0"}},
		{"no command anywhere", pod("spec:\n  containers:\n  - {name: a, image: registry.test/nocmd:1}\n"),
			[]string{"no command", "registry.test/nocmd:1"}},
		{"raw block device", pod("spec:\n  containers:\n  - name: a\n    image: registry.test/app:1\n    volumeDevices: [{name: d, devicePath: /dev/xvda}]\n  volumes: [{name: d, persistentVolumeClaim: {claimName: c}}]\n"),
			[]string{"volumeDevices"}},
		// Found by FuzzGenerate: a pod without containers bound nothing.
		{"pod without containers", pod("spec: {}\n"), []string{"pod/p", "no containers"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var objs *Objects
			if tc.manifest == "" {
				objs = decodeFiles(t, "nameuser.yaml")
			} else {
				var err error
				if objs, err = Decode("inline", []byte(tc.manifest)); err != nil {
					t.Fatal(err)
				}
				objs.Merge(decodeFiles(t, "configmaps.yaml"))
			}
			_, err := Generate(&objs.Workloads[0], objs, testImages)
			if err == nil {
				t.Fatalf("generated a policy, want a refusal naming %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestDecode(t *testing.T) {
	_, err := Decode("typo.yaml", []byte("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - {name: a, image: x, comand: [sh]}\n"))
	if err == nil || !strings.Contains(err.Error(), "typo.yaml document 1") || !strings.Contains(err.Error(), "comand") {
		t.Errorf("misspelt field: %v, want an error naming the document and the field", err)
	}
	list := "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: a}\n  spec: {containers: [{name: c, image: img-x}]}\n- apiVersion: batch/v1\n  kind: Job\n  metadata: {name: j}\n  spec: {template: {spec: {containers: [{name: c, image: img-y}], restartPolicy: Never}}}\n"
	objs, err := Decode("list.yaml", []byte("# comment only\n---\n"+list))
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, w := range objs.Workloads {
		ids = append(ids, w.ID())
	}
	if !slices.Equal(ids, []string{"pod/a", "job/j"}) || !slices.Equal(ImageRefs(objs), []string{"img-x", "img-y"}) {
		t.Errorf("List: workloads %v, images %v", ids, ImageRefs(objs))
	}
}

func TestExpand(t *testing.T) {
	vars := map[string]string{"A": "1", "B": "two"}
	lookup := func(n string) (string, bool, bool) {
		if n == "U" {
			return "", true, false
		}
		v, ok := vars[n]
		return v, ok, true
	}
	for in, want := range map[string]string{
		"$(A)":         "1",
		"x$(A)y$(B)z":  "x1ytwoz",
		"$$(A)":        "$(A)",
		"$(NOPE)":      "$(NOPE)",
		"$A":           "$A",
		"$(A":          "$(A",
		"trailing $":   "trailing $",
		"$$$(B)":       "$two",
		"$(A)$(A)$$$$": "11$$",
	} {
		if got, known := expand(in, lookup); got != want || !known {
			t.Errorf("expand(%q) = %q, %v; want %q", in, got, known, want)
		}
	}
	if _, known := expand("x$(U)", lookup); known {
		t.Error("a reference to a variable of unknown value expanded as known")
	}
}

// TestDropAllStaysEmpty: a container that drops every capability is bound
// to none, not (by an omitted key) to containerd's default set.
func TestDropAllStaysEmpty(t *testing.T) {
	objs, err := Decode("dropall", []byte("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - {name: a, image: registry.test/app:1, securityContext: {capabilities: {drop: [ALL]}}}\n  - {name: b, image: registry.test/app:1}\n"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := Generate(&objs.Workloads[0], objs, testImages)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := PolicyTOML(res.Policy, "header")
	if err != nil {
		t.Fatal(err)
	}
	back, err := policy.Parse(doc)
	if err != nil {
		t.Fatal(err)
	}
	if a, b := back.Containers[0].Capabilities, back.Containers[1].Capabilities; a == nil || len(a) != 0 || !reflect.DeepEqual(b, slices.Sorted(slices.Values(defaultCaps))) {
		t.Errorf("capabilities read back: a %#v, b %#v\n%s", a, b, doc)
	}
}
