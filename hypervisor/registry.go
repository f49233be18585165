package hypervisor

import (
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
)

// Constructor checks cfg and returns the driver of one VM; it starts
// nothing (Start does). logger receives the driver's own log lines; nil
// discards them.
type Constructor func(cfg Config, logger *slog.Logger) (Hypervisor, error)

// Registry maps driver names (the shim config's hypervisor.driver) to
// their constructors. The zero value is empty and ready to use.
type Registry struct {
	mu      sync.RWMutex
	drivers map[string]Constructor
}

// Register adds a driver under name. It panics when name is empty or
// taken, or newVM is nil: drivers register from init, so that is a
// programming error, caught the first time the binary runs.
func (r *Registry) Register(name string, newVM Constructor) {
	if name == "" || newVM == nil {
		panic("hypervisor: Register needs a name and a constructor")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.drivers[name]; dup {
		panic("hypervisor: driver " + name + " registered twice")
	}
	if r.drivers == nil {
		r.drivers = make(map[string]Constructor)
	}
	r.drivers[name] = newVM
}

// Lookup returns the constructor of the driver registered as name. An
// unknown name is an error that names the known drivers.
func (r *Registry) Lookup(name string) (Constructor, error) {
	r.mu.RLock()
	newVM, ok := r.drivers[name]
	r.mu.RUnlock()
	if !ok {
		known := r.Names()
		if len(known) == 0 {
			return nil, fmt.Errorf("hypervisor driver %q: no driver is built into this binary", name)
		}
		return nil, fmt.Errorf("hypervisor driver %q is unknown: want one of %s", name, strings.Join(known, ", "))
	}
	return newVM, nil
}

// Names lists the registered drivers, sorted.
func (r *Registry) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return slices.Sorted(maps.Keys(r.drivers))
}

// Drivers is the registry drivers add themselves to when their package is
// imported (hypervisor/qemu registers "qemu"); the shim looks the
// configured driver up in it.
var Drivers Registry

// Register adds a driver to Drivers.
func Register(name string, newVM Constructor) { Drivers.Register(name, newVM) }

// Lookup finds a driver in Drivers.
func Lookup(name string) (Constructor, error) { return Drivers.Lookup(name) }
