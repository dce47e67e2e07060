package ring

import (
	"errors"
	"fmt"
)

// DefaultVNodes is the number of tokens a new member gets unless
// Options.VNodes says otherwise. It was chosen by measurement (see
// TestChooseDefaultVNodes and docs/ring.md): it is the smallest power of two
// at which the allocator keeps the largest member's RF=3 replica share and
// primary share within 10% of the mean for every cluster size from 3 to 200
// members grown one join at a time.
const DefaultVNodes = 16

// DefaultReplicationFactor is the replication factor the token allocator
// balances for and the preference-list length the ring precomputes.
const DefaultReplicationFactor = 3

// MaxVNodes bounds Options.VNodes.
const MaxVNodes = 1024

// MaxReplicationFactor bounds Options.ReplicationFactor.
const MaxReplicationFactor = 16

// Options configures a Ring. The zero value is usable after EnsureDefaults.
type Options struct {
	// VNodes is the number of tokens AllocateTokens chooses for a new member.
	// Members added with tokens chosen elsewhere may have any number.
	// Default DefaultVNodes.
	VNodes int
	// ReplicationFactor is the number of replicas the token allocator
	// balances for, and the length of the preference list the ring
	// precomputes for every token so that OwnersInto with n <= RF is a table
	// lookup. Default DefaultReplicationFactor.
	ReplicationFactor int
}

// EnsureDefaults fills zero fields with their defaults and returns o. It
// accepts a nil receiver and then returns a new Options.
func (o *Options) EnsureDefaults() *Options {
	if o == nil {
		o = &Options{}
	}
	if o.VNodes == 0 {
		o.VNodes = DefaultVNodes
	}
	if o.ReplicationFactor == 0 {
		o.ReplicationFactor = DefaultReplicationFactor
	}
	return o
}

// Validate reports whether the options are usable. Call it after
// EnsureDefaults.
func (o *Options) Validate() error {
	var errs []error
	if o.VNodes < 1 || o.VNodes > MaxVNodes {
		errs = append(errs, fmt.Errorf("ring: VNodes %d out of range [1, %d]", o.VNodes, MaxVNodes))
	}
	if o.ReplicationFactor < 1 || o.ReplicationFactor > MaxReplicationFactor {
		errs = append(errs, fmt.Errorf("ring: ReplicationFactor %d out of range [1, %d]", o.ReplicationFactor, MaxReplicationFactor))
	}
	return errors.Join(errs...)
}
