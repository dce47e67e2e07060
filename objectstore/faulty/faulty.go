// Package faulty is an objectstore.Bucket decorator for tests: it injects
// latency and errors by operation and name, loses and corrupts objects, and
// counts calls per operation (e.g. to check that a lookup of an absent key
// makes no GET).
//
//	fb := faulty.New(objectstore.NewMemBucket(), faulty.Options{})
//	remove := fb.Inject(faulty.Fault{Ops: []faulty.Op{faulty.OpGet}, Err: faulty.ErrTransient, Count: 2})
//	fb.Lose("tables/1.sst")    // reads now fail with objectstore.ErrNotExist
//	fb.Corrupt("tables/2.sst") // reads now return flipped bytes
//	n := fb.Calls(faulty.OpGet)
package faulty

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tierkv/tierkv/objectstore"
)

// Op is a Bucket operation.
type Op uint8

// The operations.
const (
	OpPut Op = iota
	OpGet
	OpGetRange
	OpAttributes
	OpList
	OpDelete
	numOps
)

func (o Op) String() string {
	if o < numOps {
		return [...]string{"put", "get", "getrange", "attributes", "list", "delete"}[o]
	}
	return fmt.Sprintf("Op(%d)", o)
}

// ErrInjected is a permanent injected error.
var ErrInjected = errors.New("objectstore/faulty: injected error")

// ErrTransient is a transient injected error (objectstore.IsTransient is
// true).
var ErrTransient = objectstore.MarkTransient(errors.New("objectstore/faulty: injected transient error"))

// Fault describes what to inject into matching calls.
type Fault struct {
	// Ops are the operations affected; empty means all.
	Ops []Op
	// Match selects the names affected (the prefix, for List); nil means
	// all.
	Match func(name string) bool
	// Latency is waited, with Options.Sleep, before the call.
	Latency time.Duration
	// Err, if set, is returned instead of calling the wrapped bucket.
	Err error
	// Count limits the fault to the first Count matching calls; 0 means
	// every call.
	Count int
}

// Options configures New.
type Options struct {
	// Sleep waits d or until ctx is done. Default: a timer. Tests inject
	// one that does not sleep.
	Sleep func(ctx context.Context, d time.Duration) error
}

type fault struct {
	Fault
	used int
}

// Bucket wraps another Bucket. Create it with New.
type Bucket struct {
	inner objectstore.Bucket
	opts  Options
	calls [numOps]atomic.Int64
	mu    struct {
		sync.Mutex
		// faults are applied in the order injected; lost and corrupt hold
		// the names Lose and Corrupt affect.
		faults  []*fault
		lost    map[string]bool
		corrupt map[string]bool
	}
}

var _ objectstore.Bucket = (*Bucket)(nil)

// New wraps inner. Close closes inner.
func New(inner objectstore.Bucket, opts Options) *Bucket {
	if opts.Sleep == nil {
		opts.Sleep = func(ctx context.Context, d time.Duration) error {
			t := time.NewTimer(d)
			defer t.Stop()
			select {
			case <-t.C:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	b := &Bucket{inner: inner, opts: opts}
	b.mu.lost = map[string]bool{}
	b.mu.corrupt = map[string]bool{}
	return b
}

// Inject adds a fault and returns a func that removes it.
func (b *Bucket) Inject(f Fault) (remove func()) {
	ff := &fault{Fault: f}
	b.mu.Lock()
	b.mu.faults = append(b.mu.faults, ff)
	b.mu.Unlock()
	return func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		b.mu.faults = slices.DeleteFunc(b.mu.faults, func(x *fault) bool { return x == ff })
	}
}

// Lose makes the object look deleted to readers (Get, GetRange,
// Attributes, List) until it is Put again or Restored.
func (b *Bucket) Lose(name string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.mu.lost[name] = true
}

// Corrupt makes reads of the object return corrupted bytes (one byte
// flipped in the middle of what is read) until it is Put again or Restored.
func (b *Bucket) Corrupt(name string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.mu.corrupt[name] = true
}

// Restore undoes Lose and Corrupt for name.
func (b *Bucket) Restore(name string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.mu.lost, name)
	delete(b.mu.corrupt, name)
}

// Calls returns how many calls of op were made, faulty or not.
func (b *Bucket) Calls(op Op) int64 { return b.calls[op].Load() }

// ResetCalls sets the call counters to zero.
func (b *Bucket) ResetCalls() {
	for i := range b.calls {
		b.calls[i].Store(0)
	}
}

// before counts the call and applies the faults that match it.
func (b *Bucket) before(ctx context.Context, op Op, name string) error {
	b.calls[op].Add(1)
	var latency time.Duration
	var err error
	b.mu.Lock()
	for _, f := range b.mu.faults {
		if len(f.Ops) > 0 && !slices.Contains(f.Ops, op) {
			continue
		}
		if f.Match != nil && !f.Match(name) {
			continue
		}
		if f.Count > 0 {
			if f.used >= f.Count {
				continue
			}
			f.used++
		}
		latency += f.Latency
		if err == nil && f.Err != nil {
			err = fmt.Errorf("objectstore/faulty: %s %s: %w", op, name, f.Err)
		}
	}
	b.mu.Unlock()
	if latency > 0 {
		if serr := b.opts.Sleep(ctx, latency); serr != nil {
			return fmt.Errorf("objectstore/faulty: %s %s: %w", op, name, serr)
		}
	}
	return err
}

func (b *Bucket) state(name string) (lost, corrupt bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.mu.lost[name], b.mu.corrupt[name]
}

// Put is part of the objectstore.Bucket interface.
func (b *Bucket) Put(ctx context.Context, name string, r io.Reader, size int64) error {
	if err := b.before(ctx, OpPut, name); err != nil {
		return err
	}
	err := b.inner.Put(ctx, name, r, size)
	if err == nil {
		b.Restore(name)
	}
	return err
}

// read applies Lose and Corrupt to a read.
func (b *Bucket) read(op Op, name string, open func() (io.ReadCloser, error)) (io.ReadCloser, error) {
	lost, corrupt := b.state(name)
	if lost {
		return nil, fmt.Errorf("objectstore/faulty: %s %s: lost: %w", op, name, objectstore.ErrNotExist)
	}
	rc, err := open()
	if err != nil || !corrupt {
		return rc, err
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		return nil, err
	}
	if len(data) == 0 {
		data = []byte{0xff}
	} else {
		data[len(data)/2] ^= 0xff
	}
	return io.NopCloser(bytes.NewReader(data)), nil
}

// Get is part of the objectstore.Bucket interface.
func (b *Bucket) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	if err := b.before(ctx, OpGet, name); err != nil {
		return nil, err
	}
	return b.read(OpGet, name, func() (io.ReadCloser, error) { return b.inner.Get(ctx, name) })
}

// GetRange is part of the objectstore.Bucket interface.
func (b *Bucket) GetRange(ctx context.Context, name string, off, length int64) (io.ReadCloser, error) {
	if err := b.before(ctx, OpGetRange, name); err != nil {
		return nil, err
	}
	return b.read(OpGetRange, name, func() (io.ReadCloser, error) { return b.inner.GetRange(ctx, name, off, length) })
}

// Attributes is part of the objectstore.Bucket interface.
func (b *Bucket) Attributes(ctx context.Context, name string) (objectstore.Attributes, error) {
	if err := b.before(ctx, OpAttributes, name); err != nil {
		return objectstore.Attributes{}, err
	}
	if lost, _ := b.state(name); lost {
		return objectstore.Attributes{}, fmt.Errorf("objectstore/faulty: attributes %s: lost: %w", name, objectstore.ErrNotExist)
	}
	return b.inner.Attributes(ctx, name)
}

// List is part of the objectstore.Bucket interface. Lost objects are not
// listed (a page may then be shorter than limit).
func (b *Bucket) List(ctx context.Context, prefix, startAfter string, limit int) ([]string, string, error) {
	if err := b.before(ctx, OpList, prefix); err != nil {
		return nil, "", err
	}
	names, next, err := b.inner.List(ctx, prefix, startAfter, limit)
	if err != nil {
		return nil, "", err
	}
	b.mu.Lock()
	names = slices.DeleteFunc(names, func(n string) bool { return b.mu.lost[n] })
	b.mu.Unlock()
	return names, next, nil
}

// Delete is part of the objectstore.Bucket interface.
func (b *Bucket) Delete(ctx context.Context, name string) error {
	if err := b.before(ctx, OpDelete, name); err != nil {
		return err
	}
	err := b.inner.Delete(ctx, name)
	if err == nil {
		b.Restore(name)
	}
	return err
}

// Close is part of the objectstore.Bucket interface. It closes the wrapped
// bucket.
func (b *Bucket) Close() error { return b.inner.Close() }
