package runtimeclass

import (
	"encoding/json"
	"strings"
	"testing"

	"cel.dev/cel-go/cel"
)

// The installer's ValidatingAdmissionPolicy, evaluated with CEL on node
// updates: the installer may set and remove veil.io/ labels on its own node
// and nothing else. (The API server adds Kubernetes' CEL libraries; these
// expressions use only standard CEL, so cel-go evaluates them as the API
// server would.)
func TestInstallerAdmissionPolicy(t *testing.T) {
	var o objects
	decodeFile(t, "base/rbac.yaml", &o)
	if len(o.policies) != 1 {
		t.Fatalf("policies: %d", len(o.policies))
	}
	pol := o.policies[0]
	env, err := cel.NewEnv(
		cel.Variable("object", cel.DynType),
		cel.Variable("oldObject", cel.DynType),
		cel.Variable("request", cel.DynType),
	)
	if err != nil {
		t.Fatal(err)
	}
	compile := func(expr string) cel.Program {
		ast, iss := env.Compile(expr)
		if iss.Err() != nil {
			t.Fatalf("compiling %q: %v", expr, iss.Err())
		}
		prg, err := env.Program(ast)
		if err != nil {
			t.Fatal(err)
		}
		return prg
	}
	var match []cel.Program
	for _, m := range pol.Spec.MatchConditions {
		match = append(match, compile(m.Expression))
	}
	var checks []cel.Program
	for _, v := range pol.Spec.Validations {
		checks = append(checks, compile(v.Expression))
	}

	const installer = "system:serviceaccount:veil-system:veil-installer"
	node := func(name string, labels, annotations map[string]string, taint bool) map[string]any {
		n := map[string]any{"metadata": map[string]any{"name": name, "labels": labels}, "spec": map[string]any{"podCIDR": "10.0.0.0/24"}}
		if annotations != nil {
			n["metadata"].(map[string]any)["annotations"] = annotations
		}
		if taint {
			n["spec"].(map[string]any)["taints"] = []any{map[string]any{"key": "x", "effect": "NoSchedule"}}
		}
		return roundTrip(t, n)
	}
	base := map[string]string{"kubernetes.io/hostname": "node-a", "kubernetes.io/os": "linux"}
	with := func(extra map[string]string, drop ...string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for k, v := range extra {
			m[k] = v
		}
		for _, k := range drop {
			delete(m, k)
		}
		return m
	}
	veil := map[string]string{"veil.io/runtime": "true", "veil.io/tee": "none"}
	labelled := with(veil)
	request := func(user, nodeName string) map[string]any {
		extra := map[string]any{}
		if nodeName != "" {
			extra["authentication.kubernetes.io/node-name"] = []any{nodeName}
		}
		return map[string]any{"userInfo": map[string]any{"username": user, "extra": extra}}
	}

	for _, tc := range []struct {
		name        string
		user, token string // username, node name in the token
		old, new    map[string]any
		matched     bool
		allowed     bool
		denial      string
	}{
		{"install labels its own node", installer, "node-a", node("node-a", base, nil, false), node("node-a", labelled, nil, false), true, true, ""},
		{"uninstall removes the labels", installer, "node-a", node("node-a", labelled, nil, false), node("node-a", base, nil, false), true, true, ""},
		{"tee label changes", installer, "node-a", node("node-a", labelled, nil, false), node("node-a", with(map[string]string{"veil.io/tee": "snp"}), nil, false), true, true, ""},
		{"another node", installer, "node-b", node("node-a", base, nil, false), node("node-a", labelled, nil, false), true, false, "only the node its pod runs on"},
		{"token without a node", installer, "", node("node-a", base, nil, false), node("node-a", labelled, nil, false), true, false, "only the node its pod runs on"},
		{"changes another label", installer, "node-a", node("node-a", base, nil, false), node("node-a", with(veil, "kubernetes.io/os"), nil, false), true, false, "only veil.io/ labels"},
		{"adds another label", installer, "node-a", node("node-a", base, nil, false), node("node-a", with(map[string]string{"node-role.kubernetes.io/control-plane": ""}), nil, false), true, false, "only veil.io/ labels"},
		{"adds an annotation", installer, "node-a", node("node-a", base, nil, false), node("node-a", base, map[string]string{"a": "b"}, false), true, false, "annotations"},
		{"taints the node", installer, "node-a", node("node-a", base, nil, false), node("node-a", base, nil, true), true, false, "spec"},
		{"someone else is not this policy's business", "system:node:node-a", "", node("node-a", base, nil, false), node("node-a", base, nil, true), false, true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vars := map[string]any{"object": tc.new, "oldObject": tc.old, "request": roundTrip(t, request(tc.user, tc.token))}
			matched := true
			for _, p := range match {
				out, _, err := p.Eval(vars)
				if err != nil {
					t.Fatal(err)
				}
				matched = matched && out.Value() == true
			}
			if matched != tc.matched {
				t.Fatalf("policy applies: %v, want %v", matched, tc.matched)
			}
			if !matched {
				return
			}
			allowed, denials := true, []string{}
			for i, p := range checks {
				out, _, err := p.Eval(vars)
				if err != nil || out.Value() != true {
					allowed = false
					denials = append(denials, pol.Spec.Validations[i].Message)
				}
			}
			if allowed != tc.allowed || !strings.Contains(strings.Join(denials, "; "), tc.denial) {
				t.Fatalf("allowed %v (denied: %q), want allowed %v with a denial about %q", allowed, denials, tc.allowed, tc.denial)
			}
		})
	}
}

// roundTrip gives v the shape the API server's JSON decoding gives objects.
func roundTrip(t *testing.T, v any) map[string]any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}
