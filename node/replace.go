package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	kvv1 "github.com/tierkv/tierkv/api/kv/v1"
	"github.com/tierkv/tierkv/node/antientropy"
	"github.com/tierkv/tierkv/ring"
	"github.com/tierkv/tierkv/tiering"
)

// Replace (docs/operations.md): `tierkv serve --replace <id>` starts a node
// with a dead node's id on an empty data directory. The node
//
//  1. restores its engine from the dead node's latest manifest backup in
//     the bucket (tiering.Restore: cold tables are referenced, not
//     downloaded; the erasure fallback serves when the bucket fails);
//  2. joins with the dead node's id, so it takes over its tokens and clock
//     id (takeIdentity), and the hints held for it are delivered;
//  3. serves at once;
//  4. catches up: every peer sharing a range streams what is newer than the
//     backup (Repair.Stream with min_version; tables older than that are
//     not even read), resuming from the last key after an interruption;
//  5. then hydrates the restored data in the background (unless disabled).
//
// replace.json in the data directory records the phase, so a replacement
// that restarts part-way restores again or resumes the catch-up.

const replaceFile = "replace.json"

const (
	phaseRestoring  = "restoring"
	phaseCatchingUp = "catching_up"
	phaseHydrating  = "hydrating"
	phaseDone       = "done"
	phaseFailed     = "failed"
)

// replaceState is replace.json.
type replaceState struct {
	Target string `json:"target"`
	Phase  string `json:"phase"`
	// BackupCreatedMs is the restored backup's created time (unix ms): the
	// engine holds every write the dead node applied before it. 0: the
	// bucket held no backup, and the catch-up streams everything.
	BackupCreatedMs int64 `json:"backup_created_unix_ms"`
	// FromPeers: the engine was not restored from the bucket
	// (replace_from_peers); the catch-up streams every range, once, from
	// one replica, as Cassandra and ScyllaDB replace a node.
	FromPeers bool `json:"from_peers,omitempty"`
}

func loadReplaceState(dir string) (*replaceState, error) {
	b, err := os.ReadFile(filepath.Join(dir, replaceFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	var s replaceState
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("node: %s: %w", filepath.Join(dir, replaceFile), err)
	}
	return &s, nil
}

// replaceProgress is what GET /v1/admin/status and the metrics show.
type replaceProgress struct {
	mu       sync.Mutex
	active   bool
	target   string
	phase    string
	started  time.Time
	serving  time.Duration // from Open to serving
	caughtUp time.Duration // from Open to the end of the catch-up
	hydrated time.Duration // from Open to the end of hydration
	restore  *tiering.RestoreInfo
	// streams: peers to stream from, and done.
	streamsTotal, streamsDone int
	peerKeys, peerBytes       int64
	hydrateDone, hydrateTotal int64
	lastErr                   string
}

func (p *replaceProgress) set(f func(p *replaceProgress)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f(p)
}

// ReplaceStatus is the JSON of a replacement's progress.
type ReplaceStatus struct {
	Target string `json:"target"`
	// Phase: restoring, catching_up, hydrating, done or failed.
	Phase string `json:"phase"`
	// SecondsToServing is from the start of the process's Open to serving;
	// SecondsToRedundant to the end of the catch-up (every peer streamed
	// what is newer than the backup); SecondsToHydrated to the end of
	// hydration (0: not yet).
	SecondsToServing   float64 `json:"seconds_to_serving"`
	SecondsToRedundant float64 `json:"seconds_to_redundant,omitempty"`
	SecondsToHydrated  float64 `json:"seconds_to_hydrated,omitempty"`
	// BackupFound reports whether the bucket held a manifest backup;
	// BackupCreated is its time.
	BackupFound   bool       `json:"backup_found"`
	BackupCreated *time.Time `json:"backup_created,omitempty"`
	// RemoteObjects and RemoteBytes: what the restored engine references
	// in the bucket; BytesFromBucket counts what was downloaded from the
	// object stores (metadata at restore, remote reads, hydration);
	// BytesFromPeers and KeysFromPeers what the catch-up streamed.
	RemoteObjects   int    `json:"remote_objects"`
	RemoteBytes     int64  `json:"remote_bytes"`
	BytesFromBucket int64  `json:"bytes_from_bucket"`
	BytesFromPeers  int64  `json:"bytes_from_peers"`
	KeysFromPeers   int64  `json:"keys_from_peers"`
	StreamsDone     int    `json:"streams_done"`
	StreamsTotal    int    `json:"streams_total"`
	HydratedBytes   int64  `json:"hydrated_bytes"`
	HydrateTotal    int64  `json:"hydrate_total_bytes"`
	LastError       string `json:"last_error,omitempty"`
}

// ReplaceStatus returns the replacement's progress, or nil if this node did
// not start with --replace (or finished a replacement in an earlier run).
func (n *Node) ReplaceStatus() *ReplaceStatus {
	p := &n.replace
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.active {
		return nil
	}
	s := &ReplaceStatus{
		Target: p.target, Phase: p.phase,
		SecondsToServing: p.serving.Seconds(), SecondsToRedundant: p.caughtUp.Seconds(), SecondsToHydrated: p.hydrated.Seconds(),
		BytesFromPeers: p.peerBytes, KeysFromPeers: p.peerKeys,
		StreamsDone: p.streamsDone, StreamsTotal: p.streamsTotal,
		HydratedBytes: p.hydrateDone, HydrateTotal: p.hydrateTotal, LastError: p.lastErr,
	}
	if p.restore != nil {
		s.BackupFound = true
		c := p.restore.Created
		s.BackupCreated = &c
		s.RemoteObjects, s.RemoteBytes = p.restore.Objects, p.restore.Bytes
		s.BytesFromBucket = p.restore.MetaBytes
	}
	if n.tier != nil {
		tm := n.tier.Metrics()
		s.BytesFromBucket += int64(tm.BytesDownloaded + tm.HydratedBytes)
	}
	return s
}

// prepareReplace decides, before the engine opens, what a --replace start
// does; it returns the state to resume (nil: not replacing).
func (n *Node) prepareReplace(found bool) (*replaceState, error) {
	c := &n.cfg
	rs, err := loadReplaceState(c.DataDir)
	if err != nil {
		return nil, err
	}
	switch {
	case rs != nil:
		// A replacement that stopped part-way resumes, with or without
		// the flag.
		n.log.Info("resuming the replacement", "target", rs.Target, "phase", rs.Phase)
	case c.Replace == "":
		return nil, nil
	case found:
		n.log.Warn("this data directory already belongs to the cluster; --replace ignored", "id", c.ID)
		return nil, nil
	default:
		rs = &replaceState{Target: c.ID, Phase: phaseRestoring, FromPeers: c.ReplaceFromPeers}
		if err := writeJSONAtomic(c.DataDir, replaceFile, rs); err != nil {
			return nil, fmt.Errorf("node: %w", err)
		}
	}
	n.replace.set(func(p *replaceProgress) {
		p.active, p.target, p.phase, p.started = true, rs.Target, rs.Phase, n.cfg.Clock.Now()
	})
	return rs, nil
}

// restoreEngine builds engineDir from the target's latest manifest backup.
func (n *Node) restoreEngine(rs *replaceState, engineDir string) error {
	// A restore that stopped part-way left a partial directory.
	if err := os.RemoveAll(engineDir); err != nil {
		return fmt.Errorf("node: replace: %w", err)
	}
	if err := os.MkdirAll(engineDir, 0o755); err != nil {
		return fmt.Errorf("node: replace: %w", err)
	}
	if rs.FromPeers {
		n.log.Info("replace_from_peers: streaming every range from peers, nothing from the object store", "target", rs.Target)
		rs.Phase = phaseCatchingUp
		n.replace.set(func(p *replaceProgress) { p.phase = rs.Phase })
		return writeJSONAtomic(n.cfg.DataDir, replaceFile, rs)
	}
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ReplaceRestoreTimeout)
	defer cancel()
	info, err := tiering.Restore(ctx, tiering.RestoreOptions{
		Dir: engineDir, NodeID: rs.Target, Bucket: n.bucket, Fallback: n.fallback,
		HedgeDelay: n.cfg.Tiering.HedgeDelay,
	})
	switch {
	case errors.Is(err, tiering.ErrNoBackup):
		n.log.Warn("no manifest backup of the replaced node in the object store: streaming all its ranges from peers", "target", rs.Target)
		rs.BackupCreatedMs = 0
	case err != nil:
		return fmt.Errorf("node: replace %s: %w", rs.Target, err)
	default:
		n.log.Info("restored from the object store", "target", rs.Target, "backup", info.Seq, "created", info.Created,
			"remote_objects", info.Objects, "remote_bytes", info.Bytes, "metadata_bytes", info.MetaBytes)
		rs.BackupCreatedMs = info.Created.UnixMilli()
		n.replace.set(func(p *replaceProgress) { p.restore = info })
	}
	rs.Phase = phaseCatchingUp
	n.replace.set(func(p *replaceProgress) { p.phase = rs.Phase })
	return writeJSONAtomic(n.cfg.DataDir, replaceFile, rs)
}

// catchUpVersion is the lowest version the catch-up asks peers for.
func (n *Node) catchUpVersion(rs *replaceState) uint64 {
	if rs.BackupCreatedMs == 0 {
		return 0
	}
	cutoff := time.UnixMilli(rs.BackupCreatedMs).Add(-n.cfg.ReplaceLookback)
	return versionAtTime(cutoff)
}

// catchUp streams from every peer what is newer than the restored backup,
// then hydrates. It runs in the background once the node serves.
func (n *Node) catchUp(rs *replaceState, openStart time.Time) {
	defer n.bg.Done()
	ctx, cancel := n.backgroundContext()
	defer cancel()
	minVersion := n.catchUpVersion(rs)
	byPeer := map[ring.NodeID][]ring.Range{}
	for i, w := range antientropy.Plan(n.g.Ring(), n.id, n.cfg.ReplicationFactor) {
		if rs.FromPeers {
			// One replica per range, spread over the live peers.
			var live []ring.NodeID
			for _, p := range w.Peers {
				if n.up(p) {
					live = append(live, p)
				}
			}
			if len(live) == 0 {
				live = w.Peers
			}
			if len(live) > 0 {
				p := live[i%len(live)]
				byPeer[p] = append(byPeer[p], w.Range)
			}
			continue
		}
		for _, p := range w.Peers {
			byPeer[p] = append(byPeer[p], w.Range)
		}
	}
	peers := make([]ring.NodeID, 0, len(byPeer))
	for p := range byPeer {
		peers = append(peers, p)
	}
	slices.Sort(peers)
	n.replace.set(func(p *replaceProgress) { p.streamsTotal = len(peers) })
	n.log.Info("catching up from peers", "peers", len(peers), "min_version_time", VersionTime(minVersion))
	// NB: streams from all peers (not one per range, as Cassandra does): a
	// write acknowledged by the dead node and one other replica after the
	// backup is on that replica only.
	var wg sync.WaitGroup
	errs := make([]error, len(peers))
	for i, p := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = n.streamFromWith(ctx, p, byPeer[p], minVersion, func(keys, bytes int64) {
				n.replace.set(func(p *replaceProgress) { p.peerKeys += keys; p.peerBytes += bytes })
			})
			if errs[i] == nil {
				n.replace.set(func(p *replaceProgress) { p.streamsDone++ })
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		if ctx.Err() == nil {
			n.log.Error("replace catch-up failed; anti-entropy will repair what is missing", "err", err)
			n.replace.set(func(p *replaceProgress) { p.phase, p.lastErr = phaseFailed, err.Error() })
		}
		return
	}
	caughtUp := n.cfg.Clock.Now().Sub(openStart)
	if err := os.Remove(filepath.Join(n.cfg.DataDir, replaceFile)); err != nil {
		n.log.Warn("replace: remove state file", "err", err)
	}
	next := phaseDone
	if !n.cfg.ReplaceSkipHydrate {
		next = phaseHydrating
	}
	n.replace.set(func(p *replaceProgress) { p.caughtUp, p.phase = caughtUp, next })
	n.log.Info("replace: caught up from peers", "after", caughtUp)
	if n.cfg.ReplaceSkipHydrate {
		return
	}
	err := n.tier.Hydrate(ctx, tiering.HydrateOptions{All: true, Progress: func(done, total int64) {
		n.replace.set(func(p *replaceProgress) { p.hydrateDone, p.hydrateTotal = done, total })
	}})
	if err != nil {
		if ctx.Err() == nil {
			n.log.Warn("replace: hydration failed; remote tables keep serving", "err", err)
			n.replace.set(func(p *replaceProgress) { p.lastErr = err.Error() })
		}
		return
	}
	hydrated := n.cfg.Clock.Now().Sub(openStart)
	n.replace.set(func(p *replaceProgress) { p.hydrated, p.phase = hydrated, phaseDone })
	n.log.Info("replace: hydrated", "after", hydrated)
}

// streamFromWith applies everything peer streams of ranges at or above
// minVersion, resuming after the last key applied when the stream breaks;
// it gives up after ReplaceStreamAttempts consecutive failures. progress
// receives the keys and bytes of each batch applied.
func (n *Node) streamFromWith(ctx context.Context, peer ring.NodeID, ranges []ring.Range, minVersion uint64, progress func(keys, bytes int64)) error {
	req := &kvv1.StreamRequest{MinVersion: minVersion}
	for _, r := range ranges {
		req.Ranges = append(req.Ranges, rangeToPB(r))
	}
	failures := 0
	delay := 100 * time.Millisecond
	for {
		progressed, err := n.streamOnce(ctx, peer, req, progress)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, ErrInvalidArgument) || errors.Is(err, ErrTooLarge) {
			return fmt.Errorf("stream from %s: %w", peer, err)
		}
		if progressed {
			failures, delay = 0, 100*time.Millisecond
		}
		if failures++; failures >= n.cfg.ReplaceStreamAttempts {
			return fmt.Errorf("stream from %s: %d attempts failed, last: %w", peer, failures, err)
		}
		n.log.Warn("stream from peer interrupted; resuming", "peer", peer, "after_key", string(req.StartAfter), "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
	}
}

// streamOnce runs one Stream call, advancing req.StartAfter past every
// batch applied. progressed reports whether any batch was.
func (n *Node) streamOnce(ctx context.Context, peer ring.NodeID, req *kvv1.StreamRequest, progress func(keys, bytes int64)) (progressed bool, _ error) {
	cc, err := n.conn(peer)
	if err != nil {
		return false, err
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := kvv1.NewRepairClient(cc).Stream(sctx, req)
	if err != nil {
		return false, fromStatus(err)
	}
	for {
		b, err := stream.Recv()
		if err == io.EOF {
			return progressed, nil
		}
		if err != nil {
			return progressed, fromStatus(err)
		}
		es, err := n.entriesFromPB(b.Entries)
		if err != nil {
			return progressed, err
		}
		if len(es) == 0 {
			continue
		}
		if err := n.applyStreamed(ctx, es); err != nil {
			return progressed, err
		}
		var size int64
		for _, e := range es {
			size += int64(antientropy.EntrySize(e))
		}
		req.StartAfter = slices.Clone(es[len(es)-1].Key)
		progressed = true
		progress(int64(len(es)), size)
		if h := n.streamHookForTesting.Load(); h != nil {
			if err := (*h)(peer); err != nil {
				return progressed, err // as if the stream broke here
			}
		}
	}
}

// versionAtTime is the lowest version stamped at wall time t.
func versionAtTime(t time.Time) uint64 {
	ms := t.UnixMilli()
	if ms <= 0 {
		return 0
	}
	return uint64(ms) << (hlcNodeBits + hlcLogicalBits)
}
