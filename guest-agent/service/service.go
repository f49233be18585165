// Package service serves the agent API (guest-agent/api) over ttrpc: the
// Sandbox, Container and Process services. It translates requests into
// calls on the container manager and the guest system, and errors into
// gRPC status codes (containerd errdefs → errgrpc) at the RPC boundary, so
// a bad request gets a clear code and leaves the agent serving.
package service

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/ttrpc"

	"github.com/veil-runtime/veil/guest-agent/api"
	"github.com/veil-runtime/veil/guest-agent/attest"
	"github.com/veil-runtime/veil/guest-agent/containers"
	"github.com/veil-runtime/veil/guest-agent/portfwd"
	"github.com/veil-runtime/veil/guest-agent/volume"
)

// APIVersion is bumped when the agent API changes incompatibly.
const APIVersion = 1

// System is what the Sandbox service changes in the guest beyond
// containers; the agent's implementation does it for real.
type System interface {
	containers.Mounter
	SetHostname(name string) error
	SetDNS(lines []string) error
	// SetSysctls writes the pod's sysctls in the guest's namespaces,
	// refusing (errdefs.ErrInvalidArgument) before writing any when one is
	// not a pod's to set (boot.SetSysctls).
	SetSysctls(sysctls map[string]string) error
	// StartPIDNamespace starts the holder of the sandbox's shared PID
	// namespace and returns its path; stop ends the holder.
	StartPIDNamespace() (path string, stop func(), err error)
}

// Config is what the services need.
type Config struct {
	Containers *containers.Manager
	System     System
	Version    string
	// SharedDir is where "shared" storages resolve (/run/veil/shared).
	SharedDir string
	// AgentStart is the time from kernel start to the agent's start.
	AgentStart time.Duration
	// Ready returns the time from kernel start to serving (0 before).
	Ready func() time.Duration
	// Volumes holds the guest's copies of unshared volumes (the Volume
	// service); nil refuses copies.
	Volumes *volume.Volumes
	// PowerOff is called once Shutdown has stopped the containers; the
	// caller powers off after the reply has been sent.
	PowerOff func()
	// Attest is the confidential state the Attestation service serves.
	Attest *attest.State
	// ImagesRoot is where the Image service unpacks guest-pulled images;
	// empty means ImagesRoot (/run/veil/images).
	ImagesRoot string
	// DialPort connects the PortForward service's streams; nil dials the
	// guest's loopback for real.
	DialPort portfwd.Dialer
	Log      *slog.Logger
}

// Service holds the sandbox state behind the three API services.
type Service struct {
	cfg Config

	mu        sync.Mutex
	created   bool
	mounts    []string
	pidns     string
	stopPause func()
	// images is the Image service; RemoveContainer releases a container's
	// guest-pulled rootfs through it.
	images *imageAPI
	// ports are the PortForward service's connections.
	ports *portfwd.Table
}

// New returns a Service.
func New(cfg Config) *Service {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Ready == nil {
		cfg.Ready = func() time.Duration { return 0 }
	}
	if cfg.PowerOff == nil {
		cfg.PowerOff = func() {}
	}
	if cfg.ImagesRoot == "" {
		cfg.ImagesRoot = ImagesRoot
	}
	if cfg.DialPort == nil {
		cfg.DialPort = (&net.Dialer{Timeout: 5 * time.Second}).DialContext
	}
	return &Service{cfg: cfg, ports: portfwd.New(cfg.DialPort)}
}

// Register adds the services to srv; transport names the listener
// srv serves (reported by GuestDetails).
func (s *Service) Register(srv *ttrpc.Server, transport string) {
	api.RegisterSandboxService(srv, &sandboxAPI{s: s, transport: transport})
	api.RegisterContainerService(srv, &containerAPI{s: s})
	api.RegisterProcessService(srv, &processAPI{s: s})
	api.RegisterAttestationService(srv, &attestationAPI{s: s})
	api.RegisterVolumeService(srv, &volumeAPI{s: s})
	api.RegisterNetworkService(srv, newNetworkAPI(s.cfg.Log))
	s.images = newImageAPI(s, s.cfg.ImagesRoot)
	api.RegisterImageService(srv, s.images)
	api.RegisterPortForwardService(srv, &portForwardAPI{s: s})
}

// rpcErr converts an error to a gRPC status at the RPC boundary.
func rpcErr(err error) error {
	if err == nil {
		return nil
	}
	return errgrpc.ToGRPC(err)
}

// outputReadable reports whether the host may read the output of the
// processes created now (the policy's allow_read_output in a confidential
// pod; always in an ordinary one). Output it may not read is drained in
// the guest (containers.CreateRequest.DrainOutput).
func (s *Service) outputReadable() bool {
	return s.cfg.Attest == nil || s.cfg.Attest.Enforcer().OutputReadable()
}

// withoutCancel keeps cleanup going when the caller gives up.
func withoutCancel(ctx context.Context) context.Context { return context.WithoutCancel(ctx) }
