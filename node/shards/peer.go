package shards

import (
	"context"
	"fmt"
	"hash/crc32"
	"io"

	"google.golang.org/grpc"

	shardv1 "github.com/tierkv/tierkv/api/shard/v1"
	"github.com/tierkv/tierkv/objectstore"
	"github.com/tierkv/tierkv/ring"
)

// peers does raw calls on the shard store of one node, by stored name.
type peers struct {
	conn  func(ring.NodeID) (grpc.ClientConnInterface, error)
	chunk int
}

func (p *peers) client(op string, node ring.NodeID, name string) (shardv1.ShardsClient, error) {
	cc, err := p.conn(node)
	if err != nil {
		return nil, objectstore.MarkTransient(fmt.Errorf("node/shards: %s %s on %s: %w: %w", op, name, node, ErrUnreachable, err))
	}
	return shardv1.NewShardsClient(cc), nil
}

// put streams size bytes of r (size < 0: unknown) to node as name. The
// server makes the shard visible only after the commit message, so any
// failure here (r failing, a size mismatch, cancellation) stores nothing.
func (p *peers) put(ctx context.Context, node ring.NodeID, name string, r io.Reader, size int64) (err error) {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("node/shards: put %s on %s: %w", name, node, err)
	}
	c, err := p.client("put", node, name)
	if err != nil {
		return err
	}
	// Cancelling sctx aborts the stream: the server then stores nothing.
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.Put(sctx)
	if err != nil {
		return clientError(ctx, "put", node, name, err)
	}
	// sendErr turns a Send failure into the stream's status: Send returns
	// io.EOF when the server has already ended the call.
	sendErr := func(err error) error {
		if err == io.EOF {
			_, err = stream.CloseAndRecv()
			if err == nil {
				err = fmt.Errorf("the server ended the stream early")
			}
		}
		return clientError(ctx, "put", node, name, err)
	}
	if err := stream.Send(&shardv1.PutRequest{Part: &shardv1.PutRequest_Header{Header: &shardv1.PutHeader{Name: name, Size: size}}}); err != nil {
		return sendErr(err)
	}
	src := objectstore.SizedReader(objectstore.ContextReader(ctx, r), size)
	buf := make([]byte, p.chunk)
	var crc uint32
	for {
		n, rerr := fill(src, buf)
		if n > 0 {
			crc = crc32.Update(crc, castagnoli, buf[:n])
			// NB: SendMsg serializes the message before it returns, so
			// buf may be reused.
			if err := stream.Send(&shardv1.PutRequest{Part: &shardv1.PutRequest_Chunk{Chunk: buf[:n]}}); err != nil {
				return sendErr(err)
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("node/shards: put %s on %s: %w", name, node, rerr)
		}
	}
	if err := stream.Send(&shardv1.PutRequest{Part: &shardv1.PutRequest_Commit{Commit: &shardv1.PutCommit{Crc32C: crc}}}); err != nil {
		return sendErr(err)
	}
	if _, err := stream.CloseAndRecv(); err != nil {
		return clientError(ctx, "put", node, name, err)
	}
	return nil
}

// get opens the range [off, off+length) of name on node. It waits for the
// first message so that a missing shard or a bad range is reported here,
// not by Read.
func (p *peers) get(ctx context.Context, node ring.NodeID, name string, off, length int64) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("node/shards: get %s on %s: %w", name, node, err)
	}
	c, err := p.client("get", node, name)
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancel(ctx)
	stream, err := c.Get(sctx, &shardv1.GetRequest{Name: name, Offset: off, Length: length})
	if err != nil {
		cancel()
		return nil, clientError(ctx, "get", node, name, err)
	}
	first, err := stream.Recv()
	if err != nil {
		cancel()
		if err == io.EOF {
			err = fmt.Errorf("the server sent no message")
		}
		return nil, clientError(ctx, "get", node, name, err)
	}
	return &getReader{ctx: ctx, node: node, name: name, stream: stream, cancel: cancel, buf: first.GetChunk()}, nil
}

// getReader reads a Get stream. Close cancels the stream.
type getReader struct {
	ctx    context.Context
	node   ring.NodeID
	name   string
	stream grpc.ServerStreamingClient[shardv1.GetResponse]
	cancel context.CancelFunc
	buf    []byte
	err    error
}

func (r *getReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		msg, err := r.stream.Recv()
		switch {
		case err == io.EOF:
			// The server ended the call with OK: the whole range arrived.
			r.err = io.EOF
		case err != nil:
			r.err = clientError(r.ctx, "get", r.node, r.name, err)
		default:
			r.buf = msg.GetChunk()
		}
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

func (r *getReader) Close() error {
	r.cancel()
	if r.err == nil {
		r.err = fmt.Errorf("node/shards: get %s on %s: %w", r.name, r.node, objectstore.ErrClosed)
	}
	return nil
}

func (p *peers) stat(ctx context.Context, node ring.NodeID, name string) (objectstore.Attributes, error) {
	if err := ctx.Err(); err != nil {
		return objectstore.Attributes{}, fmt.Errorf("node/shards: stat %s on %s: %w", name, node, err)
	}
	c, err := p.client("stat", node, name)
	if err != nil {
		return objectstore.Attributes{}, err
	}
	resp, err := c.Stat(ctx, &shardv1.StatRequest{Name: name})
	if err != nil {
		return objectstore.Attributes{}, clientError(ctx, "stat", node, name, err)
	}
	return objectstore.Attributes{
		Size:         resp.GetSize(),
		LastModified: timeFromUnixNano(resp.GetLastModifiedUnixNano()),
		ETag:         resp.GetEtag(),
		CRC32C:       resp.GetCrc32C(),
		HasCRC32C:    resp.GetHasCrc32C(),
	}, nil
}

func (p *peers) del(ctx context.Context, node ring.NodeID, name string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("node/shards: delete %s on %s: %w", name, node, err)
	}
	c, err := p.client("delete", node, name)
	if err != nil {
		return err
	}
	if _, err := c.Delete(ctx, &shardv1.DeleteRequest{Name: name}); err != nil {
		return clientError(ctx, "delete", node, name, err)
	}
	return nil
}

func (p *peers) list(ctx context.Context, node ring.NodeID, prefix, startAfter string, limit int) ([]string, string, error) {
	if err := ctx.Err(); err != nil {
		return nil, "", fmt.Errorf("node/shards: list %s on %s: %w", prefix, node, err)
	}
	c, err := p.client("list", node, prefix)
	if err != nil {
		return nil, "", err
	}
	resp, err := c.List(ctx, &shardv1.ListRequest{Prefix: prefix, StartAfter: startAfter, Limit: int32(min(limit, objectstore.DefaultListLimit))})
	if err != nil {
		return nil, "", clientError(ctx, "list", node, prefix, err)
	}
	return resp.GetNames(), resp.GetNext(), nil
}
