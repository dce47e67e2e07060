package lsm

import (
	"errors"

	"github.com/tierkv/tierkv/lsm/internal/base"
)

var (
	// ErrNotFound is returned by Get for a key that is absent or deleted.
	ErrNotFound = errors.New("lsm: not found")
	// ErrCorruption marks errors caused by bad bytes on disk; the message
	// names the file and the offset. Test with errors.Is.
	ErrCorruption = base.ErrCorruption
	// ErrClosed is returned by operations on a closed DB.
	ErrClosed = errors.New("lsm: closed")
	// ErrInvalidInput is wrapped by errors for mutations that break a
	// bound (empty or oversized key, oversized value, invalid UTF-8 key,
	// version 0). Nothing of a rejected batch is applied.
	ErrInvalidInput = errors.New("lsm: invalid input")
	// ErrWriteStall is returned when a write waited MaxWriteStall for
	// flushes or compactions to catch up and they did not. Nothing of the
	// batch is applied; the caller should back off and retry.
	ErrWriteStall = errors.New("lsm: write stalled: flushes or compactions are behind")
)
