package node

import (
	"context"
	"errors"
	"runtime"
	"slices"
	"time"
	"unicode/utf8"

	"go.opentelemetry.io/otel/codes"

	"github.com/tierkv/tierkv/lsm"

	kvv1 "github.com/tierkv/tierkv/api/kv/v1"
	"github.com/tierkv/tierkv/ring"
)

// validateKey checks a key against the bounds; it names the problem.
func (n *Node) validateKey(key []byte) error {
	switch {
	case len(key) == 0:
		return errorf(ErrInvalidArgument, "empty key")
	case len(key) > n.cfg.MaxKeySize:
		return errorf(ErrTooLarge, "key of %d bytes exceeds max_key_size %d", len(key), n.cfg.MaxKeySize)
	case !utf8.Valid(key):
		return errorf(ErrInvalidArgument, "key is not valid UTF-8")
	}
	return nil
}

func (n *Node) validateValue(v []byte) error {
	if len(v) > n.cfg.MaxValueSize {
		return errorf(ErrTooLarge, "value of %d bytes exceeds max_value_size %d", len(v), n.cfg.MaxValueSize)
	}
	return nil
}

func checkLevel(c Consistency) error {
	if c > All {
		return errorf(ErrInvalidArgument, "unknown consistency level %d", c)
	}
	return nil
}

// requestContext bounds a client request by RequestTimeout. A request
// whose own deadline comes first (a client's timeout, carried by gRPC or a
// session call) keeps its context: a second timer would change nothing
// but cost a context and a timer per request.
func (n *Node) requestContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= n.cfg.RequestTimeout {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, n.cfg.RequestTimeout)
}

// acquire takes an in-flight slot, or fails with ErrOverloaded.
func (n *Node) acquire() (release func(), err error) {
	if n.closing.Load() {
		return nil, ErrClosed
	}
	select {
	case n.inflight <- struct{}{}:
		n.m.inflight.Inc()
		return func() { <-n.inflight; n.m.inflight.Dec() }, nil
	default:
		n.m.rejected.Inc()
		return nil, errorf(ErrOverloaded, "%d requests in flight (max_in_flight)", n.cfg.MaxInFlight)
	}
}

// Put writes value under key at consistency c and returns its version.
// lastSeen is the highest version the client has seen (0: none): the new
// version is greater.
func (n *Node) Put(ctx context.Context, key, value []byte, c Consistency, lastSeen uint64) (uint64, error) {
	if err := n.validateValue(value); err != nil {
		return 0, err
	}
	return n.mutate(ctx, &kvv1.Mutation{Key: key, Value: value}, c, lastSeen)
}

// Delete writes a tombstone for key at consistency c and returns its
// version.
func (n *Node) Delete(ctx context.Context, key []byte, c Consistency, lastSeen uint64) (uint64, error) {
	return n.mutate(ctx, &kvv1.Mutation{Key: key, Tombstone: true}, c, lastSeen)
}

// liveOwners returns the replicas of key for a read (write false) or a
// write, split by liveness, and the acknowledgements needed at c (one more
// per pending replica during a topology change, placement.go); or
// ErrUnavailable if fewer than that are live.
func (n *Node) liveOwners(key []byte, c Consistency, write bool) (live, down []ring.NodeID, need int, err error) {
	var owners []ring.NodeID
	pending := 0
	if write {
		owners, pending = n.writeOwners(key)
	} else {
		owners = n.readOwners(key)
	}
	// NB: never more than the replicas there are (ALL during a join: the
	// read view's owners and the pending ones).
	need = min(c.required(n.cfg.ReplicationFactor)+pending, len(owners))
	for _, id := range owners {
		if n.up(id) {
			live = append(live, id)
		} else {
			down = append(down, id)
		}
	}
	if len(live) < need {
		return nil, nil, 0, errorf(ErrUnavailable, "consistency %v needs %d replicas, %d of %d are up (down: %v)",
			c, need, len(live), len(live)+len(down), down)
	}
	return live, down, need, nil
}

func (n *Node) mutate(ctx context.Context, m *kvv1.Mutation, c Consistency, lastSeen uint64) (_ uint64, err error) {
	if err := n.validateKey(m.Key); err != nil {
		return 0, err
	}
	if err := checkLevel(c); err != nil {
		return 0, err
	}
	if c == ConsistencyDefault {
		c = n.cfg.WriteConsistency
	}
	start := n.cfg.Clock.Now()
	ctx, span := n.span(ctx, "write", c, m.Key)
	defer func() {
		n.m.observe("write", c, n.cfg.Clock.Now().Sub(start), err)
		if err != nil {
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}()
	live, down, need, err := n.liveOwners(m.Key, c, true)
	if err != nil {
		return 0, err
	}
	if lastSeen != 0 {
		n.hlc.Observe(lastSeen)
	}
	m.Version = n.hlc.Next()
	for _, id := range down {
		n.hints.add(id, m)
	}
	results := make(chan error, len(live))
	local := false
	for _, id := range live {
		if id == n.id {
			local = true
			continue
		}
		n.sendWrite(ctx, id, m, results)
	}
	if local {
		// NB: in this goroutine, after the remote writes have gone out:
		// the yield runs the pipes' senders, which sendWrite only woke,
		// before the local write. Without it they wait on this processor
		// until the local write blocks on its WAL sync (81 µs median at
		// one client on a 2-core VM), and the remote acknowledgement a
		// QUORUM write waits for comes that much later.
		if len(live) > 1 {
			runtime.Gosched()
		}
		err := n.applyLocal(m)
		if err != nil && !inputError(err) {
			n.hints.add(n.id, m)
		}
		results <- err
	}
	acks, failed := 0, 0
	var lastErr error
	for acks < need {
		select {
		case err := <-results:
			if err == nil {
				acks++
				continue
			}
			failed++
			lastErr = err
			if inputError(err) {
				return 0, err
			}
			if len(live)-failed < need {
				kind := ErrUnavailable
				if errorKind(err) == ErrOverloaded {
					kind = ErrOverloaded
				}
				return 0, errorf(kind, "consistency %v needs %d acknowledgements, %d replicas acknowledged, %d failed (last: %v)",
					c, need, acks, failed, lastErr)
			}
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.Canceled) {
				return 0, ctx.Err()
			}
			return 0, errorf(ErrTimeout, "consistency %v needs %d acknowledgements, %d arrived before the deadline", c, need, acks)
		}
	}
	return m.Version, nil
}

// applyTo sends a mutation to one replica (this node: the engine directly).
func (n *Node) applyTo(ctx context.Context, id ring.NodeID, m *kvv1.Mutation) error {
	if id == n.id {
		return n.applyLocal(m)
	}
	return n.applyRemote(ctx, id, m)
}

// applyLocal applies a mutation to this node's engine and returns after the
// WAL sync.
func (n *Node) applyLocal(m *kvv1.Mutation) error {
	return n.applyLocalBatch([]*kvv1.Mutation{m})
}

// applyLocalBatch applies mutations to this node's engine in one batch
// (one WAL record, synced), all or nothing.
func (n *Node) applyLocalBatch(ms []*kvv1.Mutation) error {
	var b lsm.Batch
	size := 0
	for _, m := range ms {
		size += len(m.GetKey()) + len(m.GetValue())
	}
	b.Grow(len(ms), size)
	for _, m := range ms {
		if m == nil || m.Version == 0 {
			return errorf(ErrInvalidArgument, "mutation without a version")
		}
		if m.Tombstone {
			b.Delete(m.Key, m.Version)
		} else {
			b.Set(m.Key, m.Value, m.Version)
		}
		n.hlc.Observe(m.Version)
	}
	if err := n.db.Apply(&b, lsm.Sync); err != nil {
		switch {
		case errors.Is(err, lsm.ErrInvalidInput):
			return errorf(ErrInvalidArgument, "%v", err)
		case errors.Is(err, lsm.ErrWriteStall):
			return errorf(ErrOverloaded, "%v", err)
		case errors.Is(err, lsm.ErrClosed):
			return ErrClosed
		}
		return err
	}
	return nil
}

// readLocal returns this node's newest version of key (nil if none); a
// digest carries no value (and reads none from disk).
func (n *Node) readLocal(key []byte, digest bool) (*kvv1.Mutation, error) {
	if digest {
		v, deleted, err := n.db.GetVersion(key)
		if errors.Is(err, lsm.ErrNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		return &kvv1.Mutation{Key: key, Version: v, Tombstone: deleted}, nil
	}
	e, err := n.db.GetEntry(key)
	if errors.Is(err, lsm.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &kvv1.Mutation{Key: e.Key, Value: e.Value, Version: e.Version, Tombstone: e.Deleted}, nil
}

func (n *Node) readFrom(ctx context.Context, id ring.NodeID, key []byte, digest bool) (*kvv1.Mutation, error) {
	n.countRead(digest)
	if id == n.id {
		return n.readLocal(key, digest)
	}
	return n.readRemote(ctx, id, key, digest)
}

func (n *Node) countRead(digest bool) {
	if digest {
		n.m.digestReads.Inc()
	} else {
		n.m.dataReads.Inc()
	}
}

type readResult struct {
	id     ring.NodeID
	m      *kvv1.Mutation // nil: the replica holds no version
	digest bool           // m carries no value
	err    error
}

// complete reports whether the answer can be returned as it is: it has the
// value, or needs none (no version, a tombstone).
func (r readResult) complete() bool { return !r.digest || r.m == nil || r.m.Tombstone }

func version(m *kvv1.Mutation) uint64 {
	if m == nil {
		return 0
	}
	return m.Version
}

// Get reads key at consistency c. It asks as many live replicas as the
// level needs (this node first when it is one): the first for the value,
// the others for a digest, the version alone (Cassandra's digest reads). A
// replica that fails, or has not answered after SpeculativeRetry, is
// replaced by the next live one. Of the answers the newest version wins;
// if only a digest carried it, its value is read from that replica.
// Replicas that answered with an older version are repaired before Get
// returns (at ONE there is one answer and nothing to repair; replicas not
// asked are left to hints and anti-entropy).
// A key whose newest version is a tombstone is ErrNotFound; version is then
// the tombstone's.
func (n *Node) Get(ctx context.Context, key []byte, c Consistency) (value []byte, ver uint64, err error) {
	if err := n.validateKey(key); err != nil {
		return nil, 0, err
	}
	if err := checkLevel(c); err != nil {
		return nil, 0, err
	}
	if c == ConsistencyDefault {
		c = n.cfg.ReadConsistency
	}
	start := n.cfg.Clock.Now()
	ctx, span := n.span(ctx, "read", c, key)
	defer func() {
		n.m.observe("read", c, n.cfg.Clock.Now().Sub(start), err)
		if err != nil && !errors.Is(err, ErrNotFound) {
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}()
	live, _, need, err := n.liveOwners(key, c, false)
	if err != nil {
		return nil, 0, err
	}
	answers, late, err := n.gatherReads(ctx, key, c, n.readOrder(live), need)
	if err != nil {
		return nil, 0, err
	}
	// Late answers are repaired against the answers as they are when Get
	// returns, with the value of a newest digest read in.
	defer func() { n.drainReads(late, answers) }()
	best := answers[0]
	for _, a := range answers[1:] {
		if version(a.m) > version(best.m) || (version(a.m) == version(best.m) && !best.complete() && a.complete()) {
			best = a
		}
	}
	if !best.complete() {
		// Only a digest carried the newest version: read its value.
		n.m.digestMismatches.Inc()
		m, err := n.readFrom(ctx, best.id, key, false)
		if err != nil {
			return nil, 0, errorf(ErrUnavailable, "consistency %v: reading the newest version from %s: %v", c, best.id, err)
		}
		best.m, best.digest = m, false
		for i := range answers {
			if answers[i].id == best.id {
				answers[i] = best
			}
		}
		for _, a := range answers {
			if version(a.m) > version(best.m) { // the replica lost a version between the two reads
				return nil, 0, errorf(ErrUnavailable, "consistency %v: replica %s answered version %d, then %d", c, best.id, version(a.m), version(best.m))
			}
		}
	}
	if best.m != nil {
		n.hlc.Observe(best.m.Version)
		// Blocking read repair: the newest version must be on need
		// replicas before it is returned, so a later read at this level
		// cannot return older data.
		if err := n.repairReads(ctx, c, answers, best.m, need); err != nil {
			return nil, 0, err
		}
	}
	if best.m == nil {
		return nil, 0, errorf(ErrNotFound, "key %q", key)
	}
	if best.m.Tombstone {
		return nil, best.m.Version, errorf(ErrNotFound, "key %q (deleted at version %d)", key, best.m.Version)
	}
	return best.m.Value, best.m.Version, nil
}

// readOrder orders the live replicas of a read: this node first (its read
// is a local lookup), then the others in ring order.
func (n *Node) readOrder(live []ring.NodeID) []ring.NodeID {
	if i := slices.Index(live, n.id); i > 0 {
		live = slices.Clone(live)
		live[0], live[i] = live[i], live[0]
	}
	return live
}

// gatherReads asks replicas in order for key until need have answered:
// the first for the value, the next need-1 for digests. A failed request
// is replaced by the next replica (asked for the value if no value request
// is left), and so is, once, a slow one after SpeculativeRetry. When the
// caller is done with the answers it passes them and late to drainReads:
// answers that arrive after need are repaired against them in the
// background.
func (n *Node) gatherReads(ctx context.Context, key []byte, c Consistency, order []ring.NodeID, need int) (answers []readResult, late lateReads, err error) {
	results := make(chan readResult, len(order))
	sent, dataPending := 0, 0
	local, localDigest := false, false
	send := func(digest bool) {
		id := order[sent]
		sent++
		if !digest {
			dataPending++
		}
		if id == n.id {
			local, localDigest = true, digest
			return
		}
		n.countRead(digest)
		n.sendRead(ctx, id, key, digest, results)
	}
	send(false)
	for sent < need {
		send(true)
	}
	if local {
		// NB: in this goroutine, after the remote reads have started (this
		// node is first in order, so only here); the yield lets the read
		// pipes' senders send first (see mutate).
		if sent > 1 {
			runtime.Gosched()
		}
		m, err := n.readFrom(ctx, n.id, key, localDigest)
		results <- readResult{id: n.id, m: m, digest: localDigest, err: err}
	}
	var speculate <-chan time.Time
	if d := n.cfg.SpeculativeRetry; d > 0 && sent < len(order) {
		t := time.NewTimer(d)
		defer t.Stop()
		speculate = t.C
	}
	failed := 0
	var lastErr error
	pending := func() lateReads { return lateReads{results: results, remaining: sent - len(answers) - failed} }
	for len(answers) < need {
		select {
		case r := <-results:
			if !r.digest {
				dataPending--
			}
			if r.err == nil {
				answers = append(answers, r)
				continue
			}
			failed++
			lastErr = r.err
			if sent < len(order) {
				send(dataPending > 0 || hasData(answers))
				continue
			}
			if sent-failed < need {
				n.drainReads(pending(), answers)
				return nil, lateReads{}, errorf(ErrUnavailable, "consistency %v needs %d answers, %d replicas answered, %d failed (last: %v)",
					c, need, len(answers), failed, lastErr)
			}
		case <-speculate:
			speculate = nil
			if sent < len(order) {
				n.m.speculativeReads.Inc()
				send(dataPending > 0 || hasData(answers))
			}
		case <-ctx.Done():
			n.drainReads(pending(), answers)
			if errors.Is(ctx.Err(), context.Canceled) {
				return nil, lateReads{}, ctx.Err()
			}
			return nil, lateReads{}, errorf(ErrTimeout, "consistency %v needs %d answers, %d arrived before the deadline", c, need, len(answers))
		}
	}
	return answers, pending(), nil
}

// lateReads are the answers still to come of a read that has enough.
type lateReads struct {
	results   <-chan readResult
	remaining int
}

// hasData reports whether an answer carries a value (or needs none).
func hasData(answers []readResult) bool {
	return slices.ContainsFunc(answers, readResult.complete)
}

// repairReads writes best to every answer older than it and fails unless
// best is then on need replicas.
func (n *Node) repairReads(ctx context.Context, c Consistency, answers []readResult, best *kvv1.Mutation, need int) error {
	confirmed := 0
	var stale []ring.NodeID
	for _, a := range answers {
		if version(a.m) == best.Version {
			confirmed++
		} else {
			stale = append(stale, a.id)
		}
	}
	if len(stale) == 0 {
		return nil
	}
	errs := make(chan error, len(stale))
	for _, id := range stale {
		n.m.repairs.WithLabelValues("blocking").Inc()
		go func() { errs <- n.applyTo(ctx, id, best) }()
	}
	var lastErr error
	for range stale {
		if err := <-errs; err == nil {
			confirmed++
		} else {
			lastErr = err
		}
	}
	if confirmed < need {
		return errorf(ErrUnavailable, "consistency %v: read repair reached %d of %d needed replicas (last: %v)", c, confirmed, need, lastErr)
	}
	return nil
}

// drainReads waits, in the background, for the remaining answers of a
// read that has returned (late or speculative ones) and repairs those older
// than the newest value seen among all answers. A digest newer than every
// value is left alone: the write that made it is hinted or repaired by
// anti-entropy.
func (n *Node) drainReads(late lateReads, answers []readResult) {
	if late.remaining == 0 {
		return
	}
	answers = slices.Clone(answers) // the caller's to change once this returns
	n.bg.Add(1)
	go func() {
		defer n.bg.Done()
		var arrived []readResult
		for range late.remaining {
			if r := <-late.results; r.err == nil {
				arrived = append(arrived, r)
			}
		}
		var best *kvv1.Mutation
		for _, a := range slices.Concat(answers, arrived) {
			if a.complete() && version(a.m) > version(best) {
				best = a.m
			}
		}
		if best == nil {
			return
		}
		for _, a := range arrived {
			if version(a.m) < best.Version {
				n.m.repairs.WithLabelValues("background").Inc()
				ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ReplicaTimeout)
				if err := n.applyTo(ctx, a.id, best); err != nil {
					n.log.Debug("background read repair failed", "replica", a.id, "err", err)
				}
				cancel()
			}
		}
	}()
}
