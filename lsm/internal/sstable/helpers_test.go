package sstable

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync/atomic"
	"testing"

	"github.com/tierkv/tierkv/lsm/internal/base"
	"github.com/tierkv/tierkv/lsm/objstorage"
)

// memWritable is an objstorage.Writable that keeps the bytes in memory.
type memWritable struct {
	buf      bytes.Buffer
	finished bool
	aborted  bool
	failAt   int // fail the Write that crosses this many bytes; 0: never
}

var _ objstorage.Writable = (*memWritable)(nil)

func (w *memWritable) Write(p []byte) error {
	if w.failAt > 0 && w.buf.Len()+len(p) >= w.failAt {
		return fmt.Errorf("injected write error")
	}
	w.buf.Write(p)
	return nil
}
func (w *memWritable) Finish() error { w.finished = true; return nil }
func (w *memWritable) Abort()        { w.aborted = true }

// memReadable is an objstorage.Readable over a byte slice that counts its
// reads.
type memReadable struct {
	data   []byte
	reads  atomic.Int64
	closed atomic.Bool
}

var _ objstorage.Readable = (*memReadable)(nil)

func (r *memReadable) ReadAt(ctx context.Context, p []byte, off int64) error {
	r.reads.Add(1)
	if off < 0 || off+int64(len(p)) > int64(len(r.data)) {
		return fmt.Errorf("read [%d, %d) beyond size %d", off, off+int64(len(p)), len(r.data))
	}
	copy(p, r.data[off:])
	return nil
}
func (r *memReadable) Size() int64  { return int64(len(r.data)) }
func (r *memReadable) Close() error { r.closed.Store(true); return nil }

// randomEntries returns n entries with distinct keys, sorted. Keys share
// prefixes so that prefix compression matters; values are partly
// compressible.
func randomEntries(rng *rand.Rand, n int) []base.Entry {
	seen := map[string]bool{}
	var es []base.Entry
	prefixes := []string{"", "a", "user/", "user/000", "z\xff\xff", "\x00"}
	for len(es) < n {
		k := []byte(prefixes[rng.IntN(len(prefixes))])
		for j := rng.IntN(12); j >= 0; j-- {
			k = append(k, "abcxyz\x00\xff"[rng.IntN(8)])
		}
		if seen[string(k)] {
			continue
		}
		seen[string(k)] = true
		e := base.Entry{Key: k, Version: rng.Uint64N(1 << 40), Kind: base.KindSet}
		if rng.IntN(5) == 0 {
			e.Kind = base.KindDelete
		} else {
			v := make([]byte, rng.IntN(120))
			if rng.IntN(2) == 0 {
				for i := range v {
					v[i] = byte(rng.Uint32())
				}
			} else {
				for i := range v {
					v[i] = "value-"[i%6]
				}
			}
			e.Value = v
		}
		es = append(es, e)
	}
	sort.Slice(es, func(i, j int) bool { return bytes.Compare(es[i].Key, es[j].Key) < 0 })
	return es
}

// sequentialEntries returns n entries with keys "key%08d".
func sequentialEntries(n, valueLen int) []base.Entry {
	es := make([]base.Entry, n)
	for i := range es {
		es[i] = base.Entry{
			Key:     fmt.Appendf(nil, "key%08d", i*2),
			Version: uint64(i + 1),
			Kind:    base.KindSet,
			Value:   bytes.Repeat([]byte{byte('a' + i%26)}, valueLen),
		}
	}
	return es
}

func buildTable(t testing.TB, es []base.Entry, opts WriterOptions) ([]byte, Properties) {
	t.Helper()
	var mw memWritable
	w := NewWriter(&mw, opts)
	for _, e := range es {
		if err := w.Add(e); err != nil {
			t.Fatal(err)
		}
	}
	props, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	if !mw.finished || mw.aborted {
		t.Fatalf("finished=%v aborted=%v", mw.finished, mw.aborted)
	}
	return mw.buf.Bytes(), props
}

func openTable(t testing.TB, data []byte, opts ReaderOptions) (*Reader, *memReadable) {
	t.Helper()
	mr := &memReadable{data: data}
	r, err := Open(context.Background(), mr, opts)
	if err != nil {
		t.Fatal(err)
	}
	return r, mr
}

func entryEqual(a, b base.Entry) bool {
	return bytes.Equal(a.Key, b.Key) && a.Version == b.Version && a.Kind == b.Kind && bytes.Equal(a.Value, b.Value)
}

func fmtEntry(e base.Entry) string {
	return fmt.Sprintf("%q@%d %s %q", e.Key, e.Version, e.Kind, e.Value)
}

// modelProps computes the expected properties of a table of es, except the
// sizes that depend on the encoding.
func modelProps(es []base.Entry) Properties {
	var p Properties
	for i, e := range es {
		if i == 0 {
			p.SmallestKey = e.Key
			p.MinVersion, p.MaxVersion = e.Version, e.Version
		}
		p.LargestKey = e.Key
		p.MinVersion = min(p.MinVersion, e.Version)
		p.MaxVersion = max(p.MaxVersion, e.Version)
		p.NumEntries++
		if e.Kind == base.KindDelete {
			p.NumTombstones++
		}
		p.RawKeyBytes += uint64(len(e.Key))
		p.RawValueBytes += uint64(len(e.Value))
	}
	return p
}
