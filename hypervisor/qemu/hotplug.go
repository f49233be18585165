package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"

	"github.com/veil-runtime/veil/hypervisor"
)

// Block device hotplug.
//
// QEMU gets Launch.BlockSlots empty pcie-root-ports (veil-hp0, ...) at
// launch: q35's root bus takes no hot-plugged device, a root port does.
// AttachBlock opens the host device as a block node and plugs a
// virtio-blk-pci disk into a free port:
//
//	blockdev-add  {"driver": "host_device", "node-name": "veil-drive-<id>", "filename": <path>, "read-only": <ro>}
//	device_add    {"driver": "virtio-blk-pci", "id": "veil-blk-<id>", "drive": "veil-drive-<id>", "serial": <id>, "bus": "veil-hpN"}
//
// and DetachBlock unplugs it: device_del asks the guest to release the
// disk (ACPI eject) and QEMU reports DEVICE_DELETED when it has; only then
// can the node go:
//
//	device_del    {"id": "veil-blk-<id>"}   ... event DEVICE_DELETED {"device": "veil-blk-<id>"}
//	blockdev-del  {"node-name": "veil-drive-<id>"}

// qmpCommand is one QMP command and its arguments.
type qmpCommand struct {
	Execute   string
	Arguments map[string]any
}

var blockIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

func checkBlockID(id string) error {
	if len(id) == 0 || len(id) > hypervisor.MaxBlockIDLen || !blockIDPattern.MatchString(id) {
		return fmt.Errorf("block device id %q: use 1 to %d letters, digits, '-' or '_'", id, hypervisor.MaxBlockIDLen)
	}
	return nil
}

func blockPortID(slot int) string    { return fmt.Sprintf("veil-hp%d", slot) }
func blockNodeName(id string) string { return "veil-drive-" + id }
func blockDeviceID(id string) string { return "veil-blk-" + id }

// attachBlockCommands are the QMP commands that plug dev into root port
// slot, in order.
func attachBlockCommands(dev hypervisor.BlockDevice, slot int) ([]qmpCommand, error) {
	if err := checkBlockID(dev.ID); err != nil {
		return nil, err
	}
	if dev.Path == "" {
		return nil, fmt.Errorf("block device %s: no host path", dev.ID)
	}
	return []qmpCommand{
		{"blockdev-add", map[string]any{
			"driver":    "host_device",
			"node-name": blockNodeName(dev.ID),
			"filename":  dev.Path,
			"read-only": dev.ReadOnly,
		}},
		{"device_add", map[string]any{
			"driver": "virtio-blk-pci",
			"id":     blockDeviceID(dev.ID),
			"drive":  blockNodeName(dev.ID),
			"serial": dev.ID,
			"bus":    blockPortID(slot),
		}},
	}, nil
}

// detachBlockCommands are the QMP commands that unplug disk id: device_del,
// then (after DEVICE_DELETED) blockdev-del.
func detachBlockCommands(id string) (deviceDel, blockdevDel qmpCommand) {
	return qmpCommand{"device_del", map[string]any{"id": blockDeviceID(id)}},
		qmpCommand{"blockdev-del", map[string]any{"node-name": blockNodeName(id)}}
}

// deviceDeleted matches the DEVICE_DELETED event of QEMU device qdevID.
func deviceDeleted(qdevID string) func(json.RawMessage) bool {
	return func(data json.RawMessage) bool {
		var d struct {
			Device string `json:"device"`
		}
		return json.Unmarshal(data, &d) == nil && d.Device == qdevID
	}
}

// running returns the QMP connection of a started, running VM.
func (q *QEMU) running(op string) (*qmp, error) {
	q.mu.Lock()
	qc := q.qmp
	q.mu.Unlock()
	if qc == nil {
		return nil, fmt.Errorf("%s on vm %s: not started", op, q.cfg.ID)
	}
	select {
	case <-q.done:
		return nil, fmt.Errorf("%s on vm %s: %w", op, q.cfg.ID, hypervisor.ErrVMExited)
	default:
	}
	return qc, nil
}

// AttachBlock plugs dev into a free root port as a virtio-blk disk.
func (q *QEMU) AttachBlock(ctx context.Context, dev hypervisor.BlockDevice) error {
	op := "attaching block device " + dev.ID
	qc, err := q.running(op)
	if err != nil {
		return err
	}
	q.mu.Lock()
	if q.blocks == nil {
		q.blocks = make([]string, q.cfg.BlockSlots)
	}
	if slices.Contains(q.blocks, dev.ID) && dev.ID != "" {
		q.mu.Unlock()
		return fmt.Errorf("%s on vm %s: already attached", op, q.cfg.ID)
	}
	slot := slices.Index(q.blocks, "")
	if slot < 0 {
		q.mu.Unlock()
		return fmt.Errorf("%s on vm %s: all %d block hotplug slots are in use", op, q.cfg.ID, q.cfg.BlockSlots)
	}
	cmds, err := attachBlockCommands(dev, slot)
	if err != nil {
		q.mu.Unlock()
		return fmt.Errorf("%s on vm %s: %w", op, q.cfg.ID, err)
	}
	q.blocks[slot] = dev.ID
	q.mu.Unlock()
	free := func() {
		q.mu.Lock()
		q.blocks[slot] = ""
		q.mu.Unlock()
	}

	if _, err := qc.execute(ctx, cmds[0].Execute, cmds[0].Arguments); err != nil {
		free()
		return fmt.Errorf("%s (%s) on vm %s: %w", op, dev.Path, q.cfg.ID, err)
	}
	if _, err := qc.execute(ctx, cmds[1].Execute, cmds[1].Arguments); err != nil {
		_, del := detachBlockCommands(dev.ID)
		if _, derr := qc.execute(context.WithoutCancel(ctx), del.Execute, del.Arguments); derr != nil {
			q.logger.Warn("removing block node after failed device_add", "id", dev.ID, "err", derr)
		} else {
			free()
		}
		return fmt.Errorf("%s (%s) on vm %s: %w", op, dev.Path, q.cfg.ID, err)
	}
	q.logger.Info("block device attached", "id", dev.ID, "path", dev.Path, "read_only", dev.ReadOnly, "port", blockPortID(slot))
	return nil
}

// DetachBlock unplugs disk id: it returns once the guest has released it
// (DEVICE_DELETED) and QEMU has closed the host device. A VM that has
// exited has nothing attached any more.
func (q *QEMU) DetachBlock(ctx context.Context, id string) error {
	op := "detaching block device " + id
	qc, err := q.running(op)
	if errors.Is(err, hypervisor.ErrVMExited) {
		return nil
	}
	if err != nil {
		return err
	}
	q.mu.Lock()
	slot := slices.Index(q.blocks, id)
	q.mu.Unlock()
	if slot < 0 || id == "" {
		return fmt.Errorf("%s on vm %s: not attached", op, q.cfg.ID)
	}
	devDel, nodeDel := detachBlockCommands(id)
	if _, err := qc.execute(ctx, devDel.Execute, devDel.Arguments); err != nil {
		return fmt.Errorf("%s on vm %s: %w", op, q.cfg.ID, err)
	}
	if err := qc.waitEvent(ctx, "DEVICE_DELETED", deviceDeleted(blockDeviceID(id))); err != nil {
		return fmt.Errorf("%s on vm %s: the guest did not release it: %w", op, q.cfg.ID, err)
	}
	if _, err := qc.execute(ctx, nodeDel.Execute, nodeDel.Arguments); err != nil {
		return fmt.Errorf("%s on vm %s: %w", op, q.cfg.ID, err)
	}
	q.mu.Lock()
	q.blocks[slot] = ""
	q.mu.Unlock()
	q.logger.Info("block device detached", "id", id)
	return nil
}
