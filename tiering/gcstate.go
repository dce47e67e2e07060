package tiering

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"slices"
	"time"

	"github.com/tierkv/tierkv/lsm/vfs"
)

// The GC state file (TIERGC) keeps, across restarts, when GC first saw
// each object unreferenced, so that a node restarting more often than
// GCDelay still deletes its garbage. Layout (little-endian; part of the
// format; do not change):
//
//	magic "TKgc" (4) | version (1) = 1 | count (uvarint) |
//	(name length (uvarint) | name | unreferenced since, unix ms (8))* | crc32c of everything before (4)
//
// with the names in strictly ascending byte order.
//
// Losing or failing to read it is safe: GC then starts every delay again,
// which only postpones deletions.
const (
	gcStateName    = "TIERGC"
	gcStateMagic   = "TKgc"
	gcStateVersion = 1
	// maxGCStateSize bounds what Open reads.
	maxGCStateSize = 64 << 20
)

func encodeGCState(since map[string]time.Time) []byte {
	names := make([]string, 0, len(since))
	for n := range since {
		names = append(names, n)
	}
	slices.Sort(names) // one encoding per state
	out := []byte(gcStateMagic)
	out = append(out, gcStateVersion)
	out = binary.AppendUvarint(out, uint64(len(names)))
	for _, n := range names {
		out = binary.AppendUvarint(out, uint64(len(n)))
		out = append(out, n...)
		out = binary.LittleEndian.AppendUint64(out, uint64(since[n].UnixMilli()))
	}
	return binary.LittleEndian.AppendUint32(out, crc32.Checksum(out, castagnoli))
}

var errBadGCState = errors.New("tiering: bad GC state")

func decodeGCState(data []byte) (map[string]time.Time, error) {
	bad := func(what string) (map[string]time.Time, error) {
		return nil, fmt.Errorf("%w: %s", errBadGCState, what)
	}
	if len(data) < 4+1+1+4 {
		return bad("too short")
	}
	body := data[:len(data)-4]
	if binary.LittleEndian.Uint32(data[len(data)-4:]) != crc32.Checksum(body, castagnoli) {
		return bad("checksum mismatch")
	}
	if string(body[:4]) != gcStateMagic || body[4] != gcStateVersion {
		return bad("bad magic or version")
	}
	p := body[5:]
	uv := func() (uint64, bool) {
		v, n := binary.Uvarint(p)
		if n <= 0 {
			return 0, false
		}
		p = p[n:]
		return v, true
	}
	cnt, ok := uv()
	if !ok || cnt > uint64(len(p)) {
		return bad("bad count")
	}
	out := make(map[string]time.Time, cnt)
	prev := ""
	for i := uint64(0); i < cnt; i++ {
		n, ok := uv()
		if !ok || n > uint64(len(p)) || uint64(len(p))-n < 8 {
			return bad(fmt.Sprintf("entry %d: bad name length", i))
		}
		name := string(p[:n])
		if i > 0 && name <= prev {
			return bad(fmt.Sprintf("entry %d: names not in ascending order", i))
		}
		prev = name
		out[name] = time.UnixMilli(int64(binary.LittleEndian.Uint64(p[n:])))
		p = p[n+8:]
	}
	if len(p) != 0 {
		return bad("trailing bytes")
	}
	return out, nil
}

// loadGCState reads the GC state of the DB directory: empty if there is
// none, and (with a warning) if it is unreadable.
func (m *Manager) loadGCState() map[string]time.Time {
	path := m.fs.PathJoin(m.opts.Dir, gcStateName)
	data, err := readSmallFile(m.fs, path, maxGCStateSize)
	if errors.Is(err, os.ErrNotExist) {
		return map[string]time.Time{}
	}
	var since map[string]time.Time
	if err == nil {
		since, err = decodeGCState(data)
	}
	if err != nil {
		m.opts.Logger.Warn("tiering: ignoring unreadable GC state; GC delays start again", "file", path, "err", err)
		return map[string]time.Time{}
	}
	return since
}

// saveGCState writes the GC state (synced, atomically).
func (m *Manager) saveGCState(since map[string]time.Time) error {
	path := m.fs.PathJoin(m.opts.Dir, gcStateName)
	if err := vfs.WriteFileAtomic(m.fs, path, encodeGCState(since)); err != nil {
		return fmt.Errorf("tiering: gc: save %s: %w", path, err)
	}
	return nil
}

// readSmallFile reads a whole file of at most limit bytes.
func readSmallFile(fs vfs.FS, path string, limit int64) ([]byte, error) {
	f, err := fs.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s is over %d bytes", path, limit)
	}
	return data, nil
}
