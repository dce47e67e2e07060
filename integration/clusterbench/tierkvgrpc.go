package main

import (
	"context"
	"errors"
	"strings"

	kvv1 "github.com/tierkv/tierkv/api/kv/v1"
	"github.com/tierkv/tierkv/client"
)

// tierkvGRPC talks to a tierkv cluster through the Go client (gRPC),
// round-robin over the nodes on one connection each, as etcd's client does.
type tierkvGRPC struct {
	c      *client.Client
	levels []string
}

func newTierkvGRPC(endpoints string, levels []string, unary bool) (*tierkvGRPC, error) {
	c, err := client.New(splitEndpoints(endpoints), &client.Options{Unary: unary})
	if err != nil {
		return nil, err
	}
	return &tierkvGRPC{c: c, levels: levels}, nil
}

func (t *tierkvGRPC) Name() string            { return "tierkv" }
func (t *tierkvGRPC) Consistencies() []string { return t.levels }

// level maps a -tierkv-levels name to the client's level through the
// protobuf enum's names (ONE, QUORUM, ALL); others are the default.
func level(s string) client.Consistency {
	return client.Consistency(kvv1.Consistency_value[strings.ToUpper(s)])
}

func (t *tierkvGRPC) Put(ctx context.Context, _ int, key string, value []byte, consistency string) error {
	_, err := t.c.Put(ctx, []byte(key), value, client.WithConsistency(level(consistency)))
	return err
}

func (t *tierkvGRPC) Get(ctx context.Context, _ int, key string, consistency string) ([]byte, error) {
	v, _, err := t.c.Get(ctx, []byte(key), client.WithConsistency(level(consistency)))
	if errors.Is(err, client.ErrNotFound) {
		return nil, errNotFound
	}
	return v, err
}

func (t *tierkvGRPC) Close() error { return t.c.Close() }
