package sstable

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strings"
	"testing"

	"github.com/tierkv/tierkv/lsm/internal/base"
	"github.com/tierkv/tierkv/lsm/internal/cache"
	"github.com/tierkv/tierkv/lsm/objstorage"
	"github.com/tierkv/tierkv/lsm/vfs"
)

// TestRoundTrip writes random tables under many options and checks Get,
// iteration, SeekGE and the properties against the model.
func TestRoundTrip(t *testing.T) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	es := randomEntries(rng, 1000)
	// Absent keys: random keys, keys between present keys, and keys
	// outside the range.
	present := map[string]bool{}
	for _, e := range es {
		present[string(e.Key)] = true
	}
	var absent [][]byte
	for _, e := range es {
		absent = append(absent, append(append([]byte(nil), e.Key...), 0), e.Key[:len(e.Key)/2])
	}
	for _, e := range randomEntries(rand.New(rand.NewPCG(3, 4)), 500) {
		absent = append(absent, e.Key)
	}
	absent = append(absent, nil, []byte("\xff\xff\xff\xff\xff"))
	n := 0
	for _, k := range absent {
		if !present[string(k)] {
			absent[n] = k
			n++
		}
	}
	absent = absent[:n]

	for _, blockSize := range []int{1, 64, 1024, 4096, 1 << 20} {
		for _, comp := range []Compression{NoCompression, S2Compression, ZstdCompression} {
			for _, bloomBits := range []int{0, 10} {
				name := fmt.Sprintf("block=%d/%s/bloom=%d", blockSize, comp, bloomBits)
				t.Run(name, func(t *testing.T) {
					data, wprops := buildTable(t, es, WriterOptions{BlockSize: blockSize, Compression: comp, BloomBitsPerKey: bloomBits})
					var c *cache.Cache
					if bloomBits > 0 {
						c = cache.New(1 << 20) // exercise both paths
					}
					r, _ := openTable(t, data, ReaderOptions{Cache: c, FileNum: 7})
					defer r.Close()
					checkProps(t, r.Properties(), wprops, es, uint64(len(data)))
					if r.HasFilter() != (bloomBits > 0) {
						t.Fatalf("HasFilter = %v", r.HasFilter())
					}
					for _, e := range es {
						got, ok, err := r.Get(ctx, e.Key)
						if err != nil || !ok || !entryEqual(got, e) {
							t.Fatalf("Get(%q) = %s, %v, %v; want %s", e.Key, fmtEntry(got), ok, err, fmtEntry(e))
						}
					}
					for _, k := range absent {
						if got, ok, err := r.Get(ctx, k); ok || err != nil {
							t.Fatalf("Get(%q) = %s, %v, %v; want absent", k, fmtEntry(got), ok, err)
						}
					}
					checkIter(t, r.NewIter(ctx), es, absent)
					checkIter(t, r.NewCompactionIter(ctx), es, absent)
				})
			}
		}
	}
}

func checkProps(t *testing.T, got *Properties, written Properties, es []base.Entry, fileSize uint64) {
	t.Helper()
	want := modelProps(es)
	want.NumDataBlocks, want.DataSize, want.FileSize = got.NumDataBlocks, got.DataSize, fileSize
	if got.NumDataBlocks == 0 || got.DataSize == 0 || got.DataSize >= fileSize {
		t.Fatalf("implausible sizes: %+v", got)
	}
	for _, p := range []*Properties{got, &written} {
		if !bytes.Equal(p.SmallestKey, want.SmallestKey) || !bytes.Equal(p.LargestKey, want.LargestKey) ||
			p.MinVersion != want.MinVersion || p.MaxVersion != want.MaxVersion ||
			p.NumEntries != want.NumEntries || p.NumTombstones != want.NumTombstones ||
			p.RawKeyBytes != want.RawKeyBytes || p.RawValueBytes != want.RawValueBytes ||
			p.NumDataBlocks != want.NumDataBlocks || p.DataSize != want.DataSize || p.FileSize != want.FileSize {
			t.Fatalf("properties\n got %+v\nwant %+v", *p, want)
		}
	}
}

// checkIter checks a full scan and SeekGE at every key and at the absent
// keys against the model.
func checkIter(t *testing.T, it base.InternalIterator, es []base.Entry, absent [][]byte) {
	t.Helper()
	i := 0
	for ok := it.First(); ok; ok = it.Next() {
		if i >= len(es) || !entryEqual(it.Entry(), es[i]) {
			t.Fatalf("scan entry %d = %s", i, fmtEntry(it.Entry()))
		}
		i++
	}
	if it.Error() != nil || i != len(es) {
		t.Fatalf("scan: %d entries, err %v; want %d", i, it.Error(), len(es))
	}
	seek := func(k []byte) {
		want := sort.Search(len(es), func(i int) bool { return bytes.Compare(es[i].Key, k) >= 0 })
		ok := it.SeekGE(k)
		if want == len(es) {
			if ok {
				t.Fatalf("SeekGE(%q) = %s, want end", k, fmtEntry(it.Entry()))
			}
			return
		}
		if !ok || !entryEqual(it.Entry(), es[want]) {
			t.Fatalf("SeekGE(%q) = %v, want %s", k, ok, fmtEntry(es[want]))
		}
		// A couple of Next calls after the seek.
		for j := want + 1; j < min(want+3, len(es)); j++ {
			if !it.Next() || !entryEqual(it.Entry(), es[j]) {
				t.Fatalf("Next after SeekGE(%q): want %s", k, fmtEntry(es[j]))
			}
		}
	}
	for _, e := range es {
		seek(e.Key)
	}
	for _, k := range absent {
		seek(k)
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	if it.First() {
		t.Fatal("First after Close")
	}
}

func TestEmptyTable(t *testing.T) {
	ctx := context.Background()
	data, props := buildTable(t, nil, WriterOptions{BloomBitsPerKey: 10})
	if props.NumEntries != 0 || props.NumDataBlocks != 0 {
		t.Fatalf("props = %+v", props)
	}
	r, _ := openTable(t, data, ReaderOptions{})
	if _, ok, err := r.Get(ctx, []byte("a")); ok || err != nil {
		t.Fatal(ok, err)
	}
	it := r.NewIter(ctx)
	if it.First() || it.SeekGE(nil) || it.Error() != nil {
		t.Fatal("empty iterator not empty")
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestCompressionShrinks(t *testing.T) {
	es := sequentialEntries(2000, 100)
	none, _ := buildTable(t, es, WriterOptions{Compression: NoCompression})
	for _, c := range []Compression{S2Compression, ZstdCompression} {
		data, _ := buildTable(t, es, WriterOptions{Compression: c})
		if len(data) > len(none)/3 {
			t.Fatalf("%s: %d bytes, uncompressed %d", c, len(data), len(none))
		}
	}
	// Incompressible blocks are stored raw.
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range es {
		for j := range es[i].Value {
			es[i].Value[j] = byte(rng.Uint32())
		}
	}
	data, _ := buildTable(t, es, WriterOptions{Compression: S2Compression})
	r, _ := openTable(t, data, ReaderOptions{})
	for i := range r.index {
		h := r.index[i].h
		if typ := data[h.offset+h.length]; typ != blockTypeNone {
			t.Fatalf("incompressible block %d stored with type %d", i, typ)
		}
	}
}

func TestSeparator(t *testing.T) {
	for _, tc := range []struct{ a, b, want string }{
		// Short separators.
		{"abc", "abz", "abd"},
		{"a", "c", "b"},
		{"abc123", "abd", "abc123"}, // adjacent bytes: keep a
		{"ab", "abc", "ab"},         // a is a prefix of b
		{"a\xff", "b", "a\xff"},
		{"", "a", ""},
	} {
		got := separator([]byte(tc.a), []byte(tc.b))
		if string(got) != tc.want {
			t.Errorf("separator(%q, %q) = %q, want %q", tc.a, tc.b, got, tc.want)
		}
		if bytes.Compare(got, []byte(tc.a)) < 0 || bytes.Compare(got, []byte(tc.b)) >= 0 {
			t.Errorf("separator(%q, %q) = %q out of range", tc.a, tc.b, got)
		}
	}
}

func TestWriterErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		es   []base.Entry
	}{
		{"equal keys", []base.Entry{{Key: []byte("a")}, {Key: []byte("a")}}},
		{"decreasing keys", []base.Entry{{Key: []byte("b")}, {Key: []byte("a")}}},
		{"bad kind", []base.Entry{{Key: []byte("a"), Kind: 7}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mw memWritable
			w := NewWriter(&mw, WriterOptions{})
			var err error
			for _, e := range tc.es {
				if err = w.Add(e); err != nil {
					break
				}
			}
			if err == nil {
				t.Fatal("no error")
			}
			if err2 := w.Add(base.Entry{Key: []byte("zzz")}); err2 == nil {
				t.Fatal("error not sticky")
			}
			if _, err := w.Close(); err == nil {
				t.Fatal("Close succeeded")
			}
			if !mw.aborted || mw.finished {
				t.Fatalf("aborted=%v finished=%v", mw.aborted, mw.finished)
			}
		})
	}
	t.Run("write error", func(t *testing.T) {
		mw := memWritable{failAt: 5000}
		w := NewWriter(&mw, WriterOptions{Compression: NoCompression})
		var err error
		for _, e := range sequentialEntries(1000, 10) {
			if err = w.Add(e); err != nil {
				break
			}
		}
		if err == nil || !strings.Contains(err.Error(), "injected") {
			t.Fatalf("err = %v", err)
		}
		if _, err := w.Close(); err == nil || !mw.aborted {
			t.Fatalf("Close err=%v aborted=%v", err, mw.aborted)
		}
	})
	t.Run("abort", func(t *testing.T) {
		var mw memWritable
		w := NewWriter(&mw, WriterOptions{})
		_ = w.Add(base.Entry{Key: []byte("a")})
		w.Abort()
		if !mw.aborted || mw.finished {
			t.Fatal("not aborted")
		}
	})
}

func TestEstimatedSize(t *testing.T) {
	var mw memWritable
	w := NewWriter(&mw, WriterOptions{Compression: NoCompression})
	prev := w.EstimatedSize()
	for _, e := range sequentialEntries(1000, 50) {
		if err := w.Add(e); err != nil {
			t.Fatal(err)
		}
		if s := w.EstimatedSize(); s <= prev || s < uint64(mw.buf.Len()) {
			t.Fatalf("EstimatedSize %d after %d (written %d)", s, prev, mw.buf.Len())
		} else {
			prev = s
		}
	}
	props, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	if prev > props.FileSize || prev < props.DataSize*9/10 {
		t.Fatalf("final estimate %d, data %d, file %d", prev, props.DataSize, props.FileSize)
	}
}

// TestBloom checks the false positive rate and that a negative probe reads
// no data block.
func TestBloom(t *testing.T) {
	ctx := context.Background()
	es := sequentialEntries(10000, 8) // keys key%08d with even numbers
	data, _ := buildTable(t, es, WriterOptions{BloomBitsPerKey: 10})
	stats := new(Stats)
	r, mr := openTable(t, data, ReaderOptions{Stats: stats})
	defer r.Close()
	if r.Stats() != stats {
		t.Fatal("Stats not shared")
	}
	fp := 0
	var negative [][]byte
	const nAbsent = 9999
	for i := 0; i < nAbsent; i++ {
		k := fmt.Appendf(nil, "key%08d", 2*i+1) // odd: absent, inside the key range
		if r.MayContain(k) {
			fp++
		} else {
			negative = append(negative, k)
		}
	}
	if rate := float64(fp) / nAbsent; rate > 0.02 {
		t.Fatalf("false positive rate %.4f", rate)
	}
	for _, e := range es[:100] {
		if !r.MayContain(e.Key) {
			t.Fatalf("false negative for %q", e.Key)
		}
	}
	reads := mr.reads.Load()
	for _, k := range negative {
		if _, ok, err := r.Get(ctx, k); ok || err != nil {
			t.Fatal(ok, err)
		}
	}
	if got := mr.reads.Load(); got != reads {
		t.Fatalf("%d reads for bloom-rejected keys", got-reads)
	}
	if stats.BloomChecks.Load() != uint64(len(negative)) || stats.BloomNegatives.Load() != uint64(len(negative)) || stats.BlockReads.Load() != 0 {
		t.Fatalf("checks %d negatives %d reads %d", stats.BloomChecks.Load(), stats.BloomNegatives.Load(), stats.BlockReads.Load())
	}
	// Present keys are true positives and read one block each.
	for _, e := range es[:50] {
		if _, ok, err := r.Get(ctx, e.Key); !ok || err != nil {
			t.Fatal(ok, err)
		}
	}
	if stats.BloomTruePositives.Load() != 50 || stats.BlockReads.Load() != 50 || mr.reads.Load() != reads+50 {
		t.Fatalf("true positives %d, block reads %d", stats.BloomTruePositives.Load(), stats.BlockReads.Load())
	}
	// Without a filter every key may be present.
	data, _ = buildTable(t, es, WriterOptions{})
	r2, _ := openTable(t, data, ReaderOptions{})
	if !r2.MayContain([]byte("nope")) {
		t.Fatal("MayContain false without a filter")
	}
}

// TestOneReadPerGet checks the I/O pattern a remote Readable relies on: two
// reads at Open, then exactly one read per uncached lookup, none when
// cached.
func TestOneReadPerGet(t *testing.T) {
	ctx := context.Background()
	es := sequentialEntries(5000, 20)
	data, _ := buildTable(t, es, WriterOptions{BloomBitsPerKey: 10})
	c := cache.New(64 << 20)
	r, mr := openTable(t, data, ReaderOptions{Cache: c, FileNum: 1})
	if got := mr.reads.Load(); got != 2 {
		t.Fatalf("Open made %d reads", got)
	}
	for i, e := range es[:200] {
		before := mr.reads.Load()
		if _, ok, err := r.Get(ctx, e.Key); !ok || err != nil {
			t.Fatal(ok, err)
		}
		if n := mr.reads.Load() - before; n > 1 {
			t.Fatalf("Get %d made %d reads", i, n)
		}
	}
	before := mr.reads.Load()
	for _, e := range es[:200] {
		if _, ok, err := r.Get(ctx, e.Key); !ok || err != nil {
			t.Fatal(ok, err)
		}
	}
	if mr.reads.Load() != before {
		t.Fatal("cached Gets read the file")
	}
	if r.Stats().BlockCacheHits.Load() < 200 {
		t.Fatalf("cache hits %d", r.Stats().BlockCacheHits.Load())
	}
	// A compaction scan reads in large chunks and does not fill the cache.
	c2 := cache.New(64 << 20)
	r2, mr2 := openTable(t, data, ReaderOptions{Cache: c2, FileNum: 2})
	it := r2.NewCompactionIter(ctx)
	n := 0
	for ok := it.First(); ok; ok = it.Next() {
		n++
	}
	if err := it.Close(); err != nil || n != len(es) {
		t.Fatal(n, err)
	}
	if st := c2.Stats(); st.Count != 0 {
		t.Fatalf("compaction scan filled the cache: %+v", st)
	}
	if reads := mr2.reads.Load() - 2; reads > int64(len(data))/compactionReadaheadSize+1 || int(r2.Properties().NumDataBlocks) < 10 {
		t.Fatalf("compaction scan of %d blocks made %d reads", r2.Properties().NumDataBlocks, reads)
	}
	// A regular scan fills it.
	it = r2.NewIter(ctx)
	for ok := it.First(); ok; ok = it.Next() {
	}
	it.Close()
	if st := c2.Stats(); st.Count != int64(r2.Properties().NumDataBlocks) {
		t.Fatalf("scan cached %d blocks of %d", st.Count, r2.Properties().NumDataBlocks)
	}
}

// TestGetAllocs checks that a Get on a cached block does not allocate,
// except the copy of a key stored prefix-compressed.
func TestGetAllocs(t *testing.T) {
	ctx := context.Background()
	es := sequentialEntries(1000, 20)
	data, _ := buildTable(t, es, WriterOptions{BloomBitsPerKey: 10})
	r, _ := openTable(t, data, ReaderOptions{Cache: cache.New(1 << 20), FileNum: 1})
	for _, tc := range []struct {
		key  []byte
		max  float64
		note string
	}{
		{es[0].Key, 0, "restart point"},
		{es[5].Key, 1, "prefix-compressed key"},
		{[]byte("key00000001"), 0, "absent"},
	} {
		r.Get(ctx, tc.key)
		if n := testing.AllocsPerRun(100, func() { r.Get(ctx, tc.key) }); n > tc.max {
			t.Errorf("%s: %v allocs per Get", tc.note, n)
		}
	}
}

// TestCorruption flips every byte of a table, one at a time, and checks
// that opening and reading it fails with a corruption error naming the
// table and the offset of the damaged block, and never panics.
func TestCorruption(t *testing.T) {
	ctx := context.Background()
	es := sequentialEntries(300, 10)
	for _, comp := range []Compression{NoCompression, S2Compression, ZstdCompression} {
		t.Run(comp.String(), func(t *testing.T) {
			data, _ := buildTable(t, es, WriterOptions{BlockSize: 512, BloomBitsPerKey: 10, Compression: comp})
			clean, _ := openTable(t, data, ReaderOptions{})
			// blockAt returns the start of the region holding byte i.
			var starts []int
			for _, ie := range clean.index {
				starts = append(starts, int(ie.h.offset))
			}
			ft, err := decodeFooter(data[len(data)-footerSize:], uint64(len(data)))
			if err != nil {
				t.Fatal(err)
			}
			starts = append(starts, int(ft.bloom.offset), int(ft.index.offset), int(ft.props.offset), len(data)-footerSize)
			regionStart := func(i int) int {
				j := sort.Search(len(starts), func(j int) bool { return starts[j] > i })
				return starts[j-1]
			}
			for i := range data {
				// Every byte of the metadata; a sample of the data blocks of
				// compressed tables, to bound the test's time.
				if comp != NoCompression && i < starts[len(starts)-4] && i%7 != 0 {
					continue
				}
				bad := bytes.Clone(data)
				bad[i] ^= 0x5a
				err := readAll(ctx, bad, es)
				if err == nil {
					t.Fatalf("byte %d flipped: no error", i)
				}
				if !errors.Is(err, base.ErrCorruption) {
					t.Fatalf("byte %d flipped: error not a corruption: %v", i, err)
				}
				if want := fmt.Sprintf("sstable 000009.sst: offset %d:", regionStart(i)); !strings.Contains(err.Error(), want) {
					t.Fatalf("byte %d flipped: error %q does not contain %q", i, err, want)
				}
			}
			// Truncation.
			for _, n := range []int{0, 1, 10, footerSize - 1, footerSize, footerSize + 1, len(data) / 2, len(data) - footerSize, len(data) - 1} {
				err := readAll(ctx, data[:n], es)
				if !errors.Is(err, base.ErrCorruption) || !strings.Contains(err.Error(), "000009.sst") {
					t.Fatalf("truncated to %d: %v", n, err)
				}
			}
		})
	}
}

// readAll opens a table, gets every key and scans it; it returns the first
// error.
func readAll(ctx context.Context, data []byte, es []base.Entry) error {
	r, err := Open(ctx, &memReadable{data: data}, ReaderOptions{FileNum: 9})
	if err != nil {
		return err
	}
	defer r.Close()
	for _, e := range es {
		if _, _, err := r.Get(ctx, e.Key); err != nil {
			return err
		}
	}
	it := r.NewCompactionIter(ctx)
	for ok := it.First(); ok; ok = it.Next() {
	}
	return it.Close()
}

func TestReadError(t *testing.T) {
	ctx := context.Background()
	es := sequentialEntries(300, 10)
	data, _ := buildTable(t, es, WriterOptions{BlockSize: 512})
	r, mr := openTable(t, data, ReaderOptions{FileNum: 3})
	mr.data = mr.data[:r.Properties().DataSize-100] // reads of the last block now fail
	_, _, err := r.Get(ctx, es[len(es)-1].Key)
	if err == nil || errors.Is(err, base.ErrCorruption) || !strings.Contains(err.Error(), "000003.sst") {
		t.Fatalf("err = %v", err)
	}
	it := r.NewIter(ctx)
	n := 0
	for ok := it.First(); ok; ok = it.Next() {
		n++
	}
	if it.Error() == nil || n == 0 || n == len(es) || it.Close() == nil {
		t.Fatalf("scan of %d entries, err %v", n, it.Error())
	}
}

// TestLocalProvider writes a table through the local provider on a MemFS:
// the object is invisible until Close.
func TestLocalProvider(t *testing.T) {
	ctx := context.Background()
	fs := vfs.NewMemFS()
	if err := fs.MkdirAll("db", 0o755); err != nil {
		t.Fatal(err)
	}
	p := objstorage.NewLocal(fs, "db")
	wr, err := p.Create(ctx, objstorage.FileTypeTable, 5)
	if err != nil {
		t.Fatal(err)
	}
	es := sequentialEntries(2000, 30)
	w := NewWriter(wr, WriterOptions{BloomBitsPerKey: 10, Compression: ZstdCompression})
	for _, e := range es {
		if err := w.Add(e); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := p.Open(ctx, objstorage.FileTypeTable, 5); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("open before Close: %v", err)
	}
	if nums, err := p.List(objstorage.FileTypeTable); err != nil || len(nums) != 0 {
		t.Fatalf("List before Close = %v, %v", nums, err)
	}
	props, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	if nums, err := p.List(objstorage.FileTypeTable); err != nil || len(nums) != 1 || nums[0] != 5 {
		t.Fatalf("List = %v, %v", nums, err)
	}
	rd, err := p.Open(ctx, objstorage.FileTypeTable, 5)
	if err != nil {
		t.Fatal(err)
	}
	if rd.Size() != int64(props.FileSize) {
		t.Fatalf("size %d, props %d", rd.Size(), props.FileSize)
	}
	r, err := Open(ctx, rd, ReaderOptions{FileNum: 5})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if got, ok, err := r.Get(ctx, e.Key); !ok || err != nil || !entryEqual(got, e) {
			t.Fatalf("Get(%q) = %v, %v", e.Key, ok, err)
		}
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
}
