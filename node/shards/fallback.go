package shards

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"

	"github.com/tierkv/tierkv/objectstore"
	"github.com/tierkv/tierkv/objectstore/erasure"
	"github.com/tierkv/tierkv/ring"
)

// Options configures NewErasure and Rebuild: whose objects (Self), where
// the peers are (Ring, Conn) and the geometry (K, M).
type Options struct {
	// Self is the owner of the objects: the node that uploads them. No
	// shard is ever placed on it. It must be a valid one-segment object
	// name (no '/'): it is the first segment of the shards' names on the
	// peers.
	Self ring.NodeID
	// Ring returns the current ring. It is called on every operation; it
	// should be cheap (an atomic load). Required.
	Ring func() *ring.Ring
	// Conn returns a connection to a node's gRPC server (which has the
	// Shards service registered). It should cache connections. An error
	// counts as the node being unreachable. Required.
	Conn func(ring.NodeID) (grpc.ClientConnInterface, error)
	// K and M are the geometry: K data and M parity shards, K >= 1,
	// M >= 1, K+M <= 256. Required.
	K, M int
	// ChunkSize is the payload of one streamed Put message. It must stay
	// below the peers' maximum receive message size. Default
	// DefaultChunkSize.
	ChunkSize int
	// SearchWidth is how many other nodes are asked for a shard that is
	// missing from (or unreachable on) the node its slot is placed on:
	// the first nodes of the slot's ring walk, where earlier rings placed
	// it. Default K+M; negative disables the search.
	SearchWidth int
	// MaxObjectSize and OnReconstruct are passed to erasure.Options.
	// MaxObjectSize bounds an object (held in memory); default erasure's
	// (256 MiB). Rebuild also holds about (K+M)/K times an object per
	// concurrent object.
	MaxObjectSize int64
	OnReconstruct func(name string, bad []erasure.ShardError)
}

func (o *Options) validate() error {
	var errs []error
	if err := objectstore.ValidateName(string(o.Self)); err != nil || strings.Contains(string(o.Self), "/") {
		errs = append(errs, fmt.Errorf("option Self %q must be a valid object name segment (non-empty, no '/', no control characters)", o.Self))
	}
	if o.Ring == nil {
		errs = append(errs, errors.New("option Ring is required"))
	}
	if o.Conn == nil {
		errs = append(errs, errors.New("option Conn is required"))
	}
	if o.K < 1 || o.M < 1 || o.K+o.M > 256 {
		errs = append(errs, fmt.Errorf("geometry RS(%d, %d) needs K >= 1, M >= 1, K+M <= 256", o.K, o.M))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("node/shards: %w", err)
	}
	return nil
}

func (o *Options) ensureDefaults() {
	if o.ChunkSize <= 0 {
		o.ChunkSize = DefaultChunkSize
	}
	if o.SearchWidth == 0 {
		o.SearchWidth = o.K + o.M
	}
}

// fleet is what the K+M slot buckets of one owner share.
type fleet struct {
	o     Options
	peers peers
	cur   atomic.Pointer[cachedLayout]
}

// cachedLayout is the layout of one ring, with the placements computed
// on it (the K+M slot buckets of a Get all need the same one).
type cachedLayout struct {
	*layout
	mu     sync.Mutex
	places map[string][]ring.NodeID
}

const maxCachedPlacements = 4096

func newFleet(o Options) (*fleet, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	o.ensureDefaults()
	return &fleet{o: o, peers: peers{conn: o.Conn, chunk: o.ChunkSize}}, nil
}

func (f *fleet) n() int { return f.o.K + f.o.M }

func (f *fleet) layout() *cachedLayout {
	r := f.o.Ring()
	if c := f.cur.Load(); c != nil && c.r == r {
		return c
	}
	c := &cachedLayout{layout: newLayout(r, f.o.Self), places: map[string][]ring.NodeID{}}
	f.cur.Store(c)
	return c
}

// place returns the current layout and the placement of name on it.
func (f *fleet) place(name string) (*cachedLayout, []ring.NodeID, error) {
	l := f.layout()
	l.mu.Lock()
	pl, ok := l.places[name]
	l.mu.Unlock()
	if ok {
		return l, pl, nil
	}
	pl, err := l.place(f.o.Self, name, f.n())
	if err != nil {
		return nil, nil, err
	}
	l.mu.Lock()
	if len(l.places) >= maxCachedPlacements {
		clear(l.places)
	}
	l.places[name] = pl
	l.mu.Unlock()
	return l, pl, nil
}

// base is the prefix of slot i's shards on the peers: "<owner>/<i>/".
func (f *fleet) base(i int) string { return string(f.o.Self) + "/" + strconv.Itoa(i) + "/" }

// locate asks the search candidates of slot i of name, in parallel,
// whether they hold stored (a zero-length read), and returns the first one
// in walk order that does.
func (f *fleet) locate(ctx context.Context, l *cachedLayout, name string, i int, primary ring.NodeID, stored string) (ring.NodeID, bool) {
	cands := l.candidates(f.o.Self, name, i, primary, f.o.SearchWidth)
	found := make([]bool, len(cands))
	var wg sync.WaitGroup
	for j, c := range cands {
		wg.Go(func() {
			rc, err := f.peers.get(ctx, c, stored, 0, 0)
			if err == nil {
				rc.Close()
				found[j] = true
			}
		})
	}
	wg.Wait()
	for j, ok := range found {
		if ok {
			return cands[j], true
		}
	}
	return "", false
}

// slot is the objectstore.Bucket of shard slot i: object X goes to the
// node the placement gives slot i, as "<owner>/<i>/X".
type slot struct {
	f      *fleet
	i      int
	closed atomic.Bool
}

var _ objectstore.Bucket = (*slot)(nil)

func (s *slot) opError(op, name string, err error) error {
	return fmt.Errorf("node/shards: %s %s (shard %d): %w", op, name, s.i, err)
}

// stored validates name and the call, and returns the shard's name on
// the peers.
func (s *slot) stored(ctx context.Context, op, name string) (string, error) {
	if err := objectstore.ValidateName(name); err != nil {
		return "", s.opError(op, name, err)
	}
	if err := ctx.Err(); err != nil {
		return "", s.opError(op, name, err)
	}
	if s.closed.Load() {
		return "", s.opError(op, name, objectstore.ErrClosed)
	}
	st := s.f.base(s.i) + name
	if len(st) > objectstore.MaxNameLen {
		return "", s.opError(op, name, fmt.Errorf("%w: %d bytes, longer than the %d that fit after the shard prefix %q", objectstore.ErrInvalidName, len(name), objectstore.MaxNameLen-len(s.f.base(s.i)), s.f.base(s.i)))
	}
	return st, nil
}

// searchable reports whether a failed read on the slot's node should be
// retried on the search candidates.
func searchable(ctx context.Context, err error) bool {
	return ctx.Err() == nil && (errors.Is(err, objectstore.ErrNotExist) || unreachable(err))
}

// Put is part of the objectstore.Bucket interface. The shard goes to the
// slot's node only.
func (s *slot) Put(ctx context.Context, name string, r io.Reader, size int64) error {
	st, err := s.stored(ctx, "put", name)
	if err != nil {
		return err
	}
	_, pl, err := s.f.place(name)
	if err != nil {
		return s.opError("put", name, err)
	}
	return s.f.peers.put(ctx, pl[s.i], st, r, size)
}

// Get is part of the objectstore.Bucket interface.
func (s *slot) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	return s.GetRange(ctx, name, 0, -1)
}

// GetRange is part of the objectstore.Bucket interface. It reads from the
// slot's node, or, if the shard is missing there or the node is
// unreachable, from the first search candidate that has it.
func (s *slot) GetRange(ctx context.Context, name string, off, length int64) (io.ReadCloser, error) {
	st, err := s.stored(ctx, "get", name)
	if err != nil {
		return nil, err
	}
	l, pl, err := s.f.place(name)
	if err != nil {
		return nil, s.opError("get", name, err)
	}
	rc, err := s.f.peers.get(ctx, pl[s.i], st, off, length)
	if err == nil || !searchable(ctx, err) {
		return rc, err
	}
	if node, ok := s.f.locate(ctx, l, name, s.i, pl[s.i], st); ok {
		return s.f.peers.get(ctx, node, st, off, length)
	}
	return nil, err
}

// Attributes is part of the objectstore.Bucket interface (of the shard
// object, as the peer stores it).
func (s *slot) Attributes(ctx context.Context, name string) (objectstore.Attributes, error) {
	st, err := s.stored(ctx, "attributes", name)
	if err != nil {
		return objectstore.Attributes{}, err
	}
	l, pl, err := s.f.place(name)
	if err != nil {
		return objectstore.Attributes{}, s.opError("attributes", name, err)
	}
	a, err := s.f.peers.stat(ctx, pl[s.i], st)
	if err == nil || !searchable(ctx, err) {
		return a, err
	}
	if node, ok := s.f.locate(ctx, l, name, s.i, pl[s.i], st); ok {
		return s.f.peers.stat(ctx, node, st)
	}
	return objectstore.Attributes{}, err
}

// Delete is part of the objectstore.Bucket interface. It deletes the
// shard on the slot's node (an error there fails the call) and, best
// effort, on the search candidates, where an earlier ring may have put it.
func (s *slot) Delete(ctx context.Context, name string) error {
	st, err := s.stored(ctx, "delete", name)
	if err != nil {
		return err
	}
	l, pl, err := s.f.place(name)
	if err != nil {
		return s.opError("delete", name, err)
	}
	cands := l.candidates(s.f.o.Self, name, s.i, pl[s.i], s.f.o.SearchWidth)
	var wg sync.WaitGroup
	for _, c := range cands {
		wg.Go(func() { _ = s.f.peers.del(ctx, c, st) })
	}
	err = s.f.peers.del(ctx, pl[s.i], st)
	wg.Wait()
	return err
}

// List is part of the objectstore.Bucket interface. It merges the
// listings of slot i's shards on every placed node other than Self, so it
// finds shards wherever a ring put them. Unreachable nodes are skipped as
// long as there are at most Redundancy(eligible nodes, K, M) of them: an
// object has at most that many shards on them, so one of slots 0..M (the
// slots erasure lists) is on a reachable node. With more unreachable
// nodes the call fails (transient).
func (s *slot) List(ctx context.Context, prefix, startAfter string, limit int) ([]string, string, error) {
	if err := objectstore.ValidatePrefix(prefix); err != nil {
		return nil, "", s.opError("list", prefix, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, "", s.opError("list", prefix, err)
	}
	if s.closed.Load() {
		return nil, "", s.opError("list", prefix, objectstore.ErrClosed)
	}
	if limit <= 0 {
		limit = objectstore.DefaultListLimit
	}
	l := s.f.layout()
	if len(l.placed) == 0 {
		return nil, "", s.opError("list", prefix, objectstore.MarkTransient(ErrNoPeers))
	}
	base := s.f.base(s.i)
	after := ""
	if startAfter != "" {
		after = base + startAfter
	}
	type page struct {
		names []string
		next  string
		err   error
	}
	pages := make([]page, len(l.placed))
	var wg sync.WaitGroup
	for j, node := range l.placed {
		wg.Go(func() {
			p := &pages[j]
			p.names, p.next, p.err = s.f.peers.list(ctx, node, base+prefix, after, limit)
		})
	}
	wg.Wait()
	var merged []string
	bound, bounded := "", false
	var down []error
	for _, p := range pages {
		if p.err != nil {
			if !unreachable(p.err) || ctx.Err() != nil {
				return nil, "", s.opError("list", prefix, p.err)
			}
			down = append(down, p.err)
			continue
		}
		for _, n := range p.names {
			merged = append(merged, strings.TrimPrefix(n, base))
		}
		if p.next != "" {
			next := strings.TrimPrefix(p.next, base)
			if !bounded || next < bound {
				bound, bounded = next, true
			}
		}
	}
	if tol := Redundancy(len(l.eligible), s.f.o.K, s.f.o.M); len(down) > tol {
		return nil, "", s.opError("list", prefix, objectstore.MarkTransient(fmt.Errorf("%w: %d nodes unreachable, at most %d tolerated: %w", ErrUnreachable, len(down), tol, errors.Join(down...))))
	}
	return mergePage(merged, bound, bounded, limit)
}

// mergePage sorts and dedupes the names of several listings; bound (if
// bounded) is the smallest "next" of the truncated ones: names past it may
// be missing from the pages, so the page ends there.
func mergePage(merged []string, bound string, bounded bool, limit int) ([]string, string, error) {
	slices.Sort(merged)
	merged = slices.Compact(merged)
	if bounded {
		end, found := slices.BinarySearch(merged, bound)
		if found {
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

// Close is part of the objectstore.Bucket interface. It does not close
// the connections (Conn's owner does).
func (s *slot) Close() error {
	s.closed.Store(true)
	return nil
}

// NewErasure returns the erasure-coded bucket of Self's objects over its
// peers: K+M slot buckets, slot i putting shard i of object X on the node
// Placement gives it, as "<Self>/<i>/X" in that node's shard store. Use it
// as tiering's fallback bucket. Closing it does not close connections.
func NewErasure(o Options) (*erasure.Bucket, error) {
	f, err := newFleet(o)
	if err != nil {
		return nil, err
	}
	slots := make([]objectstore.Bucket, f.n())
	for i := range slots {
		slots[i] = &slot{f: f, i: i}
	}
	return erasure.New(slots, erasure.Options{
		DataShards: f.o.K, ParityShards: f.o.M,
		MaxObjectSize: f.o.MaxObjectSize, OnReconstruct: f.o.OnReconstruct,
	})
}
