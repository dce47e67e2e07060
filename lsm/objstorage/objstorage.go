// Package objstorage is the seam through which the engine creates, reads and
// removes its table files. The engine consumes the Provider interface; the
// local implementation stores tables as files of a vfs.FS, and the tiering
// package implements a Provider that also serves tables kept in an object
// store. Reads are positional and whole (no partial reads) so that a remote
// implementation can serve them with ranged GETs.
package objstorage

import (
	"context"
	"fmt"
)

// FileType is the kind of object a Provider stores.
type FileType uint8

// The kinds of objects.
const (
	// FileTypeTable is an SSTable.
	FileTypeTable FileType = iota
	// FileTypeBlob is a blob file: large values referenced by tables.
	FileTypeBlob
)

// Readable is an immutable object opened for reading. It is safe for
// concurrent use.
type Readable interface {
	// ReadAt reads exactly len(p) bytes at off into p. Reading past the end
	// is an error; there are no partial reads.
	ReadAt(ctx context.Context, p []byte, off int64) error
	// Size returns the object's size in bytes.
	Size() int64
	// Close releases the object. REQUIRES: no ReadAt is in progress.
	Close() error
}

// ReadOnce reads exactly len(p) bytes at off of r, like r.ReadAt, for a
// read that will not be repeated soon: a compaction copying the live values
// out of a blob file. A local object is read with pread rather than through
// its memory mapping (localReadable), so that the copy maps none of the
// file's pages into the process: on the virtualized hosts we run on, page
// faults, and the page-table work behind them, cost more than the
// system call.
func ReadOnce(ctx context.Context, r Readable, p []byte, off int64) error {
	if o, ok := r.(interface {
		readOnce(ctx context.Context, p []byte, off int64) error
	}); ok {
		return o.readOnce(ctx, p, off)
	}
	return r.ReadAt(ctx, p, off)
}

// Writable is an object being written. It is not safe for concurrent use.
// Data becomes visible to Open, and durable, only once Finish returns nil.
type Writable interface {
	// Write appends p. The Writable does not retain p.
	Write(p []byte) error
	// Finish makes the object durable and visible under its name.
	Finish() error
	// Abort discards the object. It may be called after a failed Write or
	// Finish; it is a no-op after a successful Finish.
	Abort()
}

// Provider stores the engine's objects by file number. Its methods are safe
// for concurrent use.
type Provider interface {
	// Create starts a new object. The object is not visible until Finish.
	Create(ctx context.Context, typ FileType, num uint64) (Writable, error)
	// Open opens a finished object. A missing object is an error that
	// wraps os.ErrNotExist.
	Open(ctx context.Context, typ FileType, num uint64) (Readable, error)
	// Remove deletes an object. Removing a missing object is not an error.
	Remove(typ FileType, num uint64) error
	// List returns the numbers of the finished objects of a type.
	List(typ FileType) ([]uint64, error)
}

// ObjectName is the local file name of an object: "000042.sst".
func ObjectName(typ FileType, num uint64) string {
	switch typ {
	case FileTypeTable:
		return fmt.Sprintf("%06d.sst", num)
	case FileTypeBlob:
		return fmt.Sprintf("%06d.blob", num)
	}
	return fmt.Sprintf("%06d.obj%d", num, typ)
}
