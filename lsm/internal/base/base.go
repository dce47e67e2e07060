// Package base holds the types shared by the engine's internal packages:
// entries, kinds, file numbers and names, the internal iterator contract and
// the corruption error marker.
package base

import (
	"errors"
	"fmt"
)

// Kind says what a mutation does. Part of the on-disk format (WAL records and
// SSTable entries); do not change the values.
type Kind uint8

const (
	// KindDelete is a tombstone: the key is deleted as of the entry's version.
	KindDelete Kind = 0
	// KindSet sets the key to the entry's value as of its version.
	KindSet Kind = 1
	// KindValueRef sets the key to a value stored in a blob file; the
	// entry's Value is an encoded blob reference. It appears only in
	// tables, never in batches or memtables.
	KindValueRef Kind = 2
	// KindMax is the largest valid Kind; decoders reject anything above it.
	KindMax = KindValueRef
)

func (k Kind) String() string {
	switch k {
	case KindDelete:
		return "DEL"
	case KindSet:
		return "SET"
	case KindValueRef:
		return "VALREF"
	}
	return fmt.Sprintf("KIND(%d)", uint8(k))
}

// Entry is one versioned mutation of a key. The engine keeps, for each key,
// the entry with the highest Version; (Key, Version) identifies a mutation.
type Entry struct {
	Key     []byte
	Version uint64
	Kind    Kind
	Value   []byte // nil for KindDelete
}

// Newer reports whether e should win over o for the same key: the higher
// version wins. Two distinct mutations with the same key and version are a
// caller bug; the engine then keeps either one.
func (e *Entry) Newer(o *Entry) bool { return e.Version > o.Version }

// FileNum names a file of the engine (WAL segment, table, manifest).
type FileNum uint64

func (n FileNum) String() string { return fmt.Sprintf("%06d", uint64(n)) }

// ErrCorruption marks errors caused by bad bytes in a file. Test with
// errors.Is(err, ErrCorruption).
var ErrCorruption = errors.New("lsm: corruption")

// CorruptionErrorf returns an error that wraps ErrCorruption with a message
// naming what is corrupt; callers name the file and the offset.
func CorruptionErrorf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrCorruption, fmt.Sprintf(format, args...))
}

// InternalIterator iterates over the entries of one source (a memtable, a
// table, or a merge of several) in increasing key order. Each source holds at
// most one entry per key.
//
// Positioning methods return whether the iterator is at a valid entry. The
// slices of Entry() are valid only until the next positioning call or Close;
// callers that keep them must copy. After a positioning method returns
// false, Error() tells whether iteration ended or failed.
type InternalIterator interface {
	// First positions at the first entry.
	First() bool
	// SeekGE positions at the first entry whose key is >= key.
	SeekGE(key []byte) bool
	// Next moves to the next entry.
	Next() bool
	// Entry returns the current entry. REQUIRES: the iterator is valid.
	Entry() Entry
	// Error returns the error that stopped iteration, if any.
	Error() error
	// Close releases resources and returns Error().
	Close() error
}
