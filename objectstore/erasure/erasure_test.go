package erasure

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/tierkv/tierkv/objectstore"
	"github.com/tierkv/tierkv/objectstore/objectstoretest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newMem(t testing.TB, k, m int, onRec func(string, []ShardError)) (*Bucket, []objectstore.Bucket) {
	t.Helper()
	bs := make([]objectstore.Bucket, k+m)
	for i := range bs {
		bs[i] = objectstore.NewMemBucket()
	}
	b, err := New(bs, Options{DataShards: k, ParityShards: m, OnReconstruct: onRec})
	if err != nil {
		t.Fatal(err)
	}
	return b, bs
}

func TestAcceptance(t *testing.T) {
	objectstoretest.AcceptanceTest(t, func(t *testing.T) objectstore.Bucket {
		b, _ := newMem(t, 4, 2, nil)
		return b
	})
}

// damage kinds applied to one shard.
const (
	missing = iota
	corruptPayload
	corruptHeader
	truncated
	stale
	numKinds
)

var kindNames = []string{"missing", "corrupt payload", "corrupt header", "truncated", "stale"}

func damage(t *testing.T, bs []objectstore.Bucket, i int, name string, kind int, staleShard []byte) {
	t.Helper()
	ctx := context.Background()
	if kind == missing {
		if err := bs[i].Delete(ctx, name); err != nil {
			t.Fatal(err)
		}
		return
	}
	p := objectstoretest.Get(t, bs[i], name)
	switch kind {
	case corruptPayload:
		if len(p) == headerSize {
			p = append(p, 0) // an empty payload: make it too long
		} else {
			p[headerSize+len(p[headerSize:])/2] ^= 0x40
		}
	case corruptHeader:
		p[10] ^= 1
	case truncated:
		p = p[:len(p)-1]
	case stale:
		p = staleShard
	}
	objectstoretest.Put(t, bs[i], name, p)
}

// subsets returns every subset of {0..n-1} with at most max elements.
func subsets(n, max int) [][]int {
	var out [][]int
	var rec func(start int, cur []int)
	rec = func(start int, cur []int) {
		out = append(out, slices.Clone(cur))
		if len(cur) == max {
			return
		}
		for i := start; i < n; i++ {
			rec(i+1, append(cur, i))
		}
	}
	rec(0, nil)
	return out
}

// TestReconstructEverySubset damages every subset of up to m shards in
// every combination of ways and checks that Get returns the object byte for
// byte and reports exactly the damaged shards.
func TestReconstructEverySubset(t *testing.T) {
	const k, m = 4, 2
	ctx := context.Background()
	for _, size := range []int{0, 1, 4, 1001, 64 << 10} {
		data := objectstoretest.Data(uint64(size), size)
		var mu sync.Mutex
		var reported []int
		b, bs := newMem(t, k, m, func(name string, bad []ShardError) {
			mu.Lock()
			defer mu.Unlock()
			for _, s := range bad {
				reported = append(reported, s.Index)
			}
		})
		// Shards of an older upload of the same name, for "stale".
		objectstoretest.Put(t, b, "obj", objectstoretest.Data(999, size+3))
		old := make([][]byte, k+m)
		for i := range old {
			old[i] = objectstoretest.Get(t, bs[i], "obj")
		}
		cases := 0
		for _, sub := range subsets(k+m, m) {
			kinds := make([]int, len(sub))
			for {
				objectstoretest.Put(t, b, "obj", data)
				var desc []string
				for j, i := range sub {
					damage(t, bs, i, "obj", kinds[j], old[i])
					desc = append(desc, fmt.Sprintf("%d %s", i, kindNames[kinds[j]]))
				}
				reported = nil
				got, err := objectstore.ReadAll(ctx, b, "obj")
				if err != nil {
					t.Fatalf("size %d, damaged %v: Get: %v", size, desc, err)
				}
				if !bytes.Equal(got, data) {
					t.Fatalf("size %d, damaged %v: Get returned different bytes", size, desc)
				}
				slices.Sort(reported)
				// Get reads parity only when a data shard is bad.
				want := sub
				if len(sub) == 0 || sub[0] >= k {
					want = nil
				}
				if !slices.Equal(reported, want) {
					t.Fatalf("size %d, damaged %v: reported bad shards %v, want %v", size, desc, reported, want)
				}
				if size > 0 {
					off := int64(size / 3)
					rc, err := b.GetRange(ctx, "obj", off, 100)
					if err != nil {
						t.Fatal(err)
					}
					var buf bytes.Buffer
					buf.ReadFrom(rc)
					rc.Close()
					if !bytes.Equal(buf.Bytes(), data[off:min(off+100, int64(size))]) {
						t.Fatalf("size %d, damaged %v: GetRange differs", size, desc)
					}
				}
				cases++
				// Next combination of kinds.
				j := 0
				for ; j < len(kinds); j++ {
					kinds[j]++
					if kinds[j] < numKinds {
						break
					}
					kinds[j] = 0
				}
				if j == len(kinds) {
					break
				}
			}
		}
		if want := 1 + 6*5 + 15*25; cases != want {
			t.Fatalf("ran %d cases, want %d", cases, want)
		}
		b.Close()
	}
}

// TestTooManyBadShards damages every subset of m+1 shards: Get fails with
// an error naming the object and every bad shard.
func TestTooManyBadShards(t *testing.T) {
	const k, m = 3, 2
	ctx := context.Background()
	b, bs := newMem(t, k, m, nil)
	defer b.Close()
	data := objectstoretest.Data(5, 5000)
	for _, sub := range subsets(k+m, m+1) {
		if len(sub) != m+1 {
			continue
		}
		objectstoretest.Put(t, b, "dir/obj", data)
		for j, i := range sub {
			damage(t, bs, i, "dir/obj", []int{missing, corruptPayload, corruptHeader}[j%3], nil)
		}
		_, err := b.Get(ctx, "dir/obj")
		var se *ShardsError
		if !errors.Is(err, ErrTooManyBadShards) || !errors.As(err, &se) {
			t.Fatalf("damaged %v: Get = %v, want a *ShardsError", sub, err)
		}
		if !slices.Equal(se.BadIndexes(), sub) || se.Name != "dir/obj" {
			t.Fatalf("damaged %v: error names %q shards %v", sub, se.Name, se.BadIndexes())
		}
		msg := err.Error()
		for _, i := range sub {
			if !strings.Contains(msg, fmt.Sprintf("shard %d:", i)) || !strings.Contains(msg, "dir/obj") {
				t.Fatalf("error %q does not name the object and shard %d", msg, i)
			}
		}
		if _, err := b.GetRange(ctx, "dir/obj", 0, 10); !errors.Is(err, ErrTooManyBadShards) {
			t.Fatalf("GetRange = %v", err)
		}
	}
	// Every shard missing: the object does not exist.
	objectstoretest.Put(t, b, "gone", data)
	for _, sb := range bs {
		sb.Delete(ctx, "gone")
	}
	if _, err := b.Get(ctx, "gone"); !errors.Is(err, objectstore.ErrNotExist) {
		t.Fatalf("Get with every shard missing = %v, want ErrNotExist", err)
	}
}

// TestShardsOnTheirBuckets checks the layout: shard i in bucket i, with a
// header that decodes to the geometry.
func TestShardsOnTheirBuckets(t *testing.T) {
	b, bs := newMem(t, 2, 1, nil)
	defer b.Close()
	data := objectstoretest.Data(1, 1001)
	objectstoretest.Put(t, b, "x", data)
	var ids []uint64
	for i, sb := range bs {
		p := objectstoretest.Get(t, sb, "x")
		h, payload, err := decodeShard(p)
		if err != nil {
			t.Fatalf("shard %d: %v", i, err)
		}
		if int(h.index) != i || h.k != 2 || h.m != 1 || h.objectSize != 1001 || len(payload) != 501 {
			t.Fatalf("shard %d header %+v, payload %d bytes", i, h, len(payload))
		}
		ids = append(ids, h.objectID)
		if i < 2 && !bytes.Equal(payload[:min(501, 1001-i*501)], data[i*501:min(1001, (i+1)*501)]) {
			t.Fatalf("data shard %d does not hold its slice of the object", i)
		}
	}
	if ids[0] != ids[1] || ids[1] != ids[2] {
		t.Fatalf("object ids differ: %x", ids)
	}
}

func TestNewValidates(t *testing.T) {
	mk := func(n int) []objectstore.Bucket {
		bs := make([]objectstore.Bucket, n)
		for i := range bs {
			bs[i] = objectstore.NewMemBucket()
		}
		return bs
	}
	for _, tc := range []struct{ n, k, m int }{{3, 0, 3}, {3, 3, 0}, {3, 2, 2}, {300, 200, 100}} {
		if _, err := New(mk(tc.n), Options{DataShards: tc.k, ParityShards: tc.m}); err == nil {
			t.Errorf("New(%d buckets, RS(%d,%d)) succeeded", tc.n, tc.k, tc.m)
		}
	}
}

func TestHeaderRoundTrip(t *testing.T) {
	h := header{k: 10, m: 4, index: 13, objectSize: 1 << 40, objectID: 0xdeadbeef, objectCRC: 7, payloadCRC: 9}
	p := h.encode()
	got, err := decodeHeader(p[:])
	if err != nil || got != h {
		t.Fatalf("decode(encode(%+v)) = %+v, %v", h, got, err)
	}
	for i := range headerSize {
		q := p
		q[i] ^= 0x10
		if _, err := decodeHeader(q[:]); !errors.Is(err, ErrCorruptShard) {
			t.Fatalf("flipping byte %d: decode = %v, want ErrCorruptShard", i, err)
		}
	}
}

// FuzzDecodeShard feeds arbitrary bytes to the shard decoder: it must not
// panic, and what it accepts must re-encode to the same header.
func FuzzDecodeShard(f *testing.F) {
	h := header{k: 4, m: 2, index: 1, objectSize: 10, objectID: 42}
	payload := []byte("abc")
	h.payloadCRC = crc32c(payload)
	enc := h.encode()
	f.Add(append(enc[:], payload...), false)
	f.Add(enc[:], true)
	f.Add([]byte("TKec"), false)
	f.Add([]byte{}, false)
	f.Fuzz(func(t *testing.T, p []byte, fixCRC bool) {
		if fixCRC && len(p) >= headerSize {
			// Get past the header CRC to exercise the checks behind it.
			p = slices.Clone(p)
			binary.LittleEndian.PutUint32(p[32:], crc32c(p[:32]))
		}
		h, payload, err := decodeShard(p)
		if err != nil {
			if !errors.Is(err, ErrCorruptShard) {
				t.Fatalf("error %v does not wrap ErrCorruptShard", err)
			}
			return
		}
		if re := h.encode(); !bytes.Equal(re[:], p[:headerSize]) {
			t.Fatalf("re-encoded header differs")
		}
		if int64(len(payload)) != h.payloadLen() {
			t.Fatalf("payload of %d bytes, header implies %d", len(payload), h.payloadLen())
		}
	})
}
