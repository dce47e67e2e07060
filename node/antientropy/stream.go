package antientropy

import (
	"bytes"
	"context"
	"fmt"

	"github.com/tierkv/tierkv/lsm"
	"github.com/tierkv/tierkv/ring"
)

// Stream sends every entry of the engine (the newest version of each key,
// tombstones included) whose token falls in one of ranges, in key order,
// starting after startAfter (nil: from the first key), leaving out entries
// whose version is below minVersion, in batches of at most
// Options.MaxBatchKeys entries and about Options.MaxBatchBytes (a batch holds
// at least one entry). Join, decommission and replace copy whole ranges with
// it; a receiver that lost the stream resumes it from the last key it
// applied. The entries passed to send belong to send. Streamed bytes take
// tokens from Options.Limiter. Ranges must be disjoint (ErrInvalidRanges).
func (l *Local) Stream(ctx context.Context, ranges []ring.Range, startAfter []byte, minVersion uint64, send func([]lsm.Entry) error) error {
	if err := validateRanges(ranges); err != nil {
		return err
	}
	idx := newRangeIndex(ranges)
	// MinVersion: tables older than it are not read at all.
	it, err := l.db.NewIter(&lsm.IterOptions{IncludeTombstones: true, MinVersion: minVersion})
	if err != nil {
		return fmt.Errorf("antientropy: stream: %w", err)
	}
	defer it.Close()
	var batch []lsm.Entry
	size := 0
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := waitN(ctx, l.opts.Limiter, l.opts.Clock, size); err != nil {
			return err
		}
		err := send(batch)
		batch, size = nil, 0
		return err
	}
	var ok bool
	if startAfter == nil {
		ok = it.First()
	} else {
		ok = it.SeekGE(startAfter)
		if ok && bytes.Equal(it.Key(), startAfter) {
			ok = it.Next()
		}
	}
	n := 0
	for ; ok; ok = it.Next() {
		if n++; n%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if idx.find(ring.KeyToken(it.Key())) < 0 {
			continue
		}
		e := lsm.Entry{Key: bytes.Clone(it.Key()), Version: it.Version(), Deleted: it.Deleted()}
		if !e.Deleted {
			e.Value = bytes.Clone(it.Value())
			if e.Value == nil {
				e.Value = []byte{}
			}
		}
		batch = append(batch, e)
		size += EntrySize(e)
		if len(batch) >= l.opts.MaxBatchKeys || size >= l.opts.MaxBatchBytes {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := it.Error(); err != nil {
		return fmt.Errorf("antientropy: stream: %w", err)
	}
	return flush()
}

// ApplyStream writes streamed entries to the engine durably (lsm.Sync),
// keeping the highest version of each key. Unlike Push it does not apply
// the grace rule: a stream copies a whole range from a replica onto a node
// taking it over, which must receive everything, old values included
// (doc.go, "Grace period").
func (l *Local) ApplyStream(ctx context.Context, entries []lsm.Entry) error {
	var b lsm.Batch
	for _, e := range entries {
		if e.Deleted {
			b.Delete(e.Key, e.Version)
		} else {
			b.Set(e.Key, e.Value, e.Version)
		}
	}
	if b.Len() == 0 {
		return ctx.Err()
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := l.db.Apply(&b, lsm.Sync); err != nil {
		return fmt.Errorf("antientropy: apply stream: %w", err)
	}
	return nil
}
