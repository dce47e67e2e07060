// Package wal implements the engine's write-ahead log: a sequence of opaque
// payloads (the DB encodes its batches into them) stored as records in
// segment files, written with group commit.
//
// # Segments
//
// A segment is one file named SegmentName(num), "000007.log" for num 7, in
// the DB directory. A Writer appends to exactly one segment; the DB rotates
// to a new segment by closing the Writer and creating another, either a new
// file (Create) or a renamed obsolete segment that is overwritten from
// offset 0 (CreateRecycled). Overwriting blocks that already belong to the
// file lets fdatasync skip the file-size metadata update, which makes synced
// appends markedly faster on common file systems.
//
// # Record format
//
// A segment is a sequence of records, each laid out as follows; all integers
// are little-endian. The layout is part of the on-disk format; do not change
// it.
//
//	+-----------+-------------+-------------+---------------------------+
//	| crc32c    | length      | logNum      | payload                   |
//	| 4 bytes   | 4 bytes     | 4 bytes     | length bytes              |
//	+-----------+-------------+-------------+---------------------------+
//	0           4             8             12                12+length
//	            |<------------ covered by crc32c ------------------------>|
//
// The fields:
//
//   - crc32c is the CRC-32C (Castagnoli) checksum of the bytes that follow
//     it in the record, in on-disk order: length, logNum, then the payload.
//     It is not masked.
//   - length is the payload length in bytes, at most MaxPayloadSize.
//   - logNum is the low 32 bits of the segment's file number. A recycled
//     segment still holds records of the segment it used to be beyond the
//     end of the new data; their logNum differs, so a reader stops there
//     instead of replaying stale records.
//
// Records are packed back to back with no padding and no block structure.
//
// # End of the log
//
// Replay reads records from offset 0 and stops at the first position that
// does not hold a valid record of the segment:
//
//   - the end of the file;
//   - a header of 12 zero bytes (space that was preallocated but never
//     written);
//   - a record whose checksum is valid but whose logNum is another
//     segment's (stale data of a recycled segment);
//   - a bad record: short header, oversized length, length beyond the end of
//     the file, or checksum mismatch.
//
// A bad record is a torn tail, the remnant of a write that a crash cut
// short, if no valid record of this segment follows it anywhere in the
// file: Replay truncates the file to the end of the last valid record and
// reports it in Result. If a valid record of this segment does follow, a
// record in the middle of the log was damaged, and Replay returns an error
// that wraps base.ErrCorruption and names the file and the offset of the
// bad record. If only valid records of a recent older segment (at most
// 65536 numbers below) follow, the bad record is where the new data of a
// recycled segment ends inside an old record: a clean end, not a torn tail.
//
// # Usage
//
//	w, err := wal.Create(wal.Options{FS: fs, Dir: dir}, num)
//	if err != nil { ... }
//	// Safe for concurrent use; concurrent synced appends share one fdatasync.
//	if err := w.Append(payload, true /* sync */); err != nil {
//		// The Writer is failed for good; the DB must stop accepting writes.
//	}
//	err = w.Close()
//
//	// During recovery:
//	res, err := wal.Replay(fs, fs.PathJoin(dir, wal.SegmentName(num)), num, logger,
//		func(payload []byte, offset int64) error {
//			return applyBatch(payload) // payload is valid only during the call
//		})
package wal
