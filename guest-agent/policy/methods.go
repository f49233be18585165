package policy

import "github.com/veil-runtime/veil/guest-agent/api"

// The method table: one entry for every RPC of the agent API
// (guest-agent/api/agent.proto), decided as a host that is an adversary
// would use the method. TestMethodTableCoversTheAPI walks the generated
// descriptors and fails on a method without an entry and on an entry that
// names no method; a method the table does not list is refused (rule
// unknown-method), so a new RPC stays closed until it is decided here.

// Full ttrpc method names of the agent API ("/<package>.<Service>/<Method>"),
// from the generated descriptors (guest-agent/api/methods.go).
const (
	MethodCreateSandbox  = api.MethodCreateSandbox
	MethodDestroySandbox = api.MethodDestroySandbox
	MethodSetHostname    = api.MethodSetHostname
	MethodSetDNS         = api.MethodSetDNS
	MethodGuestDetails   = api.MethodGuestDetails
	MethodCheck          = api.MethodCheck
	MethodVersion        = api.MethodVersion
	MethodShutdown       = api.MethodShutdown

	MethodCreateContainer = api.MethodCreateContainer
	MethodStartContainer  = api.MethodStartContainer
	MethodRemoveContainer = api.MethodRemoveContainer
	MethodStateContainer  = api.MethodStateContainer
	MethodListPids        = api.MethodListPids
	MethodStatsContainer  = api.MethodStatsContainer
	MethodUpdateContainer = api.MethodUpdateContainer
	MethodPauseContainer  = api.MethodPauseContainer
	MethodResumeContainer = api.MethodResumeContainer
	MethodGetOOMEvent     = api.MethodGetOOMEvent

	MethodExecProcess   = api.MethodExecProcess
	MethodWaitProcess   = api.MethodWaitProcess
	MethodSignalProcess = api.MethodSignalProcess
	MethodResizeTTY     = api.MethodResizeTTY
	MethodWriteStdin    = api.MethodWriteStdin
	MethodCloseStdin    = api.MethodCloseStdin
	MethodReadStdout    = api.MethodReadStdout
	MethodReadStderr    = api.MethodReadStderr
	MethodDeleteProcess = api.MethodDeleteProcess

	MethodUpdateInterface = api.MethodUpdateInterface
	MethodUpdateRoutes    = api.MethodUpdateRoutes
	MethodAddNeighbors    = api.MethodAddNeighbors
	MethodListInterfaces  = api.MethodListInterfaces
	MethodListRoutes      = api.MethodListRoutes

	MethodCopyFile   = api.MethodCopyFile
	MethodRemovePath = api.MethodRemovePath

	MethodSetInitData = api.MethodSetInitData
	MethodAttest      = api.MethodAttest
	MethodDecisionLog = api.MethodDecisionLog

	MethodPullImage = api.MethodPullImage

	MethodDialPort       = api.MethodDialPort
	MethodReadPort       = api.MethodReadPort
	MethodWritePort      = api.MethodWritePort
	MethodCloseWritePort = api.MethodCloseWritePort
	MethodClosePort      = api.MethodClosePort

	// MethodDebugConsole names a debug console session in denials: it is
	// not an RPC but a connection to the console port, so it is not in the
	// table.
	MethodDebugConsole = "debug-console"
)

// kind is how the table decides a method.
type kind int

const (
	// always: served in every state, even before init-data and locked
	// down. Reveals nothing of the workload.
	always kind = iota
	// allowed once init-data is accepted, without looking at the request.
	allowed
	// rule: allowed when the named policy rule says so.
	rule
	// checked: allowed when the named check passes on the request.
	checked
	// beforeInitData: SetInitData, served until the agent is locked down.
	beforeInitData
)

// entry is one method's decision.
type entry struct {
	kind kind
	// name is the rule (kind rule) or the check (kind checked).
	name string
	// why is the reasoning, as a hostile host would use the method.
	why string
	// logAllowed records allowed calls in the decision log too (denials
	// are always recorded); off for the frequent ones that would push the
	// denials out of the ring.
	logAllowed bool
}

// methods is the table. Availability is not the guest's to protect: the
// host can stop, pause or kill the VM at any time, so calls that only stop,
// pause, signal or observe the lifecycle are allowed.
var methods = map[string]entry{
	MethodCreateSandbox: {kind: checked, name: "storages", logAllowed: true,
		why: "only the 9p share veil itself sends, with allow_host_share, and no pod sysctls; hostname and DNS are the host's anyway (it carries every packet)"},
	MethodDestroySandbox: {kind: allowed, why: "stops the pod: availability, which the host controls anyway"},
	MethodSetHostname:    {kind: allowed, why: "the host names the pod; a container's HOSTNAME env is bound separately"},
	MethodSetDNS:         {kind: allowed, why: "the host answers DNS and routes every packet anyway; the workload must authenticate its peers (TLS)"},
	MethodGuestDetails:   {kind: always, why: "kernel, memory, agent version: nothing of the workload"},
	MethodCheck:          {kind: always, why: "health"},
	MethodVersion:        {kind: always, why: "agent version"},
	MethodShutdown:       {kind: always, why: "the host can power the VM off anyway"},

	MethodCreateContainer: {kind: checked, name: "containers", logAllowed: true,
		why: "the container must be one the init-data binds, field by field (or allow_unbound_containers, within the spec hardening)"},
	MethodStartContainer:  {kind: allowed, why: "starts what CreateContainer admitted"},
	MethodRemoveContainer: {kind: allowed, why: "availability"},
	MethodStateContainer:  {kind: allowed, why: "status, pid and exit code: what the host needs to run the pod"},
	MethodListPids:        {kind: allowed, why: "process IDs only"},
	MethodStatsContainer:  {kind: allowed, why: "cgroup counters (CPU, memory, I/O): the host sees the VM's use of these anyway"},
	MethodUpdateContainer: {kind: checked, name: "resources", logAllowed: true,
		why: "CPU and memory limits are availability; a device rule would open guest devices, refused unless the container is privileged"},
	MethodPauseContainer:  {kind: allowed, why: "availability: the host can stop the vCPUs anyway"},
	MethodResumeContainer: {kind: allowed, why: "availability"},
	MethodGetOOMEvent:     {kind: allowed, why: "which container was OOM-killed"},

	MethodExecProcess: {kind: checked, name: "exec", logAllowed: true,
		why: "only with allow_exec or a command the container's exec list binds, within the container's env, user and capabilities"},
	MethodWaitProcess:   {kind: allowed, why: "exit status"},
	MethodSignalProcess: {kind: allowed, why: "availability: the host can kill the VM anyway"},
	MethodResizeTTY:     {kind: allowed, why: "terminal size"},
	MethodWriteStdin:    {kind: rule, name: "allow_write_stdin", why: "input the workload would read"},
	MethodCloseStdin:    {kind: allowed, why: "an EOF carries no data (what stdin carries comes from the host anyway)"},
	MethodReadStdout:    {kind: rule, name: "allow_read_output", why: "the workload's output (logs)"},
	MethodReadStderr:    {kind: rule, name: "allow_read_output", why: "the workload's output (logs)"},
	MethodDeleteProcess: {kind: allowed, why: "releases an exited exec"},

	MethodUpdateInterface: {kind: allowed, why: "the host owns the NIC's backend and carries every packet: addresses and routes give it nothing it does not have"},
	MethodUpdateRoutes:    {kind: allowed, why: "as UpdateInterface"},
	MethodAddNeighbors:    {kind: allowed, why: "as UpdateInterface"},
	MethodListInterfaces:  {kind: allowed, why: "the host configured them"},
	MethodListRoutes:      {kind: allowed, why: "the host configured them"},

	MethodCopyFile: {kind: checked, name: "volume-copy",
		why: "configMap, secret, downward-API files: allowed unless deny_volume_copies, never setuid (or setgid files), nothing but the directory of a guest-memory volume (emptyDir, shm)"},
	MethodRemovePath: {kind: checked, name: "volume-copy",
		why: "removes copied files: allowed unless deny_volume_copies, never inside a guest-memory volume (emptyDir, shm)"},

	MethodSetInitData: {kind: beforeInitData, why: "the document is checked against the TEE's digest (guest-agent/attest)"},
	MethodAttest:      {kind: allowed, why: "the pod's own attestation; it returns no secrets"},
	MethodDecisionLog: {kind: always, why: "the policy's decisions on what the host itself asked"},

	MethodPullImage: {kind: checked, name: "image", logAllowed: true,
		why: "only an image of a container the init-data binds (or allow_unbound_containers), once per container until RemoveContainer"},

	MethodDialPort: {kind: rule, name: "allow_port_forward", logAllowed: true,
		why: "a connection to the pod's loopback reaches services that trust it (admin ports, debug endpoints) and whatever they answer"},
	MethodReadPort:       {kind: rule, name: "allow_port_forward", why: "what a loopback service answers"},
	MethodWritePort:      {kind: rule, name: "allow_port_forward", why: "input to a loopback service"},
	MethodCloseWritePort: {kind: rule, name: "allow_port_forward", why: "an EOF to a loopback service, which may act on it"},
	MethodClosePort:      {kind: allowed, why: "closes a connection DialPort opened: availability"},
}
