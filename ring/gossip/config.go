package gossip

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/tierkv/tierkv/ring"
	"github.com/tierkv/tierkv/ring/phi"
)

// Config configures a Gossip member. Build it from DefaultConfig (LAN) or
// LocalConfig (loopback) and set at least ID. It is frozen by New.
type Config struct {
	// ID is the member's permanent id; also its memberlist node name.
	ID ring.NodeID
	// Zone is the member's failure domain.
	Zone string
	// RPCAddr and HTTPAddr are gossiped so peers can reach the member.
	RPCAddr, HTTPAddr string
	// Generation must increase every time the process starts; the node
	// layer persists it. Default: the clock's Unix nanoseconds at New.
	Generation uint64
	// State is the initial state. Default ring.StateJoining.
	State ring.State
	// Tokens are the member's tokens if it has them already (a restart, or
	// a replacement taking over a dead member's id). A new member leaves it
	// empty and calls SetTokens after joining.
	Tokens []ring.Token
	// HasClockID and ClockID are the member's clock id if it has one
	// already (a restart); a new member picks one after joining and calls
	// SetClockID.
	HasClockID bool
	ClockID    uint8

	// BindAddr and BindPort are where memberlist listens (UDP and TCP).
	// Port 0 picks a free port. Ignored when Transport is set.
	BindAddr string
	BindPort int
	// AdvertiseAddr and AdvertisePort override the address peers use.
	AdvertiseAddr string
	AdvertisePort int
	// Seeds are addresses (host:port) Join contacts.
	Seeds []string

	// SecretKeys, if set, encrypt gossip with AES-GCM (memberlist's
	// keyring): the first key is primary, the others are accepted for
	// rotation. Each is 16, 24 or 32 bytes. Members without a key are
	// refused.
	SecretKeys [][]byte
	// Label, if set, is stamped on every packet and stream; members with a
	// different label are refused, so two clusters sharing a network cannot
	// merge.
	Label string

	// HeartbeatInterval is how often the member gossips a heartbeat for the
	// phi detectors of its peers, and how often it evaluates its own
	// detector. Default 1s; LocalConfig 200ms.
	HeartbeatInterval time.Duration
	// ReconnectInterval is how often the member tries to rejoin members
	// memberlist declared dead but that never left (a healed partition, a
	// restarted process). Default 10s; LocalConfig 1s.
	ReconnectInterval time.Duration
	// Phi configures the failure detector. FirstHeartbeatEstimate defaults
	// to HeartbeatInterval and the Clock to Clock.
	Phi phi.Options
	// Ring configures the rings built from the membership.
	Ring ring.Options

	// Memberlist is the base memberlist configuration; New copies it and
	// overrides the name, delegates, addresses, keyring, label and logger.
	// Default memberlist.DefaultLANConfig (DefaultConfig) or
	// DefaultLocalConfig (LocalConfig).
	Memberlist *memberlist.Config
	// Transport replaces memberlist's UDP/TCP transport, e.g. a MemTransport
	// for in-process clusters and fault injection.
	Transport memberlist.NodeAwareTransport
	// Clock is the wall clock for heartbeat arrival times and state-change
	// stamps. Default phi.WallClock.
	Clock phi.Clock
	// Logger receives the member's and memberlist's logs. Default: discard.
	Logger *slog.Logger
}

// DefaultConfig returns a configuration for a LAN or a cloud region.
func DefaultConfig() *Config {
	ml := memberlist.DefaultLANConfig()
	// A replacement node may take over a dead member's id from another
	// address after this long (memberlist's default 0 forbids it).
	ml.DeadNodeReclaimTime = 30 * time.Second
	return &Config{
		BindAddr:          "0.0.0.0",
		BindPort:          7946,
		HeartbeatInterval: time.Second, // Cassandra gossips every second
		ReconnectInterval: 10 * time.Second,
		Memberlist:        ml,
	}
}

// LocalConfig returns a configuration for members on one machine (loopback,
// tests): faster gossip and detection.
func LocalConfig() *Config {
	ml := memberlist.DefaultLocalConfig()
	ml.DeadNodeReclaimTime = time.Second
	return &Config{
		BindAddr:          "127.0.0.1",
		BindPort:          0,
		HeartbeatInterval: 200 * time.Millisecond,
		ReconnectInterval: time.Second,
		Phi: phi.Options{
			// Loopback heartbeats are regular; allow a short pause only.
			AcceptableHeartbeatPause: time.Second,
			MinStdDev:                50 * time.Millisecond,
		},
		Memberlist: ml,
	}
}

// EnsureDefaults fills zero fields with defaults and returns c.
func (c *Config) EnsureDefaults() *Config {
	if c.Clock == nil {
		c.Clock = phi.WallClock
	}
	if c.Generation == 0 {
		c.Generation = uint64(c.Clock.Now().UnixNano())
	}
	if c.State == 0 {
		c.State = ring.StateJoining
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = time.Second
	}
	if c.ReconnectInterval == 0 {
		c.ReconnectInterval = 10 * time.Second
	}
	if c.Phi.FirstHeartbeatEstimate == 0 {
		c.Phi.FirstHeartbeatEstimate = c.HeartbeatInterval
	}
	if c.Phi.Clock == nil {
		c.Phi.Clock = c.Clock
	}
	c.Phi.EnsureDefaults()
	c.Ring.EnsureDefaults()
	if c.Memberlist == nil {
		c.Memberlist = memberlist.DefaultLANConfig()
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return c
}

// Validate checks the configuration. Call it after EnsureDefaults.
func (c *Config) Validate() error {
	var errs []error
	m := c.meta()
	if _, err := m.MarshalBinary(); err != nil {
		errs = append(errs, err)
	}
	if c.State == ring.StateLeft {
		errs = append(errs, errors.New("gossip: cannot start in state LEFT"))
	}
	if c.HeartbeatInterval <= 0 || c.ReconnectInterval <= 0 {
		errs = append(errs, errors.New("gossip: HeartbeatInterval and ReconnectInterval must be positive"))
	}
	for i, k := range c.SecretKeys {
		if n := len(k); n != 16 && n != 24 && n != 32 {
			errs = append(errs, fmt.Errorf("gossip: secret key %d is %d bytes, want 16, 24 or 32", i, n))
		}
	}
	if len(c.Label) > 255 {
		errs = append(errs, errors.New("gossip: label longer than 255 bytes"))
	}
	if err := c.Phi.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Ring.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (c *Config) meta() Meta {
	return Meta{
		ID: c.ID, Zone: c.Zone, RPCAddr: c.RPCAddr, HTTPAddr: c.HTTPAddr,
		State: c.State, Generation: c.Generation, ChangedAt: c.Clock.Now().UnixMilli(),
		Tokens:     append([]ring.Token(nil), c.Tokens...),
		HasClockID: c.HasClockID, ClockID: c.ClockID,
	}
}
