// Package erasure is an objectstore.Bucket that stores each object as
// Reed-Solomon RS(k, m) shards over k+m other Buckets: shard i of every
// object is the object of the same name in bucket i. Any k shards rebuild
// the object, so up to m buckets may lose, corrupt or fail to serve it.
//
// Each shard carries a header with a format version, the geometry, the
// object's size and CRC32C and the shard payload's CRC32C (see header.go for
// the layout); a shard that is missing, unreadable, fails a check or belongs
// to another upload of the same name is "bad". Get reads the k data shards,
// and only when one is bad also the m parity shards; it reconstructs the
// object if at most m shards are bad and reports which were bad through
// Options.OnReconstruct. With more than m bad shards it fails with a
// *ShardsError (errors.Is ErrTooManyBadShards) naming the object and every
// bad shard.
//
// Put and Get hold the whole object (and the parity, m/k more) in memory;
// Options.MaxObjectSize bounds it. GetRange reads the whole object and then
// slices it: the payload CRCs cover whole shards.
//
// Put writes all k+m shards and fails if any fails. Overwrites of one name
// are serialized within a Bucket; readers see the old or the new object. A
// Put that fails part-way may leave fewer than k shards of either upload
// (the name then reads as ErrTooManyBadShards until it is written again or
// deleted); tierkv's objects are immutable, so it never overwrites. Two
// processes writing the same name at once are not supported.
package erasure

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"hash/maphash"
	"io"
	"slices"
	"strings"
	"sync"

	"github.com/klauspost/reedsolomon"

	"github.com/tierkv/tierkv/objectstore"
)

// ErrTooManyBadShards is matched (errors.Is) by a *ShardsError: more than m
// shards of an object are bad, so it cannot be rebuilt.
var ErrTooManyBadShards = errors.New("objectstore/erasure: too many bad shards")

// ErrObjectTooLarge is returned (wrapped) by Put for an object larger than
// Options.MaxObjectSize.
var ErrObjectTooLarge = errors.New("objectstore/erasure: object too large")

// ShardError is a bad shard: its index (and so its bucket) and why.
type ShardError struct {
	Index int
	Err   error
}

func (e ShardError) String() string { return fmt.Sprintf("shard %d: %v", e.Index, e.Err) }

// ShardsError reports the bad shards of an object that could not be read
// or written.
type ShardsError struct {
	Op, Name string
	// K and M are the geometry.
	K, M int
	// Bad lists the bad shards in index order.
	Bad []ShardError
}

func (e *ShardsError) Error() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "objectstore/erasure: %s %s: %d of %d shards bad (at most %d tolerated):", e.Op, e.Name, len(e.Bad), e.K+e.M, e.M)
	for i, b := range e.Bad {
		if i > 0 {
			sb.WriteString(";")
		}
		sb.WriteString(" ")
		sb.WriteString(b.String())
	}
	return sb.String()
}

// Is makes errors.Is(err, ErrTooManyBadShards) true for a read (get or
// attributes) error.
func (e *ShardsError) Is(target error) bool {
	return target == ErrTooManyBadShards && (e.Op == "get" || e.Op == "attributes")
}

// BadIndexes returns the indexes of the bad shards.
func (e *ShardsError) BadIndexes() []int {
	idx := make([]int, len(e.Bad))
	for i, b := range e.Bad {
		idx[i] = b.Index
	}
	return idx
}

// Options configures New.
type Options struct {
	// DataShards is k, the number of data shards. Required, 1..255.
	DataShards int
	// ParityShards is m, the number of parity shards. Required, 1..255,
	// with k+m <= 256.
	ParityShards int
	// MaxObjectSize bounds the size of an object (held in memory by Put and
	// Get). Default 256 MiB.
	MaxObjectSize int64
	// OnReconstruct, if set, is called when a Get succeeded although some
	// shards were bad, with those shards. tierkv uses it to count and
	// repair. It must not block for long.
	OnReconstruct func(name string, bad []ShardError)
}

// EnsureDefaults fills in zero fields with their defaults.
func (o *Options) EnsureDefaults() {
	if o.MaxObjectSize <= 0 {
		o.MaxObjectSize = 256 << 20 // bounds memory per call (invariant 7)
	}
}

// Validate checks the geometry against the number of buckets.
func (o *Options) Validate(buckets int) error {
	switch {
	case o.DataShards < 1 || o.ParityShards < 1 || o.DataShards+o.ParityShards > 256:
		return fmt.Errorf("objectstore/erasure: RS(%d, %d) needs k >= 1, m >= 1, k+m <= 256", o.DataShards, o.ParityShards)
	case buckets != o.DataShards+o.ParityShards:
		return fmt.Errorf("objectstore/erasure: RS(%d, %d) needs %d buckets, got %d", o.DataShards, o.ParityShards, o.DataShards+o.ParityShards, buckets)
	}
	return nil
}

// Bucket is an erasure-coded objectstore.Bucket. Create it with New.
type Bucket struct {
	buckets []objectstore.Bucket
	k, m    int
	opts    Options
	enc     reedsolomon.Encoder
	seed    maphash.Seed
	// locks serialize Puts of one name against each other and against Gets
	// (striped by a hash of the name: bounded memory).
	locks [64]sync.RWMutex
}

var _ objectstore.Bucket = (*Bucket)(nil)

// New returns a Bucket over buckets (shard i in buckets[i]). It takes
// ownership of them: Close closes them.
func New(buckets []objectstore.Bucket, opts Options) (*Bucket, error) {
	opts.EnsureDefaults()
	if err := opts.Validate(len(buckets)); err != nil {
		return nil, err
	}
	enc, err := reedsolomon.New(opts.DataShards, opts.ParityShards)
	if err != nil {
		return nil, fmt.Errorf("objectstore/erasure: %w", err)
	}
	return &Bucket{
		buckets: slices.Clone(buckets),
		k:       opts.DataShards, m: opts.ParityShards,
		opts: opts, enc: enc, seed: maphash.MakeSeed(),
	}, nil
}

func (b *Bucket) lock(name string) *sync.RWMutex {
	return &b.locks[maphash.String(b.seed, name)%uint64(len(b.locks))]
}

func opError(op, name string, err error) error {
	return fmt.Errorf("objectstore/erasure: %s %s: %w", op, name, err)
}

// Put is part of the objectstore.Bucket interface.
func (b *Bucket) Put(ctx context.Context, name string, r io.Reader, size int64) error {
	if err := objectstore.ValidateName(name); err != nil {
		return opError("put", name, err)
	}
	if size > b.opts.MaxObjectSize {
		return opError("put", name, fmt.Errorf("%w: %d bytes, limit %d", ErrObjectTooLarge, size, b.opts.MaxObjectSize))
	}
	var buf bytes.Buffer
	if size > 0 {
		buf.Grow(int(size))
	}
	lr := io.LimitReader(objectstore.SizedReader(objectstore.ContextReader(ctx, r), size), b.opts.MaxObjectSize+1)
	if _, err := buf.ReadFrom(lr); err != nil {
		return opError("put", name, err)
	}
	if int64(buf.Len()) > b.opts.MaxObjectSize {
		return opError("put", name, fmt.Errorf("%w: more than %d bytes", ErrObjectTooLarge, b.opts.MaxObjectSize))
	}
	data := buf.Bytes()
	shards, err := b.encode(data)
	if err != nil {
		return opError("put", name, err)
	}
	if err := ctx.Err(); err != nil {
		return opError("put", name, err)
	}
	l := b.lock(name)
	l.Lock()
	defer l.Unlock()
	errs := make([]error, len(shards))
	var wg sync.WaitGroup
	for i, s := range shards {
		wg.Go(func() {
			errs[i] = b.buckets[i].Put(ctx, name, bytes.NewReader(s), int64(len(s)))
		})
	}
	wg.Wait()
	var bad []ShardError
	for i, err := range errs {
		if err != nil {
			bad = append(bad, ShardError{i, err})
		}
	}
	if len(bad) > 0 {
		err := error(&ShardsError{Op: "put", Name: name, K: b.k, M: b.m, Bad: bad})
		if ctx.Err() != nil {
			err = fmt.Errorf("%w: %w", ctx.Err(), err)
		}
		return err
	}
	return nil
}

// encode returns the k+m shard objects (header + payload) of data.
func (b *Bucket) encode(data []byte) ([][]byte, error) {
	var idb [8]byte
	if _, err := rand.Read(idb[:]); err != nil {
		return nil, err
	}
	h := header{
		k: uint8(b.k), m: uint8(b.m),
		objectSize: uint64(len(data)),
		objectID:   binary.LittleEndian.Uint64(idb[:]),
		objectCRC:  crc32.Checksum(data, castagnoli),
	}
	n := b.k + b.m
	payloads := make([][]byte, n)
	if len(data) > 0 {
		var err error
		// NB: Split may use data's spare capacity for padding; it does
		// not modify data[:len(data)].
		if payloads, err = b.enc.Split(data); err != nil {
			return nil, err
		}
		if err := b.enc.Encode(payloads); err != nil {
			return nil, err
		}
	}
	shards := make([][]byte, n)
	for i := range n {
		h.index = uint8(i)
		h.payloadCRC = crc32.Checksum(payloads[i], castagnoli)
		hdr := h.encode()
		shards[i] = append(hdr[:], payloads[i]...)
	}
	return shards, nil
}

type shardResult struct {
	h       header
	payload []byte
	err     error
}

func (b *Bucket) readShard(ctx context.Context, i int, name string) shardResult {
	p, err := objectstore.ReadAll(ctx, b.buckets[i], name)
	if err != nil {
		return shardResult{err: err}
	}
	h, payload, err := decodeShard(p)
	if err == nil && (int(h.k) != b.k || int(h.m) != b.m || int(h.index) != i) {
		err = fmt.Errorf("%w: header says shard %d of RS(%d, %d), expected shard %d of RS(%d, %d)", ErrCorruptShard, h.index, h.k, h.m, i, b.k, b.m)
	}
	if err != nil {
		return shardResult{err: err}
	}
	return shardResult{h: h, payload: payload}
}

// load reads and, if needed, reconstructs the object.
func (b *Bucket) load(ctx context.Context, name string) ([]byte, header, error) {
	if err := objectstore.ValidateName(name); err != nil {
		return nil, header{}, opError("get", name, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, header{}, opError("get", name, err)
	}
	l := b.lock(name)
	l.RLock()
	defer l.RUnlock()
	n := b.k + b.m
	res := make([]shardResult, n)
	fetch := func(from, to int) {
		var wg sync.WaitGroup
		for i := from; i < to; i++ {
			wg.Go(func() { res[i] = b.readShard(ctx, i, name) })
		}
		wg.Wait()
	}
	fetch(0, b.k)
	fetched := b.k
	id, ok := b.pick(res[:b.k])
	if !ok || b.goodCount(res[:b.k], id) < b.k {
		fetch(b.k, n)
		fetched = n
		id, _ = b.pick(res)
	}
	if err := ctx.Err(); err != nil {
		return nil, header{}, opError("get", name, err)
	}
	var bad []ShardError
	missing := 0
	var h header
	shards := make([][]byte, n)
	for i := range fetched {
		r := res[i]
		switch {
		case r.err != nil:
			bad = append(bad, ShardError{i, r.err})
			if errors.Is(r.err, objectstore.ErrNotExist) {
				missing++
			}
		case r.h.objectID != id:
			bad = append(bad, ShardError{i, fmt.Errorf("%w: stale shard of another upload (id %016x, not %016x)", ErrCorruptShard, r.h.objectID, id)})
		default:
			shards[i] = r.payload
			h = r.h
		}
	}
	if missing == n {
		return nil, header{}, opError("get", name, objectstore.ErrNotExist)
	}
	if len(bad) > b.m {
		return nil, header{}, &ShardsError{Op: "get", Name: name, K: b.k, M: b.m, Bad: bad}
	}
	if h.objectSize == 0 {
		b.report(name, bad)
		return nil, h, nil
	}
	if len(bad) > 0 {
		if err := b.enc.ReconstructData(shards); err != nil {
			return nil, header{}, opError("get", name, fmt.Errorf("reconstruct: %w", err))
		}
	}
	var out bytes.Buffer
	out.Grow(int(h.objectSize))
	if err := b.enc.Join(&out, shards, int(h.objectSize)); err != nil {
		return nil, header{}, opError("get", name, fmt.Errorf("join: %w", err))
	}
	data := out.Bytes()
	if got := crc32.Checksum(data, castagnoli); got != h.objectCRC {
		return nil, header{}, opError("get", name, fmt.Errorf("%w: object CRC32C %08x after decoding, header says %08x (bad shards: %v)", ErrCorruptShard, got, h.objectCRC, bad))
	}
	b.report(name, bad)
	return data, h, nil
}

func (b *Bucket) report(name string, bad []ShardError) {
	if len(bad) > 0 && b.opts.OnReconstruct != nil {
		b.opts.OnReconstruct(name, bad)
	}
}

// pick returns the object id that most healthy shards agree on.
func (b *Bucket) pick(res []shardResult) (uint64, bool) {
	counts := map[uint64]int{}
	best, bestN := uint64(0), 0
	for _, r := range res {
		if r.err != nil {
			continue
		}
		counts[r.h.objectID]++
		if c := counts[r.h.objectID]; c > bestN {
			best, bestN = r.h.objectID, c
		}
	}
	return best, bestN > 0
}

func (b *Bucket) goodCount(res []shardResult, id uint64) int {
	n := 0
	for _, r := range res {
		if r.err == nil && r.h.objectID == id {
			n++
		}
	}
	return n
}

// Get is part of the objectstore.Bucket interface.
func (b *Bucket) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	data, _, err := b.load(ctx, name)
	if err != nil {
		return nil, err
	}
	return io.NopCloser(bytes.NewReader(data)), nil
}

// GetRange is part of the objectstore.Bucket interface. It reads the whole
// object.
func (b *Bucket) GetRange(ctx context.Context, name string, off, length int64) (io.ReadCloser, error) {
	data, _, err := b.load(ctx, name)
	if err != nil {
		return nil, err
	}
	end, err := objectstore.RangeEnd(int64(len(data)), off, length)
	if err != nil {
		return nil, opError("get", name, err)
	}
	return io.NopCloser(bytes.NewReader(data[off:end])), nil
}

// Attributes is part of the objectstore.Bucket interface. It reads shard
// headers only (ranged reads) and reports the object's size and CRC32C; the
// ETag is the upload's object id, LastModified is zero.
func (b *Bucket) Attributes(ctx context.Context, name string) (objectstore.Attributes, error) {
	if err := objectstore.ValidateName(name); err != nil {
		return objectstore.Attributes{}, opError("attributes", name, err)
	}
	l := b.lock(name)
	l.RLock()
	defer l.RUnlock()
	var bad []ShardError
	missing := 0
	for i, sb := range b.buckets {
		if err := ctx.Err(); err != nil {
			return objectstore.Attributes{}, opError("attributes", name, err)
		}
		p := make([]byte, headerSize)
		err := objectstore.ReadAt(ctx, sb, name, p, 0)
		var h header
		if err == nil {
			h, err = decodeHeader(p)
		}
		if err != nil {
			if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
				return objectstore.Attributes{}, opError("attributes", name, err)
			}
			if errors.Is(err, objectstore.ErrNotExist) {
				missing++
			}
			bad = append(bad, ShardError{i, err})
			if len(bad) > b.m {
				break
			}
			continue
		}
		return objectstore.Attributes{
			Size:      int64(h.objectSize),
			ETag:      fmt.Sprintf("%016x", h.objectID),
			CRC32C:    h.objectCRC,
			HasCRC32C: true,
		}, nil
	}
	if missing == len(bad) {
		return objectstore.Attributes{}, opError("attributes", name, objectstore.ErrNotExist)
	}
	return objectstore.Attributes{}, &ShardsError{Op: "attributes", Name: name, K: b.k, M: b.m, Bad: bad}
}

// List is part of the objectstore.Bucket interface. It merges the listings
// of buckets 0..m: an object with at most m bad shards has a shard in at
// least one of them.
func (b *Bucket) List(ctx context.Context, prefix, startAfter string, limit int) ([]string, string, error) {
	if err := objectstore.ValidatePrefix(prefix); err != nil {
		return nil, "", opError("list", prefix, err)
	}
	if limit <= 0 {
		limit = objectstore.DefaultListLimit
	}
	type page struct {
		names []string
		next  string
		err   error
	}
	pages := make([]page, b.m+1)
	var wg sync.WaitGroup
	for i := range pages {
		wg.Go(func() {
			p := &pages[i]
			p.names, p.next, p.err = b.buckets[i].List(ctx, prefix, startAfter, limit)
		})
	}
	wg.Wait()
	var merged []string
	// bound: names past the end of a truncated page may be missing from
	// that page, so only names up to the smallest such end are complete.
	bound, bounded := "", false
	var errs []error
	for i, p := range pages {
		if p.err != nil {
			errs = append(errs, fmt.Errorf("shard bucket %d: %w", i, p.err))
			continue
		}
		merged = append(merged, p.names...)
		if p.next != "" && (!bounded || p.next < bound) {
			bound, bounded = p.next, true
		}
	}
	if len(errs) > 0 {
		// NB: a listing that misses a bucket may miss objects; fail
		// rather than return an incomplete page.
		return nil, "", opError("list", prefix, errors.Join(errs...))
	}
	slices.Sort(merged)
	merged = slices.Compact(merged)
	if bounded {
		end, _ := slices.BinarySearch(merged, bound)
		if end < len(merged) && merged[end] == bound {
			end++
		}
		merged = merged[:end]
	}
	if len(merged) > limit {
		merged = merged[:limit]
		return merged, merged[limit-1], nil
	}
	if bounded {
		if len(merged) == 0 {
			return nil, bound, nil
		}
		return merged, merged[len(merged)-1], nil
	}
	return merged, "", nil
}

// Delete is part of the objectstore.Bucket interface. It deletes every
// shard; it fails if any shard could not be deleted.
func (b *Bucket) Delete(ctx context.Context, name string) error {
	if err := objectstore.ValidateName(name); err != nil {
		return opError("delete", name, err)
	}
	l := b.lock(name)
	l.Lock()
	defer l.Unlock()
	errs := make([]error, len(b.buckets))
	var wg sync.WaitGroup
	for i, sb := range b.buckets {
		wg.Go(func() { errs[i] = sb.Delete(ctx, name) })
	}
	wg.Wait()
	var bad []ShardError
	for i, err := range errs {
		if err != nil {
			bad = append(bad, ShardError{i, err})
		}
	}
	if len(bad) > 0 {
		err := error(&ShardsError{Op: "delete", Name: name, K: b.k, M: b.m, Bad: bad})
		if ctx.Err() != nil {
			err = fmt.Errorf("%w: %w", ctx.Err(), err)
		}
		return err
	}
	return nil
}

// Close is part of the objectstore.Bucket interface. It closes the
// underlying buckets.
func (b *Bucket) Close() error {
	var errs []error
	for _, sb := range b.buckets {
		errs = append(errs, sb.Close())
	}
	return errors.Join(errs...)
}
