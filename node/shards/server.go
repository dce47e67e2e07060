package shards

import (
	"context"
	"hash/crc32"
	"io"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	shardv1 "github.com/tierkv/tierkv/api/shard/v1"
	"github.com/tierkv/tierkv/objectstore"
)

// DefaultMaxShardSize bounds one shard unless ServerOptions.MaxShardSize
// says otherwise: the largest object erasure accepts by default (256 MiB)
// as one shard (k = 1), plus room for the shard header.
const DefaultMaxShardSize = 256<<20 + 64<<10

// DefaultChunkSize is the payload of one streamed message, in both
// directions. It stays well below gRPC's default 4 MiB message limit and
// below the node's internode limit (max_key_size + max_value_size + 4 KiB
// with the default 1 MiB values).
const DefaultChunkSize = 256 << 10

// DefaultMaxInFlight bounds the calls a Server serves at once.
const DefaultMaxInFlight = 128

// DefaultMaxListBytes bounds the total length of the names in one List
// page (a page of 1000 names of 1024 bytes would exceed the node's message
// limit).
const DefaultMaxListBytes = 256 << 10

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ServerOptions configures NewServer. The zero value is usable.
type ServerOptions struct {
	// MaxShardSize bounds the size of one shard; a larger Put fails with
	// RESOURCE_EXHAUSTED (ErrShardTooLarge on the client) and stores
	// nothing. Default DefaultMaxShardSize.
	MaxShardSize int64
	// ChunkSize is the largest payload of one Get message. It must stay
	// below the clients' maximum receive message size. Default
	// DefaultChunkSize.
	ChunkSize int
	// MaxInFlight bounds the calls served at once; more are refused with
	// RESOURCE_EXHAUSTED (ErrPeerBusy, transient, on the client). Default
	// DefaultMaxInFlight.
	MaxInFlight int
	// MaxListBytes bounds the total length of the names of one List page.
	// Default DefaultMaxListBytes.
	MaxListBytes int
}

func (o *ServerOptions) ensureDefaults() {
	if o.MaxShardSize <= 0 {
		o.MaxShardSize = DefaultMaxShardSize
	}
	if o.ChunkSize <= 0 {
		o.ChunkSize = DefaultChunkSize
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = DefaultMaxInFlight
	}
	if o.MaxListBytes <= 0 {
		o.MaxListBytes = DefaultMaxListBytes
	}
}

// Server serves the Shards service over a local bucket: the shards that
// peers place on this node. Create it with NewServer and register it on
// the node's gRPC server with Register.
type Server struct {
	shardv1.UnimplementedShardsServer
	b        objectstore.Bucket
	o        ServerOptions
	inFlight atomic.Int64
}

// NewServer returns a Server storing shards in b (the node gives it a
// localfs bucket under its data directory). b must implement Put
// atomically, as every objectstore backend does: a shard becomes visible
// only complete. The Server does not close b.
func NewServer(b objectstore.Bucket, o ServerOptions) *Server {
	o.ensureDefaults()
	return &Server{b: b, o: o}
}

// Register registers the Shards service on g (a *grpc.Server).
func (s *Server) Register(g grpc.ServiceRegistrar) {
	shardv1.RegisterShardsServer(g, s)
}

// InFlight returns the number of calls being served.
func (s *Server) InFlight() int { return int(s.inFlight.Load()) }

// admit takes an in-flight slot; the caller must call the returned func.
func (s *Server) admit(op, name string) (func(), error) {
	if n := s.inFlight.Add(1); n > int64(s.o.MaxInFlight) {
		s.inFlight.Add(-1)
		return nil, statusOf(context.Background(), op, name, newReasonError(codes.ResourceExhausted, shardv1.ErrorReason_ERROR_REASON_BUSY,
			"%d calls in flight, the bound is %d", n-1, s.o.MaxInFlight))
	}
	return func() { s.inFlight.Add(-1) }, nil
}

// Put is part of shardv1.ShardsServer.
func (s *Server) Put(stream grpc.ClientStreamingServer[shardv1.PutRequest, shardv1.PutResponse]) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		if err == io.EOF {
			err = newReasonError(codes.InvalidArgument, shardv1.ErrorReason_ERROR_REASON_PROTOCOL, "empty request stream")
		}
		return statusOf(ctx, "put", "", err)
	}
	h := first.GetHeader()
	if h == nil {
		return statusOf(ctx, "put", "", newReasonError(codes.InvalidArgument, shardv1.ErrorReason_ERROR_REASON_PROTOCOL, "the first message is not a header"))
	}
	name := h.GetName()
	done, err := s.admit("put", name)
	if err != nil {
		return err
	}
	defer done()
	size := h.GetSize()
	switch {
	case size < -1:
		return statusOf(ctx, "put", name, newReasonError(codes.InvalidArgument, shardv1.ErrorReason_ERROR_REASON_PROTOCOL, "size %d (want >= 0, or -1 for unknown)", size))
	case size > s.o.MaxShardSize:
		return statusOf(ctx, "put", name, tooLarge(size, s.o.MaxShardSize))
	}
	if err := objectstore.ValidateName(name); err != nil {
		return statusOf(ctx, "put", name, err)
	}
	r := &putReader{stream: stream, max: s.o.MaxShardSize, size: size}
	if err := s.b.Put(ctx, name, r, size); err != nil {
		// Prefer the reader's own error: it has the exact reason.
		if r.err != nil {
			err = r.err
		}
		return statusOf(ctx, "put", name, err)
	}
	if !r.committed {
		// The bucket stopped reading before the commit: only possible
		// for a bucket that ignores size, which no backend does.
		return statusOf(ctx, "put", name, newReasonError(codes.Internal, shardv1.ErrorReason_ERROR_REASON_UNSPECIFIED, "the store did not read the whole stream"))
	}
	return stream.SendAndClose(&shardv1.PutResponse{})
}

func tooLarge(size, limit int64) error {
	return newReasonError(codes.ResourceExhausted, shardv1.ErrorReason_ERROR_REASON_TOO_LARGE, "%v: %d bytes, the bound is %d", ErrShardTooLarge, size, limit)
}

// putReader yields the chunks of a Put stream and returns io.EOF only after
// a valid commit: any other end (an error, a cancelled stream, a stream
// closed without a commit, a bound exceeded, a checksum mismatch) is an
// error, so the bucket's atomic Put stores nothing.
type putReader struct {
	stream    grpc.ClientStreamingServer[shardv1.PutRequest, shardv1.PutResponse]
	max, size int64
	n         int64
	crc       uint32
	buf       []byte
	committed bool
	// err is sticky.
	err error
}

func (r *putReader) fail(err error) error {
	r.err = err
	return err
}

func (r *putReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.committed {
			return 0, io.EOF
		}
		if r.err != nil {
			return 0, r.err
		}
		msg, err := r.stream.Recv()
		if err == io.EOF {
			return 0, r.fail(newReasonError(codes.InvalidArgument, shardv1.ErrorReason_ERROR_REASON_PROTOCOL, "the stream ended without a commit"))
		}
		if err != nil {
			return 0, r.fail(err)
		}
		switch part := msg.GetPart().(type) {
		case *shardv1.PutRequest_Chunk:
			r.n += int64(len(part.Chunk))
			if r.n > r.max {
				return 0, r.fail(tooLarge(r.n, r.max))
			}
			if r.size >= 0 && r.n > r.size {
				return 0, r.fail(newReasonError(codes.InvalidArgument, shardv1.ErrorReason_ERROR_REASON_SIZE_MISMATCH, "%v: more than the announced %d bytes", objectstore.ErrSizeMismatch, r.size))
			}
			r.crc = crc32.Update(r.crc, castagnoli, part.Chunk)
			r.buf = part.Chunk
		case *shardv1.PutRequest_Commit:
			if r.size >= 0 && r.n != r.size {
				return 0, r.fail(newReasonError(codes.InvalidArgument, shardv1.ErrorReason_ERROR_REASON_SIZE_MISMATCH, "%v: %d bytes, announced %d", objectstore.ErrSizeMismatch, r.n, r.size))
			}
			if got := part.Commit.GetCrc32C(); got != r.crc {
				return 0, r.fail(newReasonError(codes.DataLoss, shardv1.ErrorReason_ERROR_REASON_CHECKSUM, "received %d bytes with CRC32C %08x, the client sent %08x", r.n, r.crc, got))
			}
			r.committed = true
		default:
			return 0, r.fail(newReasonError(codes.InvalidArgument, shardv1.ErrorReason_ERROR_REASON_PROTOCOL, "unexpected message after the header"))
		}
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// Get is part of shardv1.ShardsServer.
func (s *Server) Get(req *shardv1.GetRequest, stream grpc.ServerStreamingServer[shardv1.GetResponse]) error {
	ctx := stream.Context()
	name := req.GetName()
	done, err := s.admit("get", name)
	if err != nil {
		return err
	}
	defer done()
	rc, err := s.b.GetRange(ctx, name, req.GetOffset(), req.GetLength())
	if err != nil {
		return statusOf(ctx, "get", name, err)
	}
	defer rc.Close()
	buf := make([]byte, s.o.ChunkSize)
	sent := false
	for {
		n, rerr := fill(rc, buf)
		if n > 0 || !sent {
			// NB: SendMsg serializes the message before it returns, so
			// buf may be reused.
			if err := stream.Send(&shardv1.GetResponse{Chunk: buf[:n]}); err != nil {
				return err
			}
			sent = true
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return statusOf(ctx, "get", name, rerr)
		}
		if err := ctx.Err(); err != nil {
			return statusOf(ctx, "get", name, err)
		}
	}
}

// fill reads into p until it is full or r ends. It returns io.EOF (with
// the bytes read) at the end, and any other error as it is: unlike
// io.ReadFull, an io.ErrUnexpectedEOF from r is never taken for the end.
func fill(r io.Reader, p []byte) (int, error) {
	n := 0
	for n < len(p) {
		m, err := r.Read(p[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// Stat is part of shardv1.ShardsServer.
func (s *Server) Stat(ctx context.Context, req *shardv1.StatRequest) (*shardv1.StatResponse, error) {
	name := req.GetName()
	done, err := s.admit("stat", name)
	if err != nil {
		return nil, err
	}
	defer done()
	a, err := s.b.Attributes(ctx, name)
	if err != nil {
		return nil, statusOf(ctx, "stat", name, err)
	}
	resp := &shardv1.StatResponse{Size: a.Size, Etag: a.ETag, Crc32C: a.CRC32C, HasCrc32C: a.HasCRC32C}
	if !a.LastModified.IsZero() {
		resp.LastModifiedUnixNano = a.LastModified.UnixNano()
	}
	return resp, nil
}

// Delete is part of shardv1.ShardsServer.
func (s *Server) Delete(ctx context.Context, req *shardv1.DeleteRequest) (*shardv1.DeleteResponse, error) {
	name := req.GetName()
	done, err := s.admit("delete", name)
	if err != nil {
		return nil, err
	}
	defer done()
	if err := s.b.Delete(ctx, name); err != nil {
		return nil, statusOf(ctx, "delete", name, err)
	}
	return &shardv1.DeleteResponse{}, nil
}

// List is part of shardv1.ShardsServer.
func (s *Server) List(ctx context.Context, req *shardv1.ListRequest) (*shardv1.ListResponse, error) {
	prefix := req.GetPrefix()
	done, err := s.admit("list", prefix)
	if err != nil {
		return nil, err
	}
	defer done()
	limit := int(req.GetLimit())
	if limit <= 0 || limit > objectstore.DefaultListLimit {
		limit = objectstore.DefaultListLimit
	}
	names, next, err := s.b.List(ctx, prefix, req.GetStartAfter(), limit)
	if err != nil {
		return nil, statusOf(ctx, "list", prefix, err)
	}
	total := 0
	for i, n := range names {
		total += len(n) + 8 // the name and its framing, generously
		if total > s.o.MaxListBytes && i > 0 {
			names, next = names[:i], names[i-1]
			break
		}
	}
	return &shardv1.ListResponse{Names: names, Next: next}, nil
}

// timeFromUnixNano is the inverse of the Stat encoding.
func timeFromUnixNano(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}
