package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/tierkv/tierkv/lsm/internal/base"
	"github.com/tierkv/tierkv/lsm/vfs"
)

// Result describes what Replay found in a segment.
type Result struct {
	// Records is the number of valid records passed to the callback.
	Records int
	// ValidSize is the offset just past the last valid record: the size
	// of the log's valid prefix.
	ValidSize int64
	// TornTail reports that the log ended in a bad record with no valid
	// record of the segment after it, the remnant of a write cut short by
	// a crash. Replay then truncated the file to ValidSize. A log that
	// ends at the end of the file, at zeroed (preallocated) space or at
	// stale records of a recycled segment is not torn.
	TornTail bool
	// TruncatedBytes is the number of bytes that truncation dropped; zero
	// unless TornTail.
	TruncatedBytes int64
}

// readWindow is how much Replay reads from the file at a time.
const readWindow = 256 << 10

// recycleWindow bounds how far below the segment's logNum a logNum may be
// for a record found after a bad record to count as a stale record of a
// recycled segment. It keeps the scan for such records cheap: random bytes
// rarely look like a header of a recent segment, so the scan seldom
// computes a checksum. Recycled segments are the most recently obsoleted
// ones, so their numbers are close.
const recycleWindow = 1 << 16

// Replay reads the segment at path, whose file number is num, and calls fn
// for each valid record in order with its payload and the offset of the
// record in the file. The payload is valid only during the call; fn must
// copy what it keeps. If fn returns an error, Replay stops and returns it
// (wrapped).
//
// See the package doc for where the log ends. If it ends in a torn tail,
// Replay truncates the file to Result.ValidSize (through
// fs.OpenReadWrite, followed by a Sync), logs it, and sets
// Result.TornTail. If a record in the middle of the log is bad, Replay
// returns an error wrapping base.ErrCorruption that names path and the
// offset of the bad record; fn has then been called for the records before
// it. I/O errors are returned wrapped, without the corruption mark.
//
// Replay never panics on the contents of the file. It reads the file
// sequentially except after a bad record, where it scans the rest of the
// file for a valid record of this segment, byte by byte.
func Replay(
	fs vfs.FS, path string, num base.FileNum, logger *slog.Logger,
	fn func(payload []byte, offset int64) error,
) (Result, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	f, err := fs.Open(path)
	if err != nil {
		return Result{}, fmt.Errorf("wal: open %s: %w", path, err)
	}
	res, bad, size, err := replayFile(f, path, uint32(num), fn)
	if err != nil {
		_ = f.Close()
		return res, err
	}
	if bad == "" {
		return res, closeFile(f, path)
	}

	// A bad record at res.ValidSize: a torn tail unless a valid record of
	// this segment follows.
	r := segReader{f: f, size: size}
	ours, stale, err := r.scan(res.ValidSize+1, uint32(num))
	if err != nil && !errors.Is(err, errScanBudget) {
		_ = f.Close()
		return res, fmt.Errorf("wal: read %s: %w", path, err)
	}
	if cerr := closeFile(f, path); cerr != nil {
		return res, cerr
	}
	if err != nil {
		return res, base.CorruptionErrorf("wal %s: bad record at offset %d: %s (%v)",
			path, res.ValidSize, bad, err)
	}
	if ours >= 0 {
		return res, base.CorruptionErrorf("wal %s: bad record at offset %d: %s (valid record at offset %d follows)",
			path, res.ValidSize, bad, ours)
	}
	if stale {
		// NB: a recycled segment whose new data ends in the middle of an
		// old record. A write torn over stale records looks the same and
		// is treated the same: it was never acknowledged.
		logger.Debug("wal: log ends at stale records of a recycled segment",
			"file", path, "offset", res.ValidSize)
		return res, nil
	}

	res.TornTail = true
	res.TruncatedBytes = size - res.ValidSize
	logger.Warn("wal: truncating torn tail",
		"file", path, "offset", res.ValidSize, "bytes", res.TruncatedBytes, "reason", bad)
	if err := truncate(fs, path, res.ValidSize); err != nil {
		return res, err
	}
	return res, nil
}

// replayFile reads records from f and calls fn for each valid one. It
// returns a non-empty reason if the log ended in a bad record at
// res.ValidSize, and the file size it used.
func replayFile(
	f vfs.File, path string, logNum uint32, fn func(payload []byte, offset int64) error,
) (res Result, bad string, size int64, err error) {
	fi, err := f.Stat()
	if err != nil {
		return res, "", 0, fmt.Errorf("wal: stat %s: %w", path, err)
	}
	size = fi.Size()
	r := segReader{f: f, size: size}
	var off int64
	for {
		res.ValidSize = off
		if off >= size {
			return res, "", size, nil
		}
		h, err := r.bytes(off, headerSize)
		if err != nil {
			return res, "", size, fmt.Errorf("wal: read %s at offset %d: %w", path, off, err)
		}
		if len(h) < headerSize {
			return res, fmt.Sprintf("short header of %d bytes", len(h)), size, nil
		}
		if isZero(h) {
			return res, "", size, nil // preallocated space
		}
		length := binary.LittleEndian.Uint32(h[4:8])
		if length > MaxPayloadSize {
			return res, fmt.Sprintf("length %d exceeds the maximum of %d", length, MaxPayloadSize), size, nil
		}
		if int64(length) > size-off-headerSize {
			return res, fmt.Sprintf("length %d beyond the end of the file at %d", length, size), size, nil
		}
		rec, err := r.bytes(off, headerSize+int(length))
		if err != nil {
			return res, "", size, fmt.Errorf("wal: read %s at offset %d: %w", path, off, err)
		}
		if len(rec) < headerSize+int(length) {
			return res, fmt.Sprintf("short read of %d of %d bytes", len(rec), headerSize+int(length)), size, nil
		}
		if !recordValid(rec) {
			return res, "checksum mismatch", size, nil
		}
		if binary.LittleEndian.Uint32(rec[8:12]) != logNum {
			return res, "", size, nil // stale record of a recycled segment
		}
		if err := fn(rec[headerSize:], off); err != nil {
			return res, "", size, fmt.Errorf("wal: replay %s at offset %d: %w", path, off, err)
		}
		res.Records++
		off += int64(len(rec))
	}
}

// segReader reads a segment through a window buffer.
type segReader struct {
	f    vfs.File
	size int64 // file size, from Stat
	// buf holds the file's bytes [bufOff, bufOff+len(buf)).
	buf    []byte
	bufOff int64
	// reads counts the reads into buf; slices returned before a read are
	// invalid after it.
	reads int
}

// window returns the file's buffered bytes from off on, at least
// headerSize of them unless the file ends first.
func (r *segReader) window(off int64) ([]byte, error) {
	if off >= r.bufOff && off+headerSize <= r.bufOff+int64(len(r.buf)) {
		return r.buf[off-r.bufOff:], nil
	}
	return r.bytes(off, readWindow)
}

// bytes returns the file's bytes [off, off+n), or fewer if the file ends
// first. The slice is valid until the next call.
func (r *segReader) bytes(off int64, n int) ([]byte, error) {
	if off >= r.bufOff && off+int64(n) <= r.bufOff+int64(len(r.buf)) {
		i := int(off - r.bufOff)
		return r.buf[i : i+n], nil
	}
	want := int64(max(n, readWindow))
	want = max(min(want, r.size-off), 0)
	if int64(cap(r.buf)) < want {
		r.buf = make([]byte, want)
	}
	r.buf = r.buf[:want]
	r.reads++
	got, err := r.f.ReadAt(r.buf, off)
	r.buf, r.bufOff = r.buf[:got], off
	if err != nil && !errors.Is(err, io.EOF) {
		r.buf = r.buf[:0]
		return nil, err
	}
	return r.buf[:min(got, n)], nil
}

// errScanBudget is returned by scan when it gave up; see scanBudget.
var errScanBudget = errors.New("too many candidate records after it to verify")

// scanBudget returns how many bytes scan may checksum when scanning n
// bytes. Real segments need far less: random bytes rarely look like a
// header of this segment. Only crafted bytes (many such headers with long
// lengths) exceed it; without a bound they would make the scan quadratic.
func scanBudget(n int64) int64 { return 4*n + 4<<20 }

// scan looks for valid records in the file's bytes [from, size), trying
// every offset. It returns the offset of the first valid record of the
// segment logNum, or -1 if there is none, and whether it saw a valid
// record of a segment numbered at most recycleWindow below logNum before.
// It returns errScanBudget if the candidates it had to checksum exceeded
// scanBudget.
func (r *segReader) scan(from int64, logNum uint32) (ours int64, stale bool, err error) {
	budget := scanBudget(r.size - from)
	for p := from; p+headerSize <= r.size; {
		win, err := r.window(p)
		if err != nil {
			return -1, stale, err
		}
		if len(win) < headerSize {
			break
		}
		reads := r.reads
		i := 0
		for ; i+headerSize <= len(win); i++ {
			h := win[i : i+headerSize]
			recNum := binary.LittleEndian.Uint32(h[8:12])
			// NB: the subtraction wraps, as log numbers do. A zero
			// header is never valid.
			if recNum != logNum && (stale || logNum-recNum > recycleWindow ||
				(recNum == 0 && binary.LittleEndian.Uint64(h[0:8]) == 0)) {
				continue
			}
			q := p + int64(i)
			length := binary.LittleEndian.Uint32(h[4:8])
			if length > MaxPayloadSize || int64(length) > r.size-q-headerSize {
				continue
			}
			if budget -= headerSize + int64(length); budget < 0 {
				return -1, stale, errScanBudget
			}
			rec, err := r.bytes(q, headerSize+int(length))
			if err != nil {
				return -1, stale, err
			}
			if len(rec) == headerSize+int(length) && recordValid(rec) {
				if recNum == logNum {
					return q, stale, nil
				}
				stale = true
			}
			if r.reads != reads {
				i++ // win is stale: continue from a new window
				break
			}
		}
		p += int64(i)
	}
	return -1, stale, nil
}

// isZero reports whether b holds only zero bytes.
func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// truncate truncates the file at path to size and syncs it.
func truncate(fs vfs.FS, path string, size int64) error {
	f, err := fs.OpenReadWrite(path)
	if err != nil {
		return fmt.Errorf("wal: open %s to truncate torn tail: %w", path, err)
	}
	if err := f.Truncate(size); err != nil {
		_ = f.Close()
		return fmt.Errorf("wal: truncate %s to %d: %w", path, size, err)
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return fmt.Errorf("wal: sync %s after truncation: %w", path, err)
	}
	return closeFile(f, path)
}

// closeFile closes f and wraps the error.
func closeFile(f vfs.File, path string) error {
	if err := f.Close(); err != nil {
		return fmt.Errorf("wal: close %s: %w", path, err)
	}
	return nil
}
