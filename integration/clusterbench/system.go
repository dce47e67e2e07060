package main

import "context"

// system is a key-value store under test.
type system interface {
	// Name is the name in the report.
	Name() string
	// Consistencies lists the consistency levels measured ("" = the
	// system's default).
	Consistencies() []string
	// Put writes value under key, durably at the given consistency.
	Put(ctx context.Context, client int, key string, value []byte, consistency string) error
	// Get reads key at the given consistency.
	Get(ctx context.Context, client int, key string, consistency string) ([]byte, error)
	Close() error
}
