package shards

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	shardv1 "github.com/tierkv/tierkv/api/shard/v1"
	"github.com/tierkv/tierkv/objectstore"
	"github.com/tierkv/tierkv/ring"
)

// ErrNoPeers is returned (wrapped, marked transient) when the ring has no
// node other than Self to place shards on.
var ErrNoPeers = errors.New("node/shards: no peer to place shards on")

// ErrShardTooLarge is returned (wrapped) when a shard is larger than the
// receiving node's bound (ServerOptions.MaxShardSize).
var ErrShardTooLarge = errors.New("node/shards: shard too large")

// ErrPeerBusy is returned (wrapped, marked transient) when a peer refused a
// call because it is at its in-flight bound.
var ErrPeerBusy = errors.New("node/shards: peer busy")

// ErrPeerClosed is returned (wrapped, marked transient) when a peer's shard
// store is shutting down.
var ErrPeerClosed = errors.New("node/shards: peer shutting down")

// ErrChecksum is returned (wrapped, marked transient) when a peer received
// a shard whose CRC32C does not match the one the client computed: the
// bytes were damaged on the way.
var ErrChecksum = errors.New("node/shards: checksum mismatch in transfer")

// ErrProtocol is returned (wrapped) when a peer rejected a malformed
// request stream.
var ErrProtocol = errors.New("node/shards: protocol error")

// ErrUnreachable is wrapped (and marked transient) by errors about a peer
// that could not be reached.
var ErrUnreachable = errors.New("node/shards: peer unreachable")

// reasonError is a server-side error with an exact reason: the putReader
// returns them, and statusOf turns them into a status.
type reasonError struct {
	code   codes.Code
	reason shardv1.ErrorReason
	msg    string
}

func (e *reasonError) Error() string { return e.msg }

func newReasonError(c codes.Code, r shardv1.ErrorReason, format string, args ...any) *reasonError {
	return &reasonError{code: c, reason: r, msg: fmt.Sprintf(format, args...)}
}

// statusOf converts an error of the local store (or of the request stream)
// into a gRPC status error with an ErrorInfo detail.
func statusOf(ctx context.Context, op, name string, err error) error {
	code, reason := codes.Internal, shardv1.ErrorReason_ERROR_REASON_UNSPECIFIED
	var re *reasonError
	switch {
	case errors.As(err, &re):
		code, reason = re.code, re.reason
	case errors.Is(err, context.Canceled) || (ctx.Err() == context.Canceled):
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded) || (ctx.Err() == context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, objectstore.ErrNotExist):
		code, reason = codes.NotFound, shardv1.ErrorReason_ERROR_REASON_NOT_FOUND
	case errors.Is(err, objectstore.ErrInvalidName):
		code, reason = codes.InvalidArgument, shardv1.ErrorReason_ERROR_REASON_INVALID_NAME
	case errors.Is(err, objectstore.ErrInvalidRange):
		code, reason = codes.OutOfRange, shardv1.ErrorReason_ERROR_REASON_INVALID_RANGE
	case errors.Is(err, objectstore.ErrSizeMismatch):
		code, reason = codes.InvalidArgument, shardv1.ErrorReason_ERROR_REASON_SIZE_MISMATCH
	case errors.Is(err, objectstore.ErrClosed):
		code, reason = codes.Unavailable, shardv1.ErrorReason_ERROR_REASON_CLOSED
	case objectstore.IsTransient(err):
		code = codes.Unavailable
	}
	msg := err.Error()
	if name == "" || !strings.Contains(msg, name) {
		msg = fmt.Sprintf("%s %s: %s", op, name, msg)
	}
	st := status.New(code, msg)
	if reason != shardv1.ErrorReason_ERROR_REASON_UNSPECIFIED {
		if d, derr := st.WithDetails(&shardv1.ErrorInfo{Reason: reason}); derr == nil {
			st = d
		}
	}
	return st.Err()
}

// reasonOf returns the ErrorInfo reason attached to st, if any.
func reasonOf(st *status.Status) shardv1.ErrorReason {
	for _, d := range st.Details() {
		if info, ok := d.(*shardv1.ErrorInfo); ok {
			return info.GetReason()
		}
	}
	return shardv1.ErrorReason_ERROR_REASON_UNSPECIFIED
}

// clientError converts the error of a call to node about the stored name
// into an error with objectstore semantics: it names the object and the
// node, wraps the matching sentinel, and is marked transient when retrying
// (or asking another node) may help.
func clientError(ctx context.Context, op string, node ring.NodeID, name string, err error) error {
	wrap := func(sentinel error, transient bool, msg string) error {
		var e error = &remoteError{sentinel: sentinel, msg: fmt.Sprintf("node/shards: %s %s on %s: %s", op, name, node, msg)}
		if transient {
			e = objectstore.MarkTransient(e)
		}
		return e
	}
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("node/shards: %s %s on %s: %w (%v)", op, name, node, cerr, err)
	}
	st, ok := status.FromError(err)
	if !ok {
		// Not from gRPC: an I/O error of ours or of the connection.
		return fmt.Errorf("node/shards: %s %s on %s: %w", op, name, node, err)
	}
	msg := st.Message()
	switch reasonOf(st) {
	case shardv1.ErrorReason_ERROR_REASON_NOT_FOUND:
		return wrap(objectstore.ErrNotExist, false, msg)
	case shardv1.ErrorReason_ERROR_REASON_INVALID_NAME:
		return wrap(objectstore.ErrInvalidName, false, msg)
	case shardv1.ErrorReason_ERROR_REASON_INVALID_RANGE:
		return wrap(objectstore.ErrInvalidRange, false, msg)
	case shardv1.ErrorReason_ERROR_REASON_SIZE_MISMATCH:
		return wrap(objectstore.ErrSizeMismatch, false, msg)
	case shardv1.ErrorReason_ERROR_REASON_PROTOCOL:
		return wrap(ErrProtocol, false, msg)
	case shardv1.ErrorReason_ERROR_REASON_CHECKSUM:
		return wrap(ErrChecksum, true, msg)
	case shardv1.ErrorReason_ERROR_REASON_TOO_LARGE:
		return wrap(ErrShardTooLarge, false, msg)
	case shardv1.ErrorReason_ERROR_REASON_BUSY:
		return wrap(ErrPeerBusy, true, msg)
	case shardv1.ErrorReason_ERROR_REASON_CLOSED:
		return wrap(ErrPeerClosed, true, msg)
	}
	switch st.Code() {
	case codes.NotFound:
		return wrap(objectstore.ErrNotExist, false, msg)
	case codes.Unavailable:
		return wrap(ErrUnreachable, true, "unreachable: "+msg)
	case codes.DeadlineExceeded, codes.Canceled, codes.Aborted:
		// Our context is not done (checked above): the peer or the
		// connection gave up.
		return wrap(nil, true, st.Code().String()+": "+msg)
	}
	return wrap(nil, false, st.Code().String()+": "+msg)
}

// remoteError is a peer's answer: its message, and the sentinel it maps
// to (possibly nil).
type remoteError struct {
	sentinel error
	msg      string
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.sentinel }

// unreachable reports whether err says that a node could not be reached
// (or was too busy to answer), as opposed to an answer.
func unreachable(err error) bool {
	return objectstore.IsTransient(err)
}
