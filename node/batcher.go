package node

import (
	"context"
	"fmt"
	"sync"

	kvv1 "github.com/tierkv/tierkv/api/kv/v1"
	"github.com/tierkv/tierkv/ring"
)

// Replica write coalescing. A coordinator sends a write to a remote replica
// at once while fewer than maxApplyInFlight calls to it are in flight;
// writes that arrive meanwhile queue, and when a call returns the queue goes
// out as one ApplyBatch (one RPC, one engine batch, one WAL record on the
// replica). Under load this trades per-call costs (HTTP/2 frames, headers,
// goroutines, WAL wake-ups) for a batch; an idle coordinator sends each write
// alone, with its caller's context and trace, as before.

const (
	// maxApplyInFlight bounds the calls in flight to one replica.
	maxApplyInFlight = 2
	// maxApplyBatch and maxApplyBatchBytes bound one ApplyBatch (a batch
	// holds at least one mutation; the message bound is key and value
	// bounds plus 4 MiB).
	maxApplyBatch      = 128
	maxApplyBatchBytes = 2 << 20
)

type applyReq struct {
	m    *kvv1.Mutation
	done chan error // buffered: the sender never blocks
}

// peerBatcher queues the writes to one replica.
type peerBatcher struct {
	n  *Node
	id ring.NodeID

	mu       sync.Mutex
	queue    []*applyReq
	inflight int
}

// batcher returns the batcher of replica id.
func (n *Node) batcher(id ring.NodeID) *peerBatcher {
	n.batchers.Lock()
	defer n.batchers.Unlock()
	if n.batchers.m == nil {
		n.batchers.m = map[ring.NodeID]*peerBatcher{}
	}
	b, ok := n.batchers.m[id]
	if !ok {
		b = &peerBatcher{n: n, id: id}
		n.batchers.m[id] = b
	}
	return b
}

// apply sends m to the replica and waits for its acknowledgement (or ctx).
func (b *peerBatcher) apply(ctx context.Context, m *kvv1.Mutation) error {
	b.mu.Lock()
	if b.inflight < maxApplyInFlight && len(b.queue) == 0 {
		b.inflight++
		b.mu.Unlock()
		err := b.n.applyRemote(ctx, b.id, m)
		b.next()
		return err
	}
	r := &applyReq{m: m, done: make(chan error, 1)}
	b.queue = append(b.queue, r)
	b.mu.Unlock()
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		// The batch may still land; the caller counts this replica as
		// failed (and hints it), which is safe: replays are idempotent.
		return fmt.Errorf("replica %s: %w", b.id, errorf(ErrTimeout, "%v", ctx.Err()))
	}
}

// next is called when a call returns: it sends the queue as one batch,
// keeping the slot, or frees the slot.
func (b *peerBatcher) next() {
	b.mu.Lock()
	if len(b.queue) == 0 {
		b.inflight--
		b.mu.Unlock()
		return
	}
	k, size := 0, 0
	for k < len(b.queue) && k < maxApplyBatch && (k == 0 || size < maxApplyBatchBytes) {
		size += len(b.queue[k].m.Key) + len(b.queue[k].m.Value)
		k++
	}
	batch := b.queue[:k:k]
	b.queue = b.queue[k:]
	b.mu.Unlock()
	b.n.bg.Add(1)
	go func() {
		defer b.n.bg.Done()
		b.sendBatch(batch)
		b.next()
	}()
}

func (b *peerBatcher) sendBatch(batch []*applyReq) {
	ctx, cancel := context.WithTimeout(context.Background(), b.n.cfg.ReplicaTimeout)
	defer cancel()
	ms := make([]*kvv1.Mutation, len(batch))
	for i, r := range batch {
		ms[i] = r.m
	}
	var err error
	if len(ms) == 1 {
		err = b.n.applyRemote(ctx, b.id, ms[0])
	} else {
		err = b.n.applyRemoteBatch(ctx, b.id, ms)
		if k := errorKind(err); k == ErrInvalidArgument || k == ErrTooLarge {
			// One bad mutation must not fail the others: each alone.
			for _, r := range batch {
				r.done <- b.n.applyRemote(ctx, b.id, r.m)
			}
			return
		}
	}
	for _, r := range batch {
		r.done <- err
	}
}

// applyRemote sends one mutation to replica id.
func (n *Node) applyRemote(ctx context.Context, id ring.NodeID, m *kvv1.Mutation) error {
	n.m.singleCalls.Inc()
	rc, err := n.peer(id)
	if err != nil {
		return err
	}
	if _, err := rc.Apply(ctx, &kvv1.ApplyRequest{Mutation: m}); err != nil {
		return fmt.Errorf("replica %s: %w", id, fromStatus(err))
	}
	return nil
}

// applyRemoteBatch sends mutations to replica id in one call.
func (n *Node) applyRemoteBatch(ctx context.Context, id ring.NodeID, ms []*kvv1.Mutation) error {
	n.m.batchCalls.Inc()
	n.m.batched.Add(float64(len(ms)))
	rc, err := n.peer(id)
	if err != nil {
		return err
	}
	if _, err := rc.ApplyBatch(ctx, &kvv1.ApplyBatchRequest{Mutations: ms}); err != nil {
		return fmt.Errorf("replica %s: %w", id, fromStatus(err))
	}
	return nil
}
