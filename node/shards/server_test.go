package shards

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shardv1 "github.com/tierkv/tierkv/api/shard/v1"
	"github.com/tierkv/tierkv/objectstore"
	"github.com/tierkv/tierkv/objectstore/objectstoretest"
	"github.com/tierkv/tierkv/ring"
)

// oneServer starts one fake node and returns raw access to it.
func oneServer(t *testing.T, newBucket func(testing.TB) objectstore.Bucket, so ServerOptions, chunk int) (*tcluster, *peers, ring.NodeID) {
	t.Helper()
	c := newCluster(t, 1, nil, newBucket, so)
	return c, &peers{conn: c.conn, chunk: chunk}, "n01"
}

func rawClient(t *testing.T, c *tcluster, id ring.NodeID) shardv1.ShardsClient {
	t.Helper()
	cc, err := c.conn(id)
	if err != nil {
		t.Fatal(err)
	}
	return shardv1.NewShardsClient(cc)
}

func readAll(t *testing.T, rc io.ReadCloser, err error) []byte {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	p, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// waitIdle waits until the server serves no call.
func waitIdle(t *testing.T, s *Server) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for s.InFlight() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("server still has %d calls in flight", s.InFlight())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestServerRoundTrip(t *testing.T) {
	for _, bk := range []struct {
		name string
		new  func(testing.TB) objectstore.Bucket
	}{{"mem", memBucket}, {"localfs", localfsBucket}} {
		t.Run(bk.name, func(t *testing.T) {
			// Small chunks in both directions: every shard takes many
			// messages.
			c, p, id := oneServer(t, bk.new, ServerOptions{ChunkSize: 1000}, 777)
			ctx := context.Background()
			for i, size := range []int{0, 1, 776, 777, 778, 1000, 1001, 100_000} {
				name := fmt.Sprintf("o/%d", i)
				data := objectstoretest.Data(uint64(i), size)
				if err := p.put(ctx, id, name, bytes.NewReader(data), int64(len(data))); err != nil {
					t.Fatalf("put %d bytes: %v", size, err)
				}
				// Unknown size too.
				if err := p.put(ctx, id, name+"-u", io.MultiReader(bytes.NewReader(data)), -1); err != nil {
					t.Fatalf("put %d bytes of unknown size: %v", size, err)
				}
				for _, n := range []string{name, name + "-u"} {
					rc, err := p.get(ctx, id, n, 0, -1)
					if got := readAll(t, rc, err); !bytes.Equal(got, data) {
						t.Fatalf("get %s: %d bytes, want %d", n, len(got), len(data))
					}
					a, err := p.stat(ctx, id, n)
					if err != nil || a.Size != int64(size) || (a.HasCRC32C && a.CRC32C != crc32.Checksum(data, castagnoli)) {
						t.Fatalf("stat %s = %+v, %v", n, a, err)
					}
				}
				if size > 10 {
					off, l := int64(size/3), int64(size/2)
					rc, err := p.get(ctx, id, name, off, l)
					if got := readAll(t, rc, err); !bytes.Equal(got, data[off:off+l]) {
						t.Fatalf("ranged get of %s differs", name)
					}
				}
			}
			names, next, err := p.list(ctx, id, "o/", "", 0)
			if err != nil || next != "" || len(names) != 16 || !slices.IsSorted(names) {
				t.Fatalf("list = %q, %q, %v", names, next, err)
			}
			if err := p.del(ctx, id, "o/0"); err != nil {
				t.Fatal(err)
			}
			if err := p.del(ctx, id, "o/0"); err != nil {
				t.Fatalf("second delete: %v", err)
			}
			if _, err := p.get(ctx, id, "o/0", 0, -1); !errors.Is(err, objectstore.ErrNotExist) {
				t.Fatalf("get after delete = %v", err)
			}
			waitIdle(t, c.node(id).srv)
		})
	}
}

func TestServerErrors(t *testing.T) {
	c, p, id := oneServer(t, memBucket, ServerOptions{}, DefaultChunkSize)
	ctx := context.Background()
	if err := p.put(ctx, id, "x", strings.NewReader("0123456789"), 10); err != nil {
		t.Fatal(err)
	}
	check := func(what string, err error, sentinel error, transient bool) {
		t.Helper()
		if !errors.Is(err, sentinel) {
			t.Fatalf("%s = %v, want %v", what, err, sentinel)
		}
		if objectstore.IsTransient(err) != transient {
			t.Fatalf("%s: IsTransient = %v, want %v (%v)", what, !transient, transient, err)
		}
		if !strings.Contains(err.Error(), string(id)) {
			t.Fatalf("%s: error %q does not name the node", what, err)
		}
	}
	_, err := p.get(ctx, id, "missing", 0, -1)
	check("get missing", err, objectstore.ErrNotExist, false)
	if !strings.Contains(err.Error(), "missing") {
		t.Fatalf("error %q does not name the object", err)
	}
	_, err = p.stat(ctx, id, "missing")
	check("stat missing", err, objectstore.ErrNotExist, false)
	_, err = p.get(ctx, id, "x", 11, 1)
	check("get past the end", err, objectstore.ErrInvalidRange, false)
	_, err = p.get(ctx, id, "x", -1, 1)
	check("get at -1", err, objectstore.ErrInvalidRange, false)
	rc, err := p.get(ctx, id, "x", 10, 5)
	if got := readAll(t, rc, err); len(got) != 0 {
		t.Fatalf("get at the end returned %q", got)
	}
	for _, bad := range []string{"../x", "a//b", "/abs", "nul\x00"} {
		check("put "+bad, p.put(ctx, id, bad, strings.NewReader("x"), 1), objectstore.ErrInvalidName, false)
		_, err := p.get(ctx, id, bad, 0, -1)
		check("get "+bad, err, objectstore.ErrInvalidName, false)
		check("delete "+bad, p.del(ctx, id, bad), objectstore.ErrInvalidName, false)
	}
	_, _, err = p.list(ctx, id, "/abs", "", 0)
	check("list /abs", err, objectstore.ErrInvalidName, false)
	// The raw status carries the code and the reason.
	_, err = rawClient(t, c, id).Stat(ctx, &shardv1.StatRequest{Name: "missing"})
	if st, _ := status.FromError(err); st.Code() != codes.NotFound || reasonOf(st) != shardv1.ErrorReason_ERROR_REASON_NOT_FOUND {
		t.Fatalf("raw stat status = %v", err)
	}
	// A size mismatch is found by the client and stores nothing.
	err = p.put(ctx, id, "short", strings.NewReader("abc"), 4)
	check("put short", err, objectstore.ErrSizeMismatch, false)
	err = p.put(ctx, id, "x", strings.NewReader("abcde"), 4)
	check("put long over x", err, objectstore.ErrSizeMismatch, false)
	rc, err = p.get(ctx, id, "x", 0, -1)
	if got := readAll(t, rc, err); string(got) != "0123456789" {
		t.Fatalf("a failed overwrite changed x to %q", got)
	}
	if _, err := p.get(ctx, id, "short", 0, -1); !errors.Is(err, objectstore.ErrNotExist) {
		t.Fatalf("a failed put stored something: %v", err)
	}
	// A stopped node is unreachable: transient.
	c.stop(id)
	_, err = p.get(ctx, id, "x", 0, -1)
	check("get on a stopped node", err, ErrUnreachable, true)
	// A cancelled context is reported as such.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err = p.get(cctx, id, "x", 0, -1)
	if !errors.Is(err, context.Canceled) || objectstore.IsTransient(err) {
		t.Fatalf("get with a cancelled context = %v", err)
	}
}

// rawPut sends msgs on a Put stream and returns the status.
func rawPut(t *testing.T, cl shardv1.ShardsClient, msgs ...*shardv1.PutRequest) error {
	t.Helper()
	s, err := cl.Put(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if err := s.Send(m); err != nil {
			break // the status comes from CloseAndRecv
		}
	}
	_, err = s.CloseAndRecv()
	return err
}

func header(name string, size int64) *shardv1.PutRequest {
	return &shardv1.PutRequest{Part: &shardv1.PutRequest_Header{Header: &shardv1.PutHeader{Name: name, Size: size}}}
}

func chunk(p string) *shardv1.PutRequest {
	return &shardv1.PutRequest{Part: &shardv1.PutRequest_Chunk{Chunk: []byte(p)}}
}

func commit(p string) *shardv1.PutRequest {
	return &shardv1.PutRequest{Part: &shardv1.PutRequest_Commit{Commit: &shardv1.PutCommit{Crc32C: crc32.Checksum([]byte(p), castagnoli)}}}
}

// TestServerPutProtocol: only a complete, committed, checksummed stream
// stores a shard; anything else stores nothing and says why.
func TestServerPutProtocol(t *testing.T) {
	for _, bk := range []struct {
		name string
		new  func(testing.TB) objectstore.Bucket
	}{{"mem", memBucket}, {"localfs", localfsBucket}} {
		t.Run(bk.name, func(t *testing.T) {
			c, p, id := oneServer(t, bk.new, ServerOptions{}, DefaultChunkSize)
			cl := rawClient(t, c, id)
			ctx := context.Background()
			for _, tc := range []struct {
				what   string
				msgs   []*shardv1.PutRequest
				code   codes.Code
				reason shardv1.ErrorReason
			}{
				{"empty stream", nil, codes.InvalidArgument, shardv1.ErrorReason_ERROR_REASON_PROTOCOL},
				{"chunk first", []*shardv1.PutRequest{chunk("ab")}, codes.InvalidArgument, shardv1.ErrorReason_ERROR_REASON_PROTOCOL},
				{"no commit", []*shardv1.PutRequest{header("s", 2), chunk("ab")}, codes.InvalidArgument, shardv1.ErrorReason_ERROR_REASON_PROTOCOL},
				{"no commit, unknown size", []*shardv1.PutRequest{header("s", -1), chunk("ab")}, codes.InvalidArgument, shardv1.ErrorReason_ERROR_REASON_PROTOCOL},
				{"two headers", []*shardv1.PutRequest{header("s", 2), header("s", 2), chunk("ab"), commit("ab")}, codes.InvalidArgument, shardv1.ErrorReason_ERROR_REASON_PROTOCOL},
				{"bad checksum", []*shardv1.PutRequest{header("s", 2), chunk("ab"), commit("ax")}, codes.DataLoss, shardv1.ErrorReason_ERROR_REASON_CHECKSUM},
				{"short", []*shardv1.PutRequest{header("s", 3), chunk("ab"), commit("ab")}, codes.InvalidArgument, shardv1.ErrorReason_ERROR_REASON_SIZE_MISMATCH},
				{"long", []*shardv1.PutRequest{header("s", 1), chunk("ab"), commit("ab")}, codes.InvalidArgument, shardv1.ErrorReason_ERROR_REASON_SIZE_MISMATCH},
				{"negative size", []*shardv1.PutRequest{header("s", -2), chunk("ab"), commit("ab")}, codes.InvalidArgument, shardv1.ErrorReason_ERROR_REASON_PROTOCOL},
				{"bad name", []*shardv1.PutRequest{header("a/../b", 2), chunk("ab"), commit("ab")}, codes.InvalidArgument, shardv1.ErrorReason_ERROR_REASON_INVALID_NAME},
			} {
				err := rawPut(t, cl, tc.msgs...)
				st, _ := status.FromError(err)
				if st.Code() != tc.code || reasonOf(st) != tc.reason {
					t.Fatalf("%s: status %v (reason %v), want %v %v", tc.what, err, reasonOf(st), tc.code, tc.reason)
				}
				if _, err := p.get(ctx, id, "s", 0, -1); !errors.Is(err, objectstore.ErrNotExist) {
					t.Fatalf("%s: stored a shard (%v)", tc.what, err)
				}
			}
			if err := rawPut(t, cl, header("s", 4), chunk("ab"), chunk("cd"), commit("abcd")); err != nil {
				t.Fatalf("a valid stream: %v", err)
			}
			rc, err := p.get(ctx, id, "s", 0, -1)
			if got := readAll(t, rc, err); string(got) != "abcd" {
				t.Fatalf("got %q", got)
			}
			// A failed overwrite leaves the shard as it was.
			if err := rawPut(t, cl, header("s", 2), chunk("xy"), commit("xx")); err == nil {
				t.Fatal("bad checksum accepted")
			}
			rc, err = p.get(ctx, id, "s", 0, -1)
			if got := readAll(t, rc, err); string(got) != "abcd" {
				t.Fatalf("a failed overwrite changed the shard to %q", got)
			}
			waitIdle(t, c.node(id).srv)
		})
	}
}

// TestServerAtomicPut: while a Put streams, readers see the old shard
// (or none), never a part; a cancelled Put stores nothing.
func TestServerAtomicPut(t *testing.T) {
	c, p, id := oneServer(t, localfsBucket, ServerOptions{}, 4096)
	ctx := context.Background()
	cl := rawClient(t, c, id)
	old := objectstoretest.Data(1, 10_000)
	if err := p.put(ctx, id, "a/s", bytes.NewReader(old), int64(len(old))); err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	s, err := cl.Put(sctx)
	if err != nil {
		t.Fatal(err)
	}
	data := objectstoretest.Data(2, 100_000)
	if err := s.Send(header("a/s", int64(len(data)))); err != nil {
		t.Fatal(err)
	}
	if err := s.Send(&shardv1.PutRequest{Part: &shardv1.PutRequest_Chunk{Chunk: data[:50_000]}}); err != nil {
		t.Fatal(err)
	}
	// Mid-stream: the old content, whole.
	rc, err := p.get(ctx, id, "a/s", 0, -1)
	if got := readAll(t, rc, err); !bytes.Equal(got, old) {
		t.Fatalf("mid-stream read returned %d bytes, not the old %d", len(got), len(old))
	}
	cancel()
	waitIdle(t, c.node(id).srv)
	rc, err = p.get(ctx, id, "a/s", 0, -1)
	if got := readAll(t, rc, err); !bytes.Equal(got, old) {
		t.Fatalf("after a cancelled overwrite: %d bytes, want the old %d", len(got), len(old))
	}
	if names := c.storedOn(id); !slices.Equal(names, []string{"a/s"}) {
		t.Fatalf("after a cancelled put the store holds %q", names)
	}
	// Cancelled through the client's reader: the same.
	rctx, rcancel := context.WithCancel(ctx)
	r := &cancelAfter{r: bytes.NewReader(data), n: 30_000, cancel: rcancel}
	if err := p.put(rctx, id, "a/s", r, int64(len(data))); !errors.Is(err, context.Canceled) {
		t.Fatalf("put cancelled midway = %v", err)
	}
	waitIdle(t, c.node(id).srv)
	rc, err = p.get(ctx, id, "a/s", 0, -1)
	if got := readAll(t, rc, err); !bytes.Equal(got, old) {
		t.Fatal("a put cancelled midway changed the shard")
	}
}

// cancelAfter cancels its context once it has yielded n bytes.
type cancelAfter struct {
	r      io.Reader
	n      int
	cancel context.CancelFunc
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	if c.n <= 0 {
		c.cancel()
	}
	if len(p) > c.n && c.n > 0 {
		p = p[:c.n]
	}
	n, err := c.r.Read(p)
	c.n -= n
	return n, err
}

// TestServerBounds: the shard size bound (known and unknown sizes), the
// in-flight bound, and the List page bound.
func TestServerBounds(t *testing.T) {
	const limit = 10_000
	c, p, id := oneServer(t, memBucket, ServerOptions{MaxShardSize: limit, MaxInFlight: 2, MaxListBytes: 200}, 1000)
	ctx := context.Background()
	srv := c.node(id).srv
	data := objectstoretest.Data(3, limit+1)
	if err := p.put(ctx, id, "max", bytes.NewReader(data[:limit]), limit); err != nil {
		t.Fatalf("put at the bound: %v", err)
	}
	for _, size := range []int64{limit + 1, -1} {
		err := p.put(ctx, id, "over", bytes.NewReader(data), size)
		if !errors.Is(err, ErrShardTooLarge) || objectstore.IsTransient(err) {
			t.Fatalf("put of %d bytes (size %d) = %v, want ErrShardTooLarge", len(data), size, err)
		}
		if _, err := p.get(ctx, id, "over", 0, -1); !errors.Is(err, objectstore.ErrNotExist) {
			t.Fatalf("an oversized put stored something: %v", err)
		}
	}
	// A known size over the bound is refused at the header, before any
	// data (were the server waiting for data, this stream without chunks
	// or commit would end in a protocol error).
	err := rawPut(t, rawClient(t, c, id), header("over", limit+1))
	if st, _ := status.FromError(err); st.Code() != codes.ResourceExhausted || reasonOf(st) != shardv1.ErrorReason_ERROR_REASON_TOO_LARGE {
		t.Fatalf("a header announcing %d bytes: %v", limit+1, err)
	}

	// In-flight bound: two open Put streams hold both slots.
	cl := rawClient(t, c, id)
	var cancels []context.CancelFunc
	for i := range 2 {
		sctx, cancel := context.WithCancel(ctx)
		cancels = append(cancels, cancel)
		s, err := cl.Put(sctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Send(header(fmt.Sprintf("held/%d", i), 10)); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for srv.InFlight() != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("in flight = %d, want 2", srv.InFlight())
		}
		time.Sleep(time.Millisecond)
	}
	_, err = p.stat(ctx, id, "max")
	if !errors.Is(err, ErrPeerBusy) || !objectstore.IsTransient(err) {
		t.Fatalf("a call over the in-flight bound = %v, want transient ErrPeerBusy", err)
	}
	for _, cancel := range cancels {
		cancel()
	}
	waitIdle(t, srv)
	if _, err := p.stat(ctx, id, "max"); err != nil {
		t.Fatalf("after the held calls ended: %v", err)
	}

	// List pages are cut by bytes, and pagination still lists all.
	var want []string
	for i := range 40 {
		n := fmt.Sprintf("l/%03d", i)
		want = append(want, n)
		if err := p.put(ctx, id, n, strings.NewReader("x"), 1); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	after, pages := "", 0
	for {
		names, next, err := p.list(ctx, id, "l/", after, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(names) > 200/8 {
			t.Fatalf("a page of %d names exceeds the byte bound", len(names))
		}
		got = append(got, names...)
		pages++
		if next == "" {
			break
		}
		after = next
	}
	if !slices.Equal(got, want) || pages < 2 {
		t.Fatalf("paged list = %q in %d pages", got, pages)
	}
}

// TestServerGetCancel: closing a reader or cancelling its context in the
// middle of a large shard ends the server's stream.
func TestServerGetCancel(t *testing.T) {
	c, p, id := oneServer(t, memBucket, ServerOptions{ChunkSize: 16 << 10}, DefaultChunkSize)
	ctx := context.Background()
	srv := c.node(id).srv
	data := objectstoretest.Data(4, 8<<20)
	if err := p.put(ctx, id, "big", bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	gctx, cancel := context.WithCancel(ctx)
	rc, err := p.get(gctx, id, "big", 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100_000)
	if _, err := io.ReadFull(rc, buf); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf, data[:len(buf)]) {
		t.Fatal("the first bytes differ")
	}
	if srv.InFlight() != 1 {
		t.Fatalf("in flight = %d during the read, want 1", srv.InFlight())
	}
	cancel()
	if _, err := io.ReadAll(rc); !errors.Is(err, context.Canceled) {
		t.Fatalf("read after cancel = %v, want context.Canceled", err)
	}
	rc.Close()
	waitIdle(t, srv)

	// Close without reading to the end.
	rc, err = p.get(ctx, id, "big", 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(rc, buf); err != nil {
		t.Fatal(err)
	}
	rc.Close()
	waitIdle(t, srv)
}
