package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	kvv1 "github.com/tierkv/tierkv/api/kv/v1"
	"github.com/tierkv/tierkv/lsm"
	"github.com/tierkv/tierkv/ring"
)

// hintStore keeps mutations for replicas that were down or did not answer,
// durably, in a small engine of its own under <data_dir>/hints.
//
// A hint's engine key is
//
//	target id | 0x00 | mutation version (16 hex digits) | user key
//
// (the version in hex because the engine accepts only UTF-8 keys), so one target's hints are contiguous and ordered by version; its value is
// a flags byte (bit 0: tombstone) followed by the user value. The engine
// version of a hint is the mutation's version, and a delivered or dropped
// hint is deleted with version+1. Part of the on-disk format; do not change.
type hintStore struct {
	db       *lsm.DB
	clock    lsm.Clock
	window   time.Duration
	maxBytes int64
	log      *slog.Logger

	bytes     atomic.Int64
	pending   atomic.Int64
	delivered atomic.Uint64
	dropped   atomic.Uint64

	mu struct {
		sync.Mutex
		// byTarget counts pending hints per target.
		byTarget map[ring.NodeID]int
		// replaying marks targets whose hints are being replayed, so
		// that two replays of one target never run at once.
		replaying map[ring.NodeID]bool
	}
}

const (
	hintTombstone  = 1
	hintVersionLen = 16
)

func openHintStore(dir string, cfg *Config) (*hintStore, error) {
	db, err := lsm.Open(dir, &lsm.Options{
		Logger:       cfg.Logger,
		Clock:        cfg.Clock,
		VersionTime:  VersionTime,
		MaxKeySize:   cfg.MaxKeySize + 128,
		MaxValueSize: cfg.MaxValueSize + 1,
		MemTableSize: 4 << 20,
		// Delivered hints are deleted; their tombstones need no grace
		// period since no replica repairs a hint store.
		TombstoneGracePeriod: time.Minute,
	})
	if err != nil {
		return nil, fmt.Errorf("node: open hint store: %w", err)
	}
	h := &hintStore{db: db, clock: cfg.Clock, window: cfg.HintWindow, maxBytes: cfg.HintMaxBytes, log: cfg.Logger}
	h.mu.byTarget = make(map[ring.NodeID]int)
	h.mu.replaying = make(map[ring.NodeID]bool)
	it, err := db.NewIter(&lsm.IterOptions{})
	if err != nil {
		db.Close()
		return nil, err
	}
	for ok := it.First(); ok; ok = it.Next() {
		target, _, ok := bytes.Cut(it.Key(), []byte{0})
		if !ok {
			continue
		}
		h.mu.byTarget[ring.NodeID(target)]++
		h.pending.Add(1)
		h.bytes.Add(int64(len(it.Key()) + len(it.Value())))
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		db.Close()
		return nil, fmt.Errorf("node: scan hint store: %w", err)
	}
	return h, nil
}

func hintKey(target ring.NodeID, m *kvv1.Mutation) []byte {
	k := make([]byte, 0, len(target)+1+hintVersionLen+len(m.Key))
	k = append(k, target...)
	k = append(k, 0)
	k = fmt.Appendf(k, "%016x", m.Version)
	return append(k, m.Key...)
}

// decodeHint decodes a hint of target stored under k with value v. The
// returned mutation aliases k and v.
func decodeHint(target ring.NodeID, k, v []byte) (*kvv1.Mutation, error) {
	prefix := len(target) + 1
	if len(k) < prefix+hintVersionLen+1 || string(k[:len(target)]) != string(target) || k[len(target)] != 0 || len(v) < 1 {
		return nil, fmt.Errorf("node: malformed hint %q", k)
	}
	ver, err := strconv.ParseUint(string(k[prefix:prefix+hintVersionLen]), 16, 64)
	if err != nil || ver == 0 {
		return nil, fmt.Errorf("node: malformed hint version in %q", k)
	}
	return &kvv1.Mutation{
		Key:       k[prefix+hintVersionLen:],
		Version:   ver,
		Tombstone: v[0]&hintTombstone != 0,
		Value:     v[1:],
	}, nil
}

func (h *hintStore) expired(version uint64) bool {
	return h.clock.Now().Sub(VersionTime(version)) > h.window
}

// add stores a hint for target. It drops the hint (and counts it) when the
// store is over its bound or the mutation is older than the window.
func (h *hintStore) add(target ring.NodeID, m *kvv1.Mutation) {
	k := hintKey(target, m)
	v := make([]byte, 1, 1+len(m.Value))
	if m.Tombstone {
		v[0] = hintTombstone
	}
	v = append(v, m.Value...)
	size := int64(len(k) + len(v))
	if h.expired(m.Version) || h.bytes.Load()+size > h.maxBytes {
		h.dropped.Add(1)
		return
	}
	if err := h.db.Set(k, v, m.Version, lsm.Sync); err != nil {
		h.dropped.Add(1)
		h.log.Warn("hint not stored", "target", target, "err", err)
		return
	}
	h.bytes.Add(size)
	h.pending.Add(1)
	h.mu.Lock()
	h.mu.byTarget[target]++
	h.mu.Unlock()
}

// targets returns the targets with pending hints.
func (h *hintStore) targets() []ring.NodeID {
	h.mu.Lock()
	defer h.mu.Unlock()
	var ts []ring.NodeID
	for t, n := range h.mu.byTarget {
		if n > 0 && !h.mu.replaying[t] {
			ts = append(ts, t)
		}
	}
	return ts
}

func (h *hintStore) remove(target ring.NodeID, k, v []byte, version uint64) error {
	if err := h.db.Delete(k, version+1, lsm.Sync); err != nil {
		return err
	}
	h.bytes.Add(-int64(len(k) + len(v)))
	h.pending.Add(-1)
	h.mu.Lock()
	h.mu.byTarget[target]--
	h.mu.Unlock()
	return nil
}

// replay sends target's hints, oldest first, with send; it deletes each
// delivered or expired hint and stops at the first failure.
func (h *hintStore) replay(ctx context.Context, target ring.NodeID, send func(context.Context, *kvv1.Mutation) error) error {
	h.mu.Lock()
	if h.mu.replaying[target] {
		h.mu.Unlock()
		return nil
	}
	h.mu.replaying[target] = true
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.mu.replaying, target)
		h.mu.Unlock()
	}()
	lo := append([]byte(target), 0)
	hi := append([]byte(target), 1)
	type hint struct {
		k, v []byte
		m    *kvv1.Mutation
	}
	for {
		var batch []hint
		it, err := h.db.NewIter(&lsm.IterOptions{LowerBound: lo, UpperBound: hi})
		if err != nil {
			return err
		}
		for ok := it.First(); ok && len(batch) < 128; ok = it.Next() {
			k, v := bytes.Clone(it.Key()), bytes.Clone(it.Value())
			m, err := decodeHint(target, k, v)
			if err != nil {
				h.log.Error("skipping undecodable hint", "target", target, "err", err)
				continue
			}
			batch = append(batch, hint{k, v, m})
		}
		if err := errors.Join(it.Error(), it.Close()); err != nil {
			return err
		}
		if len(batch) == 0 {
			return nil
		}
		for _, x := range batch {
			if h.expired(x.m.Version) {
				h.dropped.Add(1)
			} else if err := send(ctx, x.m); err != nil {
				return err
			} else {
				h.delivered.Add(1)
			}
			if err := h.remove(target, x.k, x.v, x.m.Version); err != nil {
				return err
			}
		}
	}
}

func (h *hintStore) close() error { return h.db.Close() }
