package policy

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/veil-runtime/veil/guest-agent/api"
)

// fuzzPolicy is a policy document binding "app" (boundPolicy's, in TOML).
const fuzzPolicy = `allow_read_output = true
[[containers]]
name = "app"
image = "registry.example/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
args = ["/app", "--listen", ":8080"]
env = ["PATH=/usr/local/bin:/usr/bin:/bin", "MODE=prod"]
working_dir = "/srv"
user = { uid = 1000, gid = 1000, additional_gids = [2000] }
seccomp = "RuntimeDefault"
sysctls = { "net.ipv4.ping_group_range" = "0 2147483647" }
[[containers.env_patterns]]
name = '[A-Z][A-Z0-9_]*_SERVICE_(HOST|PORT(_[A-Z0-9_]+)?)'
value = '[0-9a-fA-F.:]*'
[[containers.mounts]]
destination = "/etc/config"
kind = "copy"
read_only = true
[[containers.exec]]
args = ["/bin/cat", "/tmp/ready"]
`

// fuzzRequest builds the request message of method from raw (its protobuf
// encoding) and puts js where the method carries JSON (the spec, an exec's
// process, resources).
func fuzzRequest(method string, raw, js []byte) any {
	i := strings.LastIndex(method, "/")
	if i <= 0 {
		return nil
	}
	sd := api.File_agent_proto.Services().ByName(protoreflect.Name(method[strings.LastIndex(method[:i], ".")+1 : i]))
	if sd == nil {
		return nil
	}
	md := sd.Methods().ByName(protoreflect.Name(method[i+1:]))
	if md == nil {
		return nil
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByName(md.Input().FullName())
	if err != nil {
		return nil
	}
	m := mt.New().Interface()
	_ = proto.Unmarshal(raw, m)
	switch r := m.(type) {
	case *api.CreateContainerRequest:
		r.Spec = js
	case *api.ExecProcessRequest:
		r.Process = js
	case *api.UpdateContainerRequest:
		r.Resources = js
	}
	return m
}

// FuzzCheck: for any policy document and any request, Parse and the
// decision never panic, and a denial always names its rule and says why.
func FuzzCheck(f *testing.F) {
	spec := mustJSON(f, criSpec())
	create, _ := proto.Marshal(&api.CreateContainerRequest{ContainerId: "c1", Rootfs: &api.Storage{Driver: "bind", Source: "/run/veil/images/c1/rootfs"}})
	shared, _ := proto.Marshal(&api.CreateContainerRequest{ContainerId: "c1", Rootfs: &api.Storage{Driver: "shared", Source: "c1/rootfs"}, Storages: []*api.Storage{{Driver: "bind", Source: "/run/veil/volumes/v", MountPoint: "/usr/bin/runc"}}})
	sandbox, _ := proto.Marshal(&api.CreateSandboxRequest{Storages: []*api.Storage{{Driver: "9p", Source: "veilshare", MountPoint: "/run/veil/shared", Fstype: "9p", Options: []string{"trans=virtio", "msize=262144"}}}})
	pull, _ := proto.Marshal(&api.PullImageRequest{Image: "registry.example/evil", ContainerId: "c2"})
	exec, _ := proto.Marshal(&api.ExecProcessRequest{ContainerId: "c1", ExecId: "e1"})
	copyReq, _ := proto.Marshal(&api.CopyFileRequest{Volume: "v", Path: "su", Mode: 0o4755})
	f.Add(fuzzPolicy, MethodCreateContainer, create, spec)
	f.Add(fuzzPolicy+"allow_host_share = true\nallow_unbound_containers = true\n", MethodCreateContainer, shared, spec)
	f.Add("allow_host_share = true", MethodCreateSandbox, sandbox, []byte(nil))
	f.Add(fuzzPolicy, MethodPullImage, pull, []byte(nil))
	f.Add(fuzzPolicy, MethodExecProcess, exec, []byte(`{"args":["/bin/cat","/tmp/ready"],"env":["LD_PRELOAD=/x"],"capabilities":{"bounding":["CAP_SYS_MODULE"]}}`))
	f.Add("", MethodUpdateContainer, []byte{}, []byte(`{"devices":[{"allow":true,"type":"b","major":254}]}`))
	f.Add("deny_volume_copies = false", MethodCopyFile, copyReq, []byte(nil))
	f.Add("allow_exec = true", "/veil.agent.v1.Sandbox/Exploit", []byte{}, []byte(nil))
	f.Fuzz(func(t *testing.T, doc, method string, raw, js []byte) {
		p, err := Parse(doc)
		if err != nil {
			p = Default()
		}
		st := State{Pulled: map[string]string{"c1": appImage}, Created: map[string]string{"c1": "app", "c2": ""}}
		d := p.CheckState(method, fuzzRequest(method, raw, js), st)
		if d != nil && (d.Rule == "" || d.Why == "" || d.Method != method) {
			t.Fatalf("denial without a rule, a reason or the method: %#v", d)
		}
		if _, known := methods[method]; !known && method != MethodDebugConsole && (d == nil || d.Rule != "unknown-method") {
			t.Fatalf("unknown method %q: %v, want rule unknown-method", method, d)
		}
	})
}
