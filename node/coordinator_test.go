package node

import (
	"context"
	"testing"
	"time"
)

// TestRequestContextBound: a request is bounded by request_timeout, or by
// its own deadline when that comes first.
func TestRequestContextBound(t *testing.T) {
	n := &Node{cfg: Config{RequestTimeout: time.Second}}
	for _, tc := range []struct {
		name   string
		parent time.Duration // 0: no deadline
		want   time.Duration
	}{
		{"no deadline", 0, time.Second},
		{"an earlier deadline", 100 * time.Millisecond, 100 * time.Millisecond},
		{"a later deadline", time.Hour, time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			parent := context.Background()
			if tc.parent > 0 {
				var cancel context.CancelFunc
				parent, cancel = context.WithTimeout(parent, tc.parent)
				defer cancel()
			}
			start := time.Now()
			ctx, cancel := n.requestContext(parent)
			defer cancel()
			if tc.parent == tc.want && ctx != parent {
				t.Fatal("a second timer for a request whose own deadline comes first")
			}
			dl, ok := ctx.Deadline()
			if !ok {
				t.Fatal("no deadline")
			}
			if got := dl.Sub(start); got > tc.want+50*time.Millisecond || got < tc.want-50*time.Millisecond {
				t.Fatalf("deadline in %v, want %v", got, tc.want)
			}
		})
	}
	// The request's own deadline still ends it.
	parent, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	ctx, done := n.requestContext(parent)
	defer done()
	<-ctx.Done()
	if ctx.Err() != context.DeadlineExceeded {
		t.Fatalf("err %v, want DeadlineExceeded", ctx.Err())
	}
}
