package lsm

import "time"

// TableInfo describes a table for EventListener and DB.Tables.
type TableInfo struct {
	Level      int
	FileNum    uint64
	Size       uint64
	Smallest   []byte
	Largest    []byte
	MinVersion uint64
	MaxVersion uint64
	NumEntries uint64
	// NumTombstones counts deletion entries.
	NumTombstones uint64
	// Created is when the table was written.
	Created time.Time
}

// BlobInfo describes a blob file for EventListener and DB.BlobFiles.
type BlobInfo struct {
	FileNum    uint64
	Size       uint64
	NumValues  uint64
	ValueBytes uint64
	// LiveBytes are the value bytes that live tables still reference.
	LiveBytes uint64
	Created   time.Time
}

// FlushInfo describes a finished flush.
type FlushInfo struct {
	Output   TableInfo
	Duration time.Duration
}

// CompactionInfo describes a finished compaction.
type CompactionInfo struct {
	Reason      string
	Inputs      []TableInfo
	Outputs     []TableInfo
	OutputLevel int
	// TombstonesPurged counts tombstones dropped after their grace period.
	TombstonesPurged uint64
	// BlobBytesRewritten counts value bytes copied out of blob files that
	// were mostly garbage.
	BlobBytesRewritten uint64
	Duration           time.Duration
}

// EventListener receives engine events. Every field is optional. Callbacks
// run on engine goroutines, possibly concurrently, and must not call back
// into the DB; tiering uses TableCreated and TableDeleted to learn about
// tables, and the node layer turns the rest into logs and metrics.
type EventListener struct {
	// TableCreated is called after a table is durable and installed.
	TableCreated func(TableInfo)
	// TableDeleted is called after an obsolete table is removed.
	TableDeleted func(TableInfo)
	// BlobCreated is called after a blob file is durable and installed;
	// BlobDeleted after an obsolete one is removed.
	BlobCreated func(BlobInfo)
	BlobDeleted func(BlobInfo)
	// FlushEnd is called after a memtable flush is installed.
	FlushEnd func(FlushInfo)
	// CompactionEnd is called after a compaction is installed.
	CompactionEnd func(CompactionInfo)
	// WriteStallBegin and WriteStallEnd bracket a write stall.
	WriteStallBegin func(reason string)
	WriteStallEnd   func()
	// WALSync is called after each sync of the write-ahead log with how
	// long it took (one per group commit; the WAL's writer goroutine runs
	// it, so it must be quick).
	WALSync func(time.Duration)
	// BackgroundError is called when a flush or compaction fails.
	BackgroundError func(error)
}
