package main

import (
	"context"
	"errors"
	"strings"

	"github.com/tierkv/tierkv/client"
)

// tierkvGRPC talks to a tierkv cluster through the Go client (gRPC),
// round-robin over the nodes on one connection each, as etcd's client does.
type tierkvGRPC struct {
	c      *client.Client
	levels []string
}

func newTierkvGRPC(endpoints string, levels []string) (*tierkvGRPC, error) {
	var addrs []string
	for _, e := range strings.Split(endpoints, ",") {
		if e = strings.TrimSpace(e); e != "" {
			addrs = append(addrs, e)
		}
	}
	c, err := client.New(addrs, nil)
	if err != nil {
		return nil, err
	}
	return &tierkvGRPC{c: c, levels: levels}, nil
}

func (t *tierkvGRPC) Name() string            { return "tierkv" }
func (t *tierkvGRPC) Consistencies() []string { return t.levels }

func level(s string) client.Consistency {
	switch strings.ToUpper(s) {
	case "ONE":
		return client.One
	case "QUORUM":
		return client.Quorum
	case "ALL":
		return client.All
	}
	return client.Default
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
