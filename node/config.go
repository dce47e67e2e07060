package node

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/memberlist"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/tierkv/tierkv/lsm"
	"github.com/tierkv/tierkv/objectstore"
	"github.com/tierkv/tierkv/ring"
	"github.com/tierkv/tierkv/ring/gossip"
)

// Consistency is how many replicas must answer a request.
type Consistency uint8

const (
	// ConsistencyDefault means "the node's configured default".
	ConsistencyDefault Consistency = iota
	// One waits for one replica.
	One
	// Quorum waits for a majority of the replication factor.
	Quorum
	// All waits for every replica.
	All
)

// String returns ONE, QUORUM or ALL.
func (c Consistency) String() string {
	switch c {
	case One:
		return "ONE"
	case Quorum:
		return "QUORUM"
	case All:
		return "ALL"
	case ConsistencyDefault:
		return "DEFAULT"
	}
	return fmt.Sprintf("Consistency(%d)", uint8(c))
}

// ParseConsistency parses ONE, QUORUM or ALL (case-insensitive). The empty
// string is ConsistencyDefault.
func ParseConsistency(s string) (Consistency, error) {
	switch strings.ToUpper(strings.TrimSpace(s)) {
	case "":
		return ConsistencyDefault, nil
	case "ONE":
		return One, nil
	case "QUORUM":
		return Quorum, nil
	case "ALL":
		return All, nil
	}
	return 0, fmt.Errorf("%w: unknown consistency level %q (want ONE, QUORUM or ALL)", ErrInvalidArgument, s)
}

// required returns how many of rf replicas must answer at level c.
func (c Consistency) required(rf int) int {
	switch c {
	case Quorum:
		return rf/2 + 1
	case All:
		return rf
	}
	return 1
}

// MarshalText implements encoding.TextMarshaler (YAML config).
func (c Consistency) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler (YAML config).
func (c *Consistency) UnmarshalText(b []byte) error {
	v, err := ParseConsistency(string(b))
	if err != nil {
		return err
	}
	*c = v
	return nil
}

// ObjectStoreConfig selects the bucket that tiering moves cold tables to.
// Objects are named <node id>/..., so several nodes may share one bucket.
type ObjectStoreConfig struct {
	// Type is "filesystem" (the embedded default, a directory) or "s3"
	// (AWS S3 or MinIO).
	Type string `yaml:"type"`
	// Dir is the filesystem bucket's directory. Default: <data_dir>/bucket.
	// Nodes may share one directory (`tierkv dev` does).
	Dir string `yaml:"dir"`
	// FallbackDir, if set, is a filesystem bucket that receives a copy of
	// every uploaded object and manifest backup; reads fall back to it
	// when the primary bucket fails. Default: none. Exclusive with
	// PeerShardsData (the fallback of a cluster).
	FallbackDir string `yaml:"fallback_dir"`
	// PeerShardsData and PeerShardsParity, when set (k and m), make the
	// fallback store Reed-Solomon RS(k, m) shards of every uploaded object
	// and manifest backup on k+m other nodes, placed by the ring
	// (docs/shards.md): a replacement restores from them when the bucket
	// is unreachable. Every node must use the same k and m. Default: off.
	PeerShardsData   int `yaml:"peer_shards_data"`
	PeerShardsParity int `yaml:"peer_shards_parity"`
	// PeerShardsRebuildDelay is how long after a membership change (a
	// join, a leave, a replacement) the node rebuilds its shards on its
	// peers. Default 10 s.
	PeerShardsRebuildDelay time.Duration `yaml:"peer_shards_rebuild_delay"`
	// Endpoint is the S3 endpoint URL, http:// or https:// (empty: AWS's
	// for Region).
	Endpoint string `yaml:"endpoint"`
	// Bucket is the S3 bucket name.
	Bucket string `yaml:"bucket"`
	// Region is the S3 region.
	Region string `yaml:"region"`
	// AccessKey and SecretKey are S3 credentials (empty: the SDK's default
	// chain, e.g. an instance profile).
	AccessKey string `yaml:"access_key"`
	SecretKey string `yaml:"secret_key"`
	// PathStyle uses path-style S3 addressing (MinIO).
	PathStyle bool `yaml:"path_style"`
}

// TieringConfig tunes tiering (cold tables to the object store). Zero
// fields take tiering's defaults, except ColdLevel, whose 0 is literal
// (every table is cold); DefaultConfig and LocalConfig set it to 5.
type TieringConfig struct {
	// ColdLevel: tables at this engine level or deeper are uploaded and
	// then served from the bucket (leveled compaction). -1: none.
	ColdLevel int `yaml:"cold_level"`
	// ColdAge: under size-tiered compaction, tables older than this are
	// cold. Default 24 h; negative: none.
	ColdAge time.Duration `yaml:"cold_age"`
	// BlobColdAge: blob files (large values) older than this are cold.
	// Default 24 h; negative: none.
	BlobColdAge time.Duration `yaml:"blob_cold_age"`
	// CacheSize bounds the local disk cache of remote data, in bytes.
	// Default 1 GiB; negative disables it.
	CacheSize int64 `yaml:"cache_size"`
	// UploadInterval is how often cold tables are uploaded. Default 30 s.
	UploadInterval time.Duration `yaml:"upload_interval"`
	// UploadRate bounds upload bandwidth in bytes/s. Default 0: unlimited.
	UploadRate int64 `yaml:"upload_rate"`
	// BackupInterval is how often a manifest backup is uploaded (and
	// garbage collection runs). Default 10 min.
	BackupInterval time.Duration `yaml:"backup_interval"`
	// BackupRetention is the number of manifest backups kept. Default 3.
	BackupRetention int `yaml:"backup_retention"`
	// GCDelay is how long an object stays unreferenced before it is
	// deleted. Default 1 h.
	GCDelay time.Duration `yaml:"gc_delay"`
	// HedgeDelay: a remote read the bucket has not answered within it is
	// also sent to the fallback bucket. Default 0: no hedging.
	HedgeDelay time.Duration `yaml:"hedge_delay"`
}

// AntiEntropyConfig tunes anti-entropy (docs/antientropy.md).
type AntiEntropyConfig struct {
	// Interval is the time between the end of a periodic repair pass and
	// the start of the next. Default 1 h; negative: no periodic passes
	// (POST /v1/admin/repair still runs one).
	Interval time.Duration `yaml:"interval"`
	// Rate bounds the bytes per second a repair moves (digests received,
	// keys fetched and pushed, ranges streamed). Default 32 MiB/s;
	// negative: unlimited.
	Rate int64 `yaml:"rate"`
}

// Config configures a Node. Build it from DefaultConfig or LocalConfig;
// zero fields are filled by EnsureDefaults. It is frozen by Open.
type Config struct {
	// ID is the node's permanent identity on the ring. Default: the id
	// persisted in DataDir, or a new random one on first start.
	ID string `yaml:"id"`
	// Zone is the node's failure domain (rack, availability zone).
	Zone string `yaml:"zone"`
	// DataDir holds the engine (data/), the hint store (hints/) and the
	// node's identity (node.json). Required.
	DataDir string `yaml:"data_dir"`

	// HTTPAddr is the client HTTP listen address (host:port; port 0 picks
	// a free one).
	HTTPAddr string `yaml:"http_addr"`
	// GRPCAddr is the gRPC listen address, serving clients and the
	// internode replica API.
	GRPCAddr string `yaml:"grpc_addr"`
	// GossipAddr is the gossip (memberlist, UDP and TCP) listen address.
	GossipAddr string `yaml:"gossip_addr"`
	// AdvertiseHost, if set, replaces the host of the listen addresses in
	// what the node gossips (e.g. when listening on 0.0.0.0).
	AdvertiseHost string `yaml:"advertise_host"`
	// Seeds are gossip addresses of other nodes to join through.
	Seeds []string `yaml:"seeds"`
	// GossipProfile is "lan" (memberlist LAN timings, 1 s heartbeats) or
	// "local" (loopback: 200 ms heartbeats, fast failure detection).
	GossipProfile string `yaml:"gossip_profile"`

	// ReplicationFactor is the number of replicas of each key. Default 3.
	ReplicationFactor int `yaml:"replication_factor"`
	// VNodes is the number of tokens a new node allocates. Default 16.
	VNodes int `yaml:"vnodes"`
	// ReadConsistency and WriteConsistency are used when a request does
	// not name a level. Default ONE (eventual, as Dynamo).
	ReadConsistency  Consistency `yaml:"read_consistency"`
	WriteConsistency Consistency `yaml:"write_consistency"`

	// RequestTimeout is the deadline of a client request when the client
	// gives none (or a longer one). Default 5 s.
	RequestTimeout time.Duration `yaml:"request_timeout"`
	// ReplicaTimeout bounds one replica call; a replica that does not
	// answer in time gets a hint. Default 2 s.
	ReplicaTimeout time.Duration `yaml:"replica_timeout"`
	// SpeculativeRetry is how long a read waits for the replicas it asked
	// before it asks one more (once). Default 20 ms; negative: never.
	SpeculativeRetry time.Duration `yaml:"speculative_retry"`
	// MaxKeySize bounds keys in bytes. Default 1 KiB.
	MaxKeySize int `yaml:"max_key_size"`
	// MaxValueSize bounds values in bytes (HTTP bodies and gRPC messages
	// are bounded accordingly). Default 1 MiB.
	MaxValueSize int `yaml:"max_value_size"`
	// MaxInFlight bounds concurrent client requests; more are refused
	// with 429 / RESOURCE_EXHAUSTED. Default 1024.
	MaxInFlight int `yaml:"max_in_flight"`

	// HintWindow is how long hints are kept for a replica that is down;
	// older hints are dropped and anti-entropy repairs. Default 3 h
	// (Cassandra's max_hint_window).
	HintWindow time.Duration `yaml:"hint_window"`
	// HintMaxBytes bounds the hint store; hints over it are dropped (and
	// counted). Default 1 GiB.
	HintMaxBytes int64 `yaml:"hint_max_bytes"`
	// HintReplayInterval is how often pending hints are offered to
	// replicas that are up. Default 10 s; LocalConfig 200 ms.
	HintReplayInterval time.Duration `yaml:"hint_replay_interval"`

	// TombstoneGracePeriod is how long a tombstone is kept before the
	// engine may purge it. A replica away for longer than this must be
	// rebuilt (replace), not repaired: anti-entropy never copies older
	// entries onto a replica that holds nothing of their key
	// (docs/antientropy.md). Default 10 days (Cassandra's gc_grace_seconds).
	TombstoneGracePeriod time.Duration `yaml:"tombstone_grace_period"`
	// Replace, if set, is the id of a dead node this one replaces
	// (docs/operations.md): on an empty data directory the node takes that
	// id, restores the dead node's engine from its latest manifest backup
	// in the object store, serves, and catches up from its peers.
	Replace string `yaml:"replace"`
	// ReplaceLookback widens the catch-up of a replacement: peers stream
	// what is newer than the backup's time minus this, to cover writes
	// stamped shortly before the backup that reached the dead node after
	// it. Writes that reached it later still (hints replayed after a long
	// outage, repairs) come back through anti-entropy. Default 30 s.
	ReplaceLookback time.Duration `yaml:"replace_lookback"`
	// ReplaceFromPeers makes a replacement ignore the object store and
	// stream every range from one of its replicas, as Cassandra and
	// ScyllaDB do (the baseline of make bench-recovery; also a way out when
	// no backup can be trusted).
	ReplaceFromPeers bool `yaml:"replace_from_peers"`
	// ReplaceSkipHydrate leaves a replacement's restored tables in the
	// object store (served remotely through the cache) instead of
	// downloading them once it has caught up.
	ReplaceSkipHydrate bool `yaml:"replace_skip_hydrate"`
	// ReplaceRestoreTimeout bounds the restore from the object store.
	// Default 10 min.
	ReplaceRestoreTimeout time.Duration `yaml:"-"`
	// ReplaceStreamAttempts is how many consecutive failed attempts of one
	// peer's catch-up stream end it (anti-entropy repairs the rest).
	// Default 30.
	ReplaceStreamAttempts int `yaml:"-"`
	// RingDelay bounds how long a joining or leaving node waits for every
	// live member to confirm its new state before it streams. Default 30 s
	// (Cassandra's ring_delay); the confirmation usually takes a gossip
	// round.
	RingDelay time.Duration `yaml:"ring_delay"`
	// AntiEntropy tunes Merkle-tree repair between replicas.
	AntiEntropy AntiEntropyConfig `yaml:"anti_entropy"`

	// MemTableSize is the engine's memtable size in bytes. Default 64 MiB.
	MemTableSize int64 `yaml:"memtable_size"`
	// ObjectStore is the tiering bucket.
	ObjectStore ObjectStoreConfig `yaml:"object_store"`
	// Tiering tunes what goes to the bucket and when.
	Tiering TieringConfig `yaml:"tiering"`
	// OTLPEndpoint, if set, exports traces over OTLP/gRPC to it (host:port).
	// Default off.
	OTLPEndpoint string `yaml:"otlp_endpoint"`
	// EnablePprof serves Go's runtime profiles under /debug/pprof/ on the
	// HTTP address (as etcd's --enable-pprof). Default off.
	EnablePprof bool `yaml:"enable_pprof"`
	// ShutdownTimeout bounds the drain of in-flight requests on Close.
	// Default 10 s.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`

	// Logger receives the node's logs. Default slog.Default().
	Logger *slog.Logger `yaml:"-"`
	// Clock is the node's time source (HLC, hints). Default: wall clock.
	Clock lsm.Clock `yaml:"-"`
	// GossipTransport, if set, replaces memberlist's network transport
	// (in-process clusters).
	GossipTransport memberlist.NodeAwareTransport `yaml:"-"`
	// TraceExporter, if set, receives the node's spans (tests, embedding);
	// it takes precedence over OTLPEndpoint.
	TraceExporter sdktrace.SpanExporter `yaml:"-"`
	// EngineOptions, if set, is the base of the engine's options; the node
	// overrides the bounds, the clock, VersionTime and (tiering) Provider.
	EngineOptions *lsm.Options `yaml:"-"`
	// streamHookForTesting, if set, becomes Node.streamHookForTesting.
	streamHookForTesting func(peer ring.NodeID) error
	// ObjectStoreBucket, if set, is the tiering bucket, used instead of
	// opening ObjectStore's (tests, embedding). The node does not close it.
	ObjectStoreBucket objectstore.Bucket `yaml:"-"`
}

// DefaultConfig returns the configuration of a production node.
func DefaultConfig() *Config {
	return &Config{
		HTTPAddr:      "0.0.0.0:8080",
		GRPCAddr:      "0.0.0.0:9090",
		GossipAddr:    "0.0.0.0:7946",
		GossipProfile: "lan",
		// Cassandra's window: long enough for a reboot or a bad deploy,
		// short enough that the hint store stays small.
		HintWindow:         3 * time.Hour,
		HintReplayInterval: 10 * time.Second,
		ObjectStore:        ObjectStoreConfig{Type: "filesystem"},
		Tiering:            TieringConfig{ColdLevel: defaultColdLevel},
	}
}

// defaultColdLevel is tiering.DefaultPolicy's: L5 and L6 hold ~99% of a
// leveled tree's bytes and are rarely rewritten.
const defaultColdLevel = 5

// LocalConfig returns the configuration of a node on loopback (tests and
// `tierkv dev`): free ports, fast gossip, fast hint replay, small memtables.
func LocalConfig() *Config {
	return &Config{
		HTTPAddr:           "127.0.0.1:0",
		GRPCAddr:           "127.0.0.1:0",
		GossipAddr:         "127.0.0.1:0",
		GossipProfile:      "local",
		HintWindow:         3 * time.Hour,
		HintReplayInterval: 200 * time.Millisecond, // hints land quickly after a restart
		HintMaxBytes:       64 << 20,
		MemTableSize:       4 << 20, // three nodes on a laptop
		ObjectStore:        ObjectStoreConfig{Type: "filesystem"},
		Tiering:            TieringConfig{ColdLevel: defaultColdLevel},
	}
}

// EnsureDefaults fills zero fields with defaults and returns c.
func (c *Config) EnsureDefaults() *Config {
	d := DefaultConfig()
	if c.HTTPAddr == "" {
		c.HTTPAddr = d.HTTPAddr
	}
	if c.GRPCAddr == "" {
		c.GRPCAddr = d.GRPCAddr
	}
	if c.GossipAddr == "" {
		c.GossipAddr = d.GossipAddr
	}
	if c.GossipProfile == "" {
		c.GossipProfile = "lan"
	}
	if c.ReplicationFactor == 0 {
		c.ReplicationFactor = ring.DefaultReplicationFactor
	}
	if c.VNodes == 0 {
		c.VNodes = ring.DefaultVNodes
	}
	if c.ReadConsistency == ConsistencyDefault {
		c.ReadConsistency = One
	}
	if c.WriteConsistency == ConsistencyDefault {
		c.WriteConsistency = One
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = 5 * time.Second
	}
	if c.ReplicaTimeout == 0 {
		c.ReplicaTimeout = 2 * time.Second
	}
	if c.SpeculativeRetry == 0 {
		c.SpeculativeRetry = 20 * time.Millisecond
	}
	if c.MaxKeySize == 0 {
		c.MaxKeySize = 1 << 10
	}
	if c.MaxValueSize == 0 {
		c.MaxValueSize = 1 << 20
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = 1024
	}
	if c.HintWindow == 0 {
		c.HintWindow = d.HintWindow
	}
	if c.HintMaxBytes == 0 {
		c.HintMaxBytes = 1 << 30
	}
	if c.HintReplayInterval == 0 {
		c.HintReplayInterval = d.HintReplayInterval
	}
	if c.TombstoneGracePeriod == 0 {
		c.TombstoneGracePeriod = 10 * 24 * time.Hour
	}
	if c.ObjectStore.PeerShardsRebuildDelay == 0 {
		c.ObjectStore.PeerShardsRebuildDelay = 10 * time.Second
	}
	if c.RingDelay == 0 {
		c.RingDelay = 30 * time.Second
	}
	if c.ReplaceLookback == 0 {
		c.ReplaceLookback = 30 * time.Second
	}
	if c.ReplaceRestoreTimeout == 0 {
		c.ReplaceRestoreTimeout = 10 * time.Minute
	}
	if c.ReplaceStreamAttempts == 0 {
		c.ReplaceStreamAttempts = 30
	}
	if c.AntiEntropy.Interval == 0 {
		c.AntiEntropy.Interval = time.Hour
	}
	if c.AntiEntropy.Rate == 0 {
		c.AntiEntropy.Rate = 32 << 20
	}
	if c.ObjectStore.Type == "" {
		c.ObjectStore.Type = "filesystem"
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Clock == nil {
		c.Clock = wallClock{}
	}
	return c
}

// Validate checks the configuration. Call it after EnsureDefaults.
func (c *Config) Validate() error {
	var errs []error
	if c.DataDir == "" {
		errs = append(errs, errors.New("node: data_dir is required"))
	}
	if c.ID != "" && (len(c.ID) > gossip.MaxIDLen || !utf8.ValidString(c.ID)) {
		errs = append(errs, fmt.Errorf("node: id %q must be valid UTF-8 of at most %d bytes", c.ID, gossip.MaxIDLen))
	}
	if len(c.Zone) > gossip.MaxZoneLen {
		errs = append(errs, fmt.Errorf("node: zone longer than %d bytes", gossip.MaxZoneLen))
	}
	if c.GossipProfile != "lan" && c.GossipProfile != "local" {
		errs = append(errs, fmt.Errorf("node: gossip_profile %q: want lan or local", c.GossipProfile))
	}
	if c.ReplicationFactor < 1 || c.ReplicationFactor > ring.MaxReplicationFactor {
		errs = append(errs, fmt.Errorf("node: replication_factor %d out of range [1, %d]", c.ReplicationFactor, ring.MaxReplicationFactor))
	}
	if c.VNodes < 1 || c.VNodes > gossip.MaxTokens {
		errs = append(errs, fmt.Errorf("node: vnodes %d out of range [1, %d]", c.VNodes, gossip.MaxTokens))
	}
	for _, l := range []Consistency{c.ReadConsistency, c.WriteConsistency} {
		if l < One || l > All {
			errs = append(errs, fmt.Errorf("node: bad default consistency %v", l))
		}
	}
	if c.RequestTimeout <= 0 || c.ReplicaTimeout <= 0 || c.ShutdownTimeout <= 0 {
		errs = append(errs, errors.New("node: request_timeout, replica_timeout and shutdown_timeout must be positive"))
	}
	if c.MaxKeySize < 1 || c.MaxKeySize > 64<<10 {
		errs = append(errs, fmt.Errorf("node: max_key_size %d out of range [1, 65536]", c.MaxKeySize))
	}
	if c.MaxValueSize < 0 || c.MaxValueSize > 64<<20 {
		errs = append(errs, fmt.Errorf("node: max_value_size %d out of range [0, 64 MiB]", c.MaxValueSize))
	}
	if c.MaxInFlight < 1 {
		errs = append(errs, errors.New("node: max_in_flight must be positive"))
	}
	if c.HintWindow <= 0 || c.HintMaxBytes <= 0 || c.HintReplayInterval <= 0 {
		errs = append(errs, errors.New("node: hint_window, hint_max_bytes and hint_replay_interval must be positive"))
	}
	if c.TombstoneGracePeriod < 2*time.Hour {
		// antientropy's GraceMargin is 1 h.
		errs = append(errs, fmt.Errorf("node: tombstone_grace_period %v must be at least 2h", c.TombstoneGracePeriod))
	}
	if c.Replace != "" && c.ID != "" && c.ID != c.Replace {
		errs = append(errs, fmt.Errorf("node: replace %q and id %q differ (a replacement takes the replaced node's id)", c.Replace, c.ID))
	}
	if c.ReplaceLookback < 0 || c.ReplaceRestoreTimeout < 0 || c.ReplaceStreamAttempts < 0 {
		errs = append(errs, errors.New("node: replace_lookback must not be negative"))
	}
	if c.MemTableSize < 0 {
		errs = append(errs, errors.New("node: memtable_size must not be negative"))
	}
	switch c.ObjectStore.Type {
	case "filesystem":
	case "s3":
		if c.ObjectStore.Bucket == "" {
			errs = append(errs, errors.New("node: object_store.bucket is required for type s3"))
		}
		if e := c.ObjectStore.Endpoint; e != "" {
			if u, err := url.Parse(e); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				errs = append(errs, fmt.Errorf("node: object_store.endpoint %q: want an http:// or https:// URL with a host", e))
			}
		}
		if (c.ObjectStore.AccessKey == "") != (c.ObjectStore.SecretKey == "") {
			errs = append(errs, errors.New("node: object_store.access_key and secret_key: give both or neither"))
		}
	default:
		errs = append(errs, fmt.Errorf("node: object_store.type %q: want filesystem or s3", c.ObjectStore.Type))
	}
	if o := c.ObjectStore; (o.PeerShardsData > 0) != (o.PeerShardsParity > 0) || o.PeerShardsData < 0 || o.PeerShardsParity < 0 || o.PeerShardsData+o.PeerShardsParity > 64 {
		errs = append(errs, fmt.Errorf("node: object_store.peer_shards_data %d and peer_shards_parity %d: give both (k >= 1, m >= 1, k+m <= 64) or neither", o.PeerShardsData, o.PeerShardsParity))
	} else if o.PeerShardsData > 0 && o.FallbackDir != "" {
		errs = append(errs, errors.New("node: object_store.fallback_dir and peer_shards_*: choose one fallback store"))
	}
	t := c.Tiering
	if levels := len(lsm.Metrics{}.Levels); t.ColdLevel < -1 || t.ColdLevel >= levels {
		errs = append(errs, fmt.Errorf("node: tiering.cold_level %d out of range [-1, %d]", t.ColdLevel, levels-1))
	}
	if t.UploadInterval < 0 || t.BackupInterval < 0 || t.GCDelay < 0 || t.HedgeDelay < 0 || t.UploadRate < 0 || t.BackupRetention < 0 {
		errs = append(errs, errors.New("node: tiering upload_interval, backup_interval, gc_delay, hedge_delay, upload_rate and backup_retention must not be negative"))
	}
	return errors.Join(errs...)
}

type wallClock struct{}

func (wallClock) Now() time.Time { return time.Now() }
