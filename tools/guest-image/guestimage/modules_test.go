package guestimage

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseModInfo(t *testing.T) {
	sec := []byte("license=GPL\x00depends=9pnet,netfs\x00softdep=pre: crc32c post: foo-bar\x00name=9p\x00\x00")
	got := ParseModInfo(sec)
	want := ModInfo{Depends: []string{"9pnet", "netfs"}, SoftPre: []string{"crc32c"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ParseModInfo = %+v, want %+v", got, want)
	}
	if got := ParseModInfo([]byte("depends=\x00name=overlay\x00")); len(got.Depends) != 0 {
		t.Errorf("empty depends gives %q", got.Depends)
	}
	if got := ParseModInfo([]byte("depends=dm-mod\x00")); !reflect.DeepEqual(got.Depends, []string{"dm_mod"}) {
		t.Errorf("depends not normalised: %q", got.Depends)
	}
}

func TestParseBuiltin(t *testing.T) {
	got := ParseBuiltin([]byte("kernel/drivers/virtio/virtio_pci.ko\nkernel/drivers/char/virtio_console.ko\nkernel/drivers/md/dm-builtin.ko\n"))
	for _, name := range []string{"virtio_pci", "virtio_console", "dm_builtin"} {
		if !got[name] {
			t.Errorf("%s not built in", name)
		}
	}
	if got["9p"] {
		t.Error("9p built in")
	}
}

func TestLoadOrder(t *testing.T) {
	// The dependency graph of the Debian 6.12 guest modules.
	guest := map[string][]string{
		"9p": {"9pnet", "netfs"}, "9pnet": nil, "netfs": nil, "9pnet_virtio": {"9pnet"},
		"vmw_vsock_virtio_transport":        {"vmw_vsock_virtio_transport_common", "vsock"},
		"vmw_vsock_virtio_transport_common": {"vsock"}, "vsock": nil,
		"virtio_net": {"net_failover"}, "net_failover": {"failover"}, "failover": nil,
		"dm_crypt": {"dm_mod"}, "dm_mod": nil,
	}
	for _, tc := range []struct {
		name    string
		roots   []string
		deps    map[string][]string
		want    []string
		wantErr string
	}{
		{
			name:  "guest modules",
			roots: []string{"9p", "9pnet_virtio", "vmw_vsock_virtio_transport", "virtio_net", "dm_crypt"},
			deps:  guest,
			want: []string{"9pnet", "netfs", "9p", "9pnet_virtio", "vsock", "vmw_vsock_virtio_transport_common",
				"vmw_vsock_virtio_transport", "failover", "net_failover", "virtio_net", "dm_mod", "dm_crypt"},
		},
		{
			name:  "dependency asked for first is loaded once",
			roots: []string{"9pnet", "9p", "9pnet"},
			deps:  guest,
			want:  []string{"9pnet", "netfs", "9p"},
		},
		{
			name:  "diamond",
			roots: []string{"top"},
			deps:  map[string][]string{"top": {"l", "r"}, "l": {"base"}, "r": {"base"}, "base": nil},
			want:  []string{"base", "l", "r", "top"},
		},
		{
			name:    "cycle",
			roots:   []string{"a"},
			deps:    map[string][]string{"a": {"b"}, "b": {"a"}},
			wantErr: "dependency cycle a -> b -> a",
		},
		{
			name:    "missing dependency names who needs it",
			roots:   []string{"9p"},
			deps:    map[string][]string{"9p": {"9pnet", "netfs"}, "9pnet": nil},
			wantErr: `module "netfs", needed by 9p, not found`,
		},
		{
			name:    "missing root",
			roots:   []string{"nope"},
			deps:    guest,
			wantErr: `module "nope" not found`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := LoadOrder(tc.roots, tc.deps)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, %v; want error containing %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("LoadOrder = %q\nwant        %q", got, tc.want)
			}
			// Every module comes after each of its dependencies.
			pos := map[string]int{}
			for i, m := range got {
				pos[m] = i
			}
			for _, m := range got {
				for _, d := range tc.deps[m] {
					if pos[d] >= pos[m] {
						t.Errorf("%s loads before its dependency %s", m, d)
					}
				}
			}
		})
	}
}

func TestModulesList(t *testing.T) {
	got := string(ModulesList([]Module{
		{Name: "9pnet", Path: "/lib/modules/r/kernel/net/9p/9pnet.ko"},
		{Name: "9p", Path: "/lib/modules/r/kernel/fs/9p/9p.ko"},
	}))
	want := "/lib/modules/r/kernel/net/9p/9pnet.ko\n/lib/modules/r/kernel/fs/9p/9p.ko\n"
	if got != want {
		t.Errorf("ModulesList = %q, want %q", got, want)
	}
}

func TestWithout(t *testing.T) {
	tee := []Module{{Name: "configfs"}, {Name: "tsm"}, {Name: "sev_guest"}, {Name: "tdx_guest"}}
	loaded := []Module{{Name: "9p"}, {Name: "configfs"}, {Name: "tsm"}}
	var got []string
	for _, m := range Without(tee, loaded) {
		got = append(got, m.Name)
	}
	if want := []string{"sev_guest", "tdx_guest"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Without = %q, want %q", got, want)
	}
}
