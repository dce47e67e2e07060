package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/tierkv/tierkv/node"
)

// stringList is a comma-separated flag.
type stringList struct{ p *[]string }

func (s stringList) String() string {
	if s.p == nil {
		return ""
	}
	return strings.Join(*s.p, ",")
}

func (s stringList) Set(v string) error {
	*s.p = nil
	for _, x := range strings.Split(v, ",") {
		if x = strings.TrimSpace(x); x != "" {
			*s.p = append(*s.p, x)
		}
	}
	return nil
}

// bindConfig defines one flag per setting of cfg, with cfg's current values
// as defaults. The YAML key of a flag is its name with '_' for '-'
// (object_store.*, tiering.* and anti_entropy.* nested); its environment variable is TIERKV_ and the
// upper-cased name with '_' for '-'.
func bindConfig(fs *flag.FlagSet, cfg *node.Config) {
	fs.StringVar(&cfg.ID, "id", cfg.ID, "node id, permanent (default: the id in data-dir, or a new random one)")
	fs.StringVar(&cfg.Zone, "zone", cfg.Zone, "failure domain (rack or availability zone) for replica placement")
	fs.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "directory of the engine, the hint store and the node identity (required)")
	fs.StringVar(&cfg.HTTPAddr, "http-addr", cfg.HTTPAddr, "HTTP API listen address (port 0: any free port)")
	fs.StringVar(&cfg.GRPCAddr, "grpc-addr", cfg.GRPCAddr, "gRPC listen address, for clients and the internode replica API")
	fs.StringVar(&cfg.GossipAddr, "gossip-addr", cfg.GossipAddr, "gossip (memberlist, UDP and TCP) listen address")
	fs.StringVar(&cfg.AdvertiseHost, "advertise-host", cfg.AdvertiseHost, "host other nodes use to reach this one (when listening on 0.0.0.0)")
	fs.Var(stringList{&cfg.Seeds}, "seeds", "comma-separated gossip addresses of nodes to join through")
	fs.StringVar(&cfg.GossipProfile, "gossip-profile", cfg.GossipProfile, "gossip timings: lan (1s heartbeats) or local (loopback, fast failure detection)")
	fs.IntVar(&cfg.ReplicationFactor, "replication-factor", cfg.ReplicationFactor, "replicas of each key")
	fs.IntVar(&cfg.VNodes, "vnodes", cfg.VNodes, "tokens a new node allocates on the ring")
	fs.TextVar(&cfg.ReadConsistency, "read-consistency", cfg.ReadConsistency, "default read consistency: ONE, QUORUM or ALL")
	fs.TextVar(&cfg.WriteConsistency, "write-consistency", cfg.WriteConsistency, "default write consistency: ONE, QUORUM or ALL")
	fs.DurationVar(&cfg.RequestTimeout, "request-timeout", cfg.RequestTimeout, "deadline of a client request")
	fs.DurationVar(&cfg.ReplicaTimeout, "replica-timeout", cfg.ReplicaTimeout, "deadline of one replica call; a replica that misses it gets a hint")
	fs.DurationVar(&cfg.SpeculativeRetry, "speculative-retry", cfg.SpeculativeRetry, "a read asks one more replica when those asked have not answered within this (negative: never)")
	fs.IntVar(&cfg.MaxKeySize, "max-key-size", cfg.MaxKeySize, "largest key in bytes")
	fs.IntVar(&cfg.MaxValueSize, "max-value-size", cfg.MaxValueSize, "largest value in bytes")
	fs.IntVar(&cfg.MaxInFlight, "max-in-flight", cfg.MaxInFlight, "concurrent client requests; more get 429 / RESOURCE_EXHAUSTED")
	fs.DurationVar(&cfg.HintWindow, "hint-window", cfg.HintWindow, "how long hints for a down replica are kept")
	fs.Int64Var(&cfg.HintMaxBytes, "hint-max-bytes", cfg.HintMaxBytes, "bound of the hint store in bytes; hints over it are dropped")
	fs.DurationVar(&cfg.HintReplayInterval, "hint-replay-interval", cfg.HintReplayInterval, "how often pending hints are offered to live replicas")
	fs.DurationVar(&cfg.RingDelay, "ring-delay", cfg.RingDelay, "how long a joining or leaving node waits for every live member to confirm its state before streaming (0: 30s)")
	fs.StringVar(&cfg.Replace, "replace", cfg.Replace, "replace the dead node with this id: on an empty data-dir, restore its engine from its latest manifest backup in the object store, serve at once, then stream from peers what is newer (docs/operations.md)")
	fs.DurationVar(&cfg.ReplaceLookback, "replace-lookback", cfg.ReplaceLookback, "a replacement streams from peers what is newer than its backup's time minus this (0: 30s)")
	fs.BoolVar(&cfg.ReplaceFromPeers, "replace-from-peers", cfg.ReplaceFromPeers, "a replacement streams every range from one replica instead of restoring from the object store (the Cassandra way; slower)")
	fs.BoolVar(&cfg.ReplaceSkipHydrate, "replace-skip-hydrate", cfg.ReplaceSkipHydrate, "a replacement leaves restored tables in the object store instead of downloading them after it caught up")
	fs.DurationVar(&cfg.TombstoneGracePeriod, "tombstone-grace-period", cfg.TombstoneGracePeriod, "how long tombstones are kept; a replica down for longer must be replaced, not repaired (0: 10 days)")
	fs.DurationVar(&cfg.AntiEntropy.Interval, "anti-entropy-interval", cfg.AntiEntropy.Interval, "time between periodic anti-entropy passes (0: 1h; negative: only on POST /v1/admin/repair)")
	fs.Int64Var(&cfg.AntiEntropy.Rate, "anti-entropy-rate", cfg.AntiEntropy.Rate, "bytes/s anti-entropy and range streaming may move (0: 32 MiB/s; negative: unlimited)")
	fs.Int64Var(&cfg.MemTableSize, "memtable-size", cfg.MemTableSize, "engine memtable size in bytes")
	fs.StringVar(&cfg.ObjectStore.Type, "object-store-type", cfg.ObjectStore.Type, "tiering bucket: filesystem (embedded default) or s3 (AWS S3, MinIO)")
	fs.StringVar(&cfg.ObjectStore.Dir, "object-store-dir", cfg.ObjectStore.Dir, "filesystem bucket directory (default: data-dir/bucket; nodes may share one)")
	fs.StringVar(&cfg.ObjectStore.FallbackDir, "object-store-fallback-dir", cfg.ObjectStore.FallbackDir, "optional filesystem bucket receiving a copy of every uploaded object; reads fall back to it when the bucket fails (empty: none)")
	fs.IntVar(&cfg.ObjectStore.PeerShardsData, "object-store-peer-shards-data", cfg.ObjectStore.PeerShardsData, "k of the RS(k,m) fallback store on peers: shards of every uploaded object on k+m other nodes (0: off; same on every node)")
	fs.IntVar(&cfg.ObjectStore.PeerShardsParity, "object-store-peer-shards-parity", cfg.ObjectStore.PeerShardsParity, "m of the RS(k,m) fallback store on peers (shards that may be lost)")
	fs.DurationVar(&cfg.ObjectStore.PeerShardsRebuildDelay, "object-store-peer-shards-rebuild-delay", cfg.ObjectStore.PeerShardsRebuildDelay, "delay after a membership change before this node rebuilds its shards on peers (0: 10s)")
	fs.StringVar(&cfg.ObjectStore.Endpoint, "object-store-endpoint", cfg.ObjectStore.Endpoint, "S3 endpoint URL (empty: AWS)")
	fs.StringVar(&cfg.ObjectStore.Bucket, "object-store-bucket", cfg.ObjectStore.Bucket, "S3 bucket")
	fs.StringVar(&cfg.ObjectStore.Region, "object-store-region", cfg.ObjectStore.Region, "S3 region")
	fs.StringVar(&cfg.ObjectStore.AccessKey, "object-store-access-key", cfg.ObjectStore.AccessKey, "S3 access key (empty: the SDK's default credential chain)")
	fs.StringVar(&cfg.ObjectStore.SecretKey, "object-store-secret-key", cfg.ObjectStore.SecretKey, "S3 secret key")
	fs.BoolVar(&cfg.ObjectStore.PathStyle, "object-store-path-style", cfg.ObjectStore.PathStyle, "path-style S3 addressing (MinIO)")
	t := &cfg.Tiering
	fs.IntVar(&t.ColdLevel, "tiering-cold-level", t.ColdLevel, "tables at this engine level or deeper are moved to the object store (leveled compaction; -1: none)")
	fs.DurationVar(&t.ColdAge, "tiering-cold-age", t.ColdAge, "size-tiered compaction: tables older than this are moved to the object store (0: 24h; negative: none)")
	fs.DurationVar(&t.BlobColdAge, "tiering-blob-cold-age", t.BlobColdAge, "blob files (large values) older than this are moved to the object store (0: 24h; negative: none)")
	fs.Int64Var(&t.CacheSize, "tiering-cache-size", t.CacheSize, "local disk cache of remote data in bytes (0: 1 GiB; negative: no cache)")
	fs.DurationVar(&t.UploadInterval, "tiering-upload-interval", t.UploadInterval, "how often cold tables are uploaded (0: 30s)")
	fs.Int64Var(&t.UploadRate, "tiering-upload-rate", t.UploadRate, "upload bandwidth bound in bytes/s (0: unlimited)")
	fs.DurationVar(&t.BackupInterval, "tiering-backup-interval", t.BackupInterval, "how often a manifest backup is uploaded and garbage collection runs (0: 10m)")
	fs.IntVar(&t.BackupRetention, "tiering-backup-retention", t.BackupRetention, "manifest backups kept (0: 3)")
	fs.DurationVar(&t.GCDelay, "tiering-gc-delay", t.GCDelay, "how long an object stays unreferenced before garbage collection deletes it (0: 1h)")
	fs.DurationVar(&t.HedgeDelay, "tiering-hedge-delay", t.HedgeDelay, "a remote read not answered within this is also sent to the fallback bucket (0: no hedging)")
	fs.StringVar(&cfg.OTLPEndpoint, "otlp-endpoint", cfg.OTLPEndpoint, "OTLP/gRPC trace collector host:port (empty: tracing off)")
	fs.BoolVar(&cfg.EnablePprof, "enable-pprof", cfg.EnablePprof, "serve Go runtime profiles under /debug/pprof/ on the HTTP address")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", cfg.ShutdownTimeout, "bound of each shutdown step: draining in-flight requests, the final memtable flush, the final manifest backup")
}

func yamlKey(flagName string) string {
	if k, ok := strings.CutPrefix(flagName, "object-store-"); ok {
		return "object_store." + strings.ReplaceAll(k, "-", "_")
	}
	if k, ok := strings.CutPrefix(flagName, "anti-entropy-"); ok {
		return "anti_entropy." + strings.ReplaceAll(k, "-", "_")
	}
	if k, ok := strings.CutPrefix(flagName, "tiering-"); ok {
		return "tiering." + strings.ReplaceAll(k, "-", "_")
	}
	return strings.ReplaceAll(flagName, "-", "_")
}

func envName(flagName string) string {
	return "TIERKV_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// usage prints every setting with its flag, YAML key, environment variable
// and default.
func usage(w io.Writer, fs *flag.FlagSet, head string) {
	fmt.Fprint(w, head)
	fs.VisitAll(func(f *flag.Flag) {
		def := f.DefValue
		if def == "" {
			def = `""`
		}
		if f.Name == "config" || f.Name == "log-level" {
			fmt.Fprintf(w, "  --%s (env %s, default %s)\n      %s\n", f.Name, envName(f.Name), def, f.Usage)
			return
		}
		fmt.Fprintf(w, "  --%s (yaml %s, env %s, default %s)\n      %s\n", f.Name, yamlKey(f.Name), envName(f.Name), def, f.Usage)
	})
}

// loadConfig builds the configuration: defaults, then the YAML file
// (unknown keys are errors), then environment variables, then flags.
func loadConfig(fs *flag.FlagSet, cfg *node.Config, configPath *string, args []string, getenv func(string) string) error {
	// The config file's path may come from a flag or the environment; find
	// it before the file's values go under the flags.
	path := getenv(envName("config"))
	for i, a := range args {
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || name != "config" {
			continue
		}
		if hasVal {
			path = val
		} else if i+1 < len(args) {
			path = args[i+1]
		}
	}
	if path != "" {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		dec := yaml.NewDecoder(f)
		dec.KnownFields(true)
		err = dec.Decode(cfg)
		f.Close()
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("config %s: %w", path, err)
		}
	}
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if v := getenv(envName(f.Name)); v != "" {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", envName(f.Name), err))
			}
		}
	})
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return fs.Parse(args)
}
