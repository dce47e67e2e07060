package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Errors returned by the coordinator. Each maps to one HTTP status and one
// gRPC code (httpStatus, grpcCode); test with errors.Is.
var (
	// ErrInvalidArgument marks bad input (empty, oversized-by-protocol or
	// non-UTF-8 key, unknown consistency level, malformed body). Nothing
	// was changed. HTTP 400, gRPC INVALID_ARGUMENT.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrTooLarge marks a key or value over the configured bound. Nothing
	// was changed. HTTP 413, gRPC RESOURCE_EXHAUSTED.
	ErrTooLarge = errors.New("too large")
	// ErrOverloaded marks a request refused because a bound was reached
	// (in-flight requests, a write stall). HTTP 429, gRPC
	// RESOURCE_EXHAUSTED.
	ErrOverloaded = errors.New("overloaded")
	// ErrUnavailable marks a request that could not reach enough live
	// replicas; the message says how many were needed and how many
	// answered. HTTP 503, gRPC UNAVAILABLE.
	ErrUnavailable = errors.New("unavailable")
	// ErrTimeout marks a request whose deadline passed before enough
	// replicas answered. HTTP 504, gRPC DEADLINE_EXCEEDED.
	ErrTimeout = errors.New("timeout")
	// ErrNotFound is returned by Get for a key that is absent or whose
	// newest version is a tombstone. HTTP 404, gRPC NOT_FOUND.
	ErrNotFound = errors.New("not found")
	// ErrClosed is returned once the node is shutting down. HTTP 503, gRPC
	// UNAVAILABLE.
	ErrClosed = errors.New("node is shutting down")
)

func errorf(kind error, format string, args ...any) error {
	return fmt.Errorf("%w: %s", kind, fmt.Sprintf(format, args...))
}

// errorKind returns the sentinel err is marked with, defaulting to nil.
func errorKind(err error) error {
	for _, k := range []error{ErrInvalidArgument, ErrTooLarge, ErrOverloaded, ErrUnavailable, ErrTimeout, ErrNotFound, ErrClosed} {
		if errors.Is(err, k) {
			return k
		}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return ErrTimeout
	}
	return nil
}

func httpStatus(err error) int {
	switch errorKind(err) {
	case ErrInvalidArgument:
		return http.StatusBadRequest
	case ErrTooLarge:
		return http.StatusRequestEntityTooLarge
	case ErrOverloaded:
		return http.StatusTooManyRequests
	case ErrUnavailable, ErrClosed:
		return http.StatusServiceUnavailable
	case ErrTimeout:
		return http.StatusGatewayTimeout
	case ErrNotFound:
		return http.StatusNotFound
	}
	if errors.Is(err, context.Canceled) {
		return 499 // client closed request (nginx's convention)
	}
	return http.StatusInternalServerError
}

func grpcCode(err error) codes.Code {
	switch errorKind(err) {
	case ErrInvalidArgument:
		return codes.InvalidArgument
	case ErrTooLarge, ErrOverloaded:
		return codes.ResourceExhausted
	case ErrUnavailable, ErrClosed:
		return codes.Unavailable
	case ErrTimeout:
		return codes.DeadlineExceeded
	case ErrNotFound:
		return codes.NotFound
	}
	if errors.Is(err, context.Canceled) {
		return codes.Canceled
	}
	return codes.Internal
}

// toStatus converts a coordinator error to a gRPC status error.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok && errorKind(err) == nil {
		return err
	}
	return status.Error(grpcCode(err), err.Error())
}

// fromStatus converts a replica's gRPC error back into a node error.
func fromStatus(err error) error {
	s, ok := status.FromError(err)
	if !ok {
		return err
	}
	switch s.Code() {
	case codes.InvalidArgument:
		return errorf(ErrInvalidArgument, "%s", s.Message())
	case codes.ResourceExhausted:
		return errorf(ErrOverloaded, "%s", s.Message())
	case codes.DeadlineExceeded:
		return errorf(ErrTimeout, "%s", s.Message())
	case codes.Unavailable:
		return errorf(ErrUnavailable, "%s", s.Message())
	}
	return err
}
