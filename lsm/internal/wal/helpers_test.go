package wal

import (
	"encoding/binary"
	"io"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"github.com/tierkv/tierkv/lsm/internal/base"
	"github.com/tierkv/tierkv/lsm/vfs"
)

const testDir = "/db"

// newTestFS returns a MemFS with the directory testDir.
func newTestFS(t testing.TB) *vfs.MemFS {
	t.Helper()
	fs := vfs.NewMemFS()
	if err := fs.MkdirAll(testDir, 0o755); err != nil {
		t.Fatal(err)
	}
	return fs
}

// segPath returns the path of segment num in testDir.
func segPath(num base.FileNum) string { return testDir + "/" + SegmentName(num) }

// testPayload returns the deterministic payload for id: the id followed by
// pseudo-random bytes derived from it, size bytes in total (at least 8).
func testPayload(id uint64, size int) []byte {
	size = max(size, 8)
	p := make([]byte, size)
	binary.LittleEndian.PutUint64(p, id)
	rng := rand.New(rand.NewPCG(id, 0x5eed))
	for i := 8; i < size; i++ {
		p[i] = byte(rng.Uint32())
	}
	return p
}

// payloadSize returns the size of the payload for id, between 8 bytes and
// maxSize.
func payloadSize(id uint64, maxSize int) int {
	return 8 + int(rand.New(rand.NewPCG(id, 0x517e)).IntN(maxSize-7))
}

// checkPayload reports whether p is exactly the payload of the id it
// starts with, for a payload of any size.
func checkPayload(p []byte) (uint64, bool) {
	if len(p) < 8 {
		return 0, false
	}
	id := binary.LittleEndian.Uint64(p)
	return id, string(testPayload(id, len(p))) == string(p)
}

// replayAll replays a segment and returns copies of its payloads.
func replayAll(t testing.TB, fs vfs.FS, path string, num base.FileNum) ([][]byte, Result, error) {
	t.Helper()
	var got [][]byte
	var lastOff int64 = -1
	res, err := Replay(fs, path, num, nil, func(p []byte, off int64) error {
		if off <= lastOff {
			t.Fatalf("replay %s: offset %d after %d", path, off, lastOff)
		}
		lastOff = off
		got = append(got, append([]byte(nil), p...))
		return nil
	})
	if err == nil && res.Records != len(got) {
		t.Fatalf("replay %s: Result.Records = %d, callback saw %d", path, res.Records, len(got))
	}
	return got, res, err
}

// readFile returns the contents of a file.
func readFile(t testing.TB, fs vfs.FS, path string) []byte {
	t.Helper()
	f, err := fs.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	data, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// writeFile creates a file holding data (durably: it is synced and so is
// its directory).
func writeFile(t testing.TB, fs vfs.FS, path string, data []byte) {
	t.Helper()
	f, err := fs.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := vfs.SyncDir(fs, testDir); err != nil {
		t.Fatal(err)
	}
}

// fileSize returns the size of a file.
func fileSize(t testing.TB, fs vfs.FS, path string) int64 {
	t.Helper()
	fi, err := fs.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// waitFor polls cond, yielding the processor between polls, until it holds
// or a generous deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		runtime.Gosched()
	}
}

// encodeRecords returns a segment holding records with the given payloads
// and the offset of each record.
func encodeRecords(logNum uint32, payloads [][]byte) ([]byte, []int64) {
	var buf []byte
	offs := make([]int64, len(payloads))
	for i, p := range payloads {
		offs[i] = int64(len(buf))
		var h [headerSize]byte
		encodeHeader(&h, logNum, p)
		buf = append(buf, h[:]...)
		buf = append(buf, p...)
	}
	return buf, offs
}
