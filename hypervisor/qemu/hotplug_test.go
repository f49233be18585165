package qemu

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/veil-runtime/veil/hypervisor"
)

func TestAttachBlockCommands(t *testing.T) {
	for _, tc := range []struct {
		name string
		dev  hypervisor.BlockDevice
		slot int
		want []qmpCommand
		err  string
	}{
		{
			name: "read-write",
			dev:  hypervisor.BlockDevice{ID: "vb1", Path: "/dev/loop3"},
			slot: 2,
			want: []qmpCommand{
				{"blockdev-add", map[string]any{"driver": "host_device", "node-name": "veil-drive-vb1", "filename": "/dev/loop3", "read-only": false}},
				{"device_add", map[string]any{"driver": "virtio-blk-pci", "id": "veil-blk-vb1", "drive": "veil-drive-vb1", "serial": "vb1", "bus": "veil-hp2"}},
			},
		},
		{
			name: "read-only",
			dev:  hypervisor.BlockDevice{ID: "vb-2_x", Path: "/dev/sdb", ReadOnly: true},
			want: []qmpCommand{
				{"blockdev-add", map[string]any{"driver": "host_device", "node-name": "veil-drive-vb-2_x", "filename": "/dev/sdb", "read-only": true}},
				{"device_add", map[string]any{"driver": "virtio-blk-pci", "id": "veil-blk-vb-2_x", "drive": "veil-drive-vb-2_x", "serial": "vb-2_x", "bus": "veil-hp0"}},
			},
		},
		{name: "serial too long", dev: hypervisor.BlockDevice{ID: "abcdefghijklmnopqrstu", Path: "/dev/sdb"}, err: "1 to 20"},
		{name: "id with a comma", dev: hypervisor.BlockDevice{ID: "a,b", Path: "/dev/sdb"}, err: `"a,b"`},
		{name: "empty id", dev: hypervisor.BlockDevice{Path: "/dev/sdb"}, err: "block device id"},
		{name: "no path", dev: hypervisor.BlockDevice{ID: "vb1"}, err: "no host path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := attachBlockCommands(tc.dev, tc.slot)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestDetachBlockCommands(t *testing.T) {
	del, node := detachBlockCommands("vb1")
	if want := (qmpCommand{"device_del", map[string]any{"id": "veil-blk-vb1"}}); !reflect.DeepEqual(del, want) {
		t.Errorf("device_del: %+v, want %+v", del, want)
	}
	if want := (qmpCommand{"blockdev-del", map[string]any{"node-name": "veil-drive-vb1"}}); !reflect.DeepEqual(node, want) {
		t.Errorf("blockdev-del: %+v, want %+v", node, want)
	}
}

func TestBlockSlotsOnCommandLine(t *testing.T) {
	args := strings.Join(Args(Launch{ID: "x", Kernel: "k", Accel: hypervisor.AccelTCG, Transport: hypervisor.TransportSerial, BlockSlots: 2}), " ")
	for _, want := range []string{
		"-device pcie-root-port,id=veil-hp0,bus=pcie.0,chassis=1",
		"-device pcie-root-port,id=veil-hp1,bus=pcie.0,chassis=2",
	} {
		if !strings.Contains(args, want) {
			t.Errorf("args lack %q:\n%s", want, args)
		}
	}
	if args := strings.Join(Args(Launch{ID: "x", Kernel: "k"}), " "); strings.Contains(args, "pcie-root-port") {
		t.Errorf("no block slots, yet root ports: %s", args)
	}
}

// hotplugQMP is a QMP server that records commands, answers them, and
// sends DEVICE_DELETED for a device_del after the reply, preceded by the
// event of the device's virtio backend (which must not be mistaken for it).
func hotplugQMP(conn net.Conn, seen chan<- string) {
	defer conn.Close()
	fmt.Fprintln(conn, `{"QMP": {"version": {}, "capabilities": []}}`)
	dec := json.NewDecoder(conn)
	for {
		var req struct {
			Execute   string          `json:"execute"`
			Arguments json.RawMessage `json:"arguments"`
			ID        json.RawMessage `json:"id"`
		}
		if dec.Decode(&req) != nil {
			return
		}
		if req.Execute != "qmp_capabilities" {
			seen <- req.Execute + " " + string(req.Arguments)
		}
		fmt.Fprintf(conn, `{"return": {}, "id": %s}`+"\n", req.ID)
		if req.Execute == "device_del" {
			var a struct{ ID string }
			_ = json.Unmarshal(req.Arguments, &a)
			fmt.Fprintf(conn, `{"event": "DEVICE_DELETED", "data": {"path": "/machine/peripheral/%s/virtio-backend"}}`+"\n", a.ID)
			fmt.Fprintf(conn, `{"event": "DEVICE_DELETED", "data": {"device": %q, "path": "/machine/peripheral/%s"}}`+"\n", a.ID, a.ID)
		}
	}
}

func TestAttachDetachBlockOverQMP(t *testing.T) {
	client, server := net.Pipe()
	seen := make(chan string, 16)
	go hotplugQMP(server, seen)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	qc, err := newQMP(ctx, client, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer qc.close()
	q := &QEMU{cfg: hypervisor.Config{ID: "vm", BlockSlots: 2}, logger: slog.New(slog.DiscardHandler), qmp: qc, done: make(chan struct{})}

	for _, id := range []string{"vb1", "vb2"} {
		if err := q.AttachBlock(ctx, hypervisor.BlockDevice{ID: id, Path: "/dev/loop-" + id}); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.AttachBlock(ctx, hypervisor.BlockDevice{ID: "vb3", Path: "/dev/loop-vb3"}); err == nil || !strings.Contains(err.Error(), "slots are in use") {
		t.Errorf("third disk on two slots: err = %v, want slots in use", err)
	}
	if err := q.DetachBlock(ctx, "vb1"); err != nil {
		t.Fatal(err)
	}
	// vb1's slot is free again.
	if err := q.AttachBlock(ctx, hypervisor.BlockDevice{ID: "vb3", Path: "/dev/loop-vb3", ReadOnly: true}); err != nil {
		t.Fatal(err)
	}
	if err := q.DetachBlock(ctx, "nope"); err == nil {
		t.Error("detaching a disk that was never attached succeeded")
	}
	close(seen)
	var got []string
	for s := range seen {
		got = append(got, s)
	}
	want := []string{
		`blockdev-add {"driver":"host_device","filename":"/dev/loop-vb1","node-name":"veil-drive-vb1","read-only":false}`,
		`device_add {"bus":"veil-hp0","drive":"veil-drive-vb1","driver":"virtio-blk-pci","id":"veil-blk-vb1","serial":"vb1"}`,
		`blockdev-add {"driver":"host_device","filename":"/dev/loop-vb2","node-name":"veil-drive-vb2","read-only":false}`,
		`device_add {"bus":"veil-hp1","drive":"veil-drive-vb2","driver":"virtio-blk-pci","id":"veil-blk-vb2","serial":"vb2"}`,
		`device_del {"id":"veil-blk-vb1"}`,
		`blockdev-del {"node-name":"veil-drive-vb1"}`,
		`blockdev-add {"driver":"host_device","filename":"/dev/loop-vb3","node-name":"veil-drive-vb3","read-only":true}`,
		`device_add {"bus":"veil-hp0","drive":"veil-drive-vb3","driver":"virtio-blk-pci","id":"veil-blk-vb3","serial":"vb3"}`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("qmp commands:\n got %q\nwant %q", got, want)
	}
}
