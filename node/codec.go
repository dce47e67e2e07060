package node

import (
	"context"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	protoapi "google.golang.org/protobuf/proto"

	kvv1 "github.com/tierkv/tierkv/api/kv/v1"
)

// Malformed protobuf requests get INVALID_ARGUMENT (DESIGN.md invariant 8).
// grpc-go turns every codec error into INTERNAL before a handler runs, so
// the server's codec does not fail for the requests of unary methods: it
// resets the message, remembers the decoding error for it, and the unary
// interceptor answers INVALID_ARGUMENT without calling the handler. So does
// KV.Session for its messages (session.go). Other messages (the internode
// streams, whose handlers read them) fail as grpc-go does.

// strictCodec is the server's protobuf codec.
type strictCodec struct {
	encoding.CodecV2
	bad *sync.Map // request message → its decoding error
}

func newStrictCodec() strictCodec {
	return strictCodec{CodecV2: encoding.GetCodecV2(proto.Name), bad: new(sync.Map)}
}

// checkedRequest reports whether v is the request of a unary method, which
// the interceptor sees, or a session's message.
func checkedRequest(v any) bool {
	switch v.(type) {
	case *kvv1.SessionRequest,
		*kvv1.PutRequest, *kvv1.GetRequest, *kvv1.DeleteRequest, *kvv1.TopologyRequest,
		*kvv1.ApplyRequest, *kvv1.ReadRequest,
		*kvv1.PrepareRequest, *kvv1.HashesRequest, *kvv1.LeafDigestsRequest,
		*kvv1.FetchRequest, *kvv1.PushRequest, *kvv1.IngestRequest:
		return true
	}
	return false
}

// Unmarshal is part of the encoding.CodecV2 interface.
func (c strictCodec) Unmarshal(data mem.BufferSlice, v any) error {
	err := c.CodecV2.Unmarshal(data, v)
	if err == nil || !checkedRequest(v) {
		return err
	}
	protoapi.Reset(v.(protoapi.Message))
	c.bad.Store(v, err)
	return nil
}

// interceptor refuses a request whose decoding failed.
func (c strictCodec) interceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err, ok := c.bad.LoadAndDelete(req); ok {
		return nil, status.Errorf(codes.InvalidArgument, "malformed %s request: %v", info.FullMethod, err)
	}
	return handler(ctx, req)
}
