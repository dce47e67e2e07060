package wal

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/tierkv/tierkv/lsm/internal/base"
	"github.com/tierkv/tierkv/lsm/vfs"
)

// testSegment returns an encoded segment 7 with n records of random sizes
// up to maxSize, their payloads and offsets.
func testSegment(n, maxSize int) ([]byte, [][]byte, []int64) {
	var payloads [][]byte
	for i := range n {
		id := uint64(i)
		payloads = append(payloads, testPayload(id, payloadSize(id, maxSize)))
	}
	data, offs := encodeRecords(7, payloads)
	return data, payloads, offs
}

// TestTornTail cuts a segment at every offset within its last two records
// and checks that replay returns exactly the records before the cut and
// truncates the rest.
func TestTornTail(t *testing.T) {
	data, payloads, offs := testSegment(10, 300)
	fs := newTestFS(t)
	path := segPath(7)
	for cut := offs[len(offs)-2]; cut <= int64(len(data)); cut++ {
		writeFile(t, fs, path, data[:cut])
		got, res, err := replayAll(t, fs, path, 7)
		if err != nil {
			t.Fatalf("cut at %d: %v", cut, err)
		}
		// The records that end at or before the cut survive.
		want, end := 0, int64(0)
		for i := range payloads {
			recEnd := offs[i] + headerSize + int64(len(payloads[i]))
			if recEnd <= cut {
				want, end = i+1, recEnd
			}
		}
		if len(got) != want {
			t.Fatalf("cut at %d: replayed %d records, want %d", cut, len(got), want)
		}
		for i := range got {
			if !bytes.Equal(got[i], payloads[i]) {
				t.Fatalf("cut at %d: record %d differs", cut, i)
			}
		}
		torn := cut != end
		if res.TornTail != torn || res.ValidSize != end || res.TruncatedBytes != cut-end {
			t.Fatalf("cut at %d: Result = %+v, want ValidSize %d, TornTail %t", cut, res, end, torn)
		}
		if sz := fileSize(t, fs, path); sz != end {
			t.Fatalf("cut at %d: file has %d bytes after replay, want %d", cut, sz, end)
		}
	}
}

// TestTailGarbage checks that garbage after the last record is a torn
// tail, and that zeroed (preallocated) space is not.
func TestTailGarbage(t *testing.T) {
	data, payloads, _ := testSegment(5, 300)
	rng := rand.New(rand.NewPCG(3, 4))
	fs := newTestFS(t)
	path := segPath(7)
	for _, tc := range []struct {
		name string
		tail func(n int) []byte
		torn bool
	}{
		{"garbage", func(n int) []byte {
			b := make([]byte, n)
			for i := range b {
				b[i] = byte(rng.Uint32() | 1) // never a zero header
			}
			return b
		}, true},
		{"zeros", func(n int) []byte { return make([]byte, n) }, false},
		// A zero header ends the log even if garbage follows it.
		{"zeros-then-garbage", func(n int) []byte {
			b := make([]byte, n)
			for i := headerSize; i < n; i++ {
				b[i] = byte(rng.Uint32())
			}
			return b
		}, false},
	} {
		for _, n := range []int{1, 5, headerSize - 1, headerSize, headerSize + 1, 100, 5000} {
			if tc.name == "zeros-then-garbage" && n <= headerSize {
				continue
			}
			t.Run(fmt.Sprintf("%s/%d", tc.name, n), func(t *testing.T) {
				tail := tc.tail(n)
				writeFile(t, fs, path, append(append([]byte(nil), data...), tail...))
				got, res, err := replayAll(t, fs, path, 7)
				if err != nil {
					t.Fatal(err)
				}
				if len(got) != len(payloads) || res.ValidSize != int64(len(data)) {
					t.Fatalf("replayed %d records to %d, want %d to %d",
						len(got), res.ValidSize, len(payloads), len(data))
				}
				// A short zero tail cannot be told from a torn header.
				torn := tc.torn || n < headerSize
				if res.TornTail != torn {
					t.Fatalf("TornTail = %t, want %t", res.TornTail, torn)
				}
				wantSize := int64(len(data) + n)
				if torn {
					wantSize = int64(len(data))
				}
				if sz := fileSize(t, fs, path); sz != wantSize {
					t.Fatalf("file has %d bytes, want %d", sz, wantSize)
				}
			})
		}
	}
}

// TestMidLogCorruption flips a bit in every byte of a middle record and
// checks that replay reports corruption at that record's offset.
func TestMidLogCorruption(t *testing.T) {
	data, payloads, offs := testSegment(5, 200)
	fs := newTestFS(t)
	path := segPath(7)
	const mid = 2
	end := offs[mid] + headerSize + int64(len(payloads[mid]))
	for i := offs[mid]; i < end; i++ {
		for _, bit := range []byte{0x01, 0x80, 1 << (i % 8)} {
			bad := append([]byte(nil), data...)
			bad[i] ^= bit
			writeFile(t, fs, path, bad)
			got, res, err := replayAll(t, fs, path, 7)
			if !errors.Is(err, base.ErrCorruption) {
				t.Fatalf("flip %#x at %d: err = %v, want corruption", bit, i, err)
			}
			msg := err.Error()
			if !strings.Contains(msg, "000007.log") || !strings.Contains(msg, fmt.Sprintf("offset %d:", offs[mid])) {
				t.Fatalf("flip %#x at %d: error %q does not name the file and offset %d", bit, i, msg, offs[mid])
			}
			if len(got) != mid || res.ValidSize != offs[mid] {
				t.Fatalf("flip %#x at %d: %d records before the error, valid to %d; want %d to %d",
					bit, i, len(got), res.ValidSize, mid, offs[mid])
			}
			if sz := fileSize(t, fs, path); sz != int64(len(data)) {
				t.Fatalf("flip %#x at %d: corrupt file was truncated to %d", bit, i, sz)
			}
		}
	}
	// The message reads well.
	bad := append([]byte(nil), data...)
	bad[offs[mid]+headerSize] ^= 1
	writeFile(t, fs, path, bad)
	_, _, err := replayAll(t, fs, path, 7)
	want := fmt.Sprintf("lsm: corruption: wal %s: bad record at offset %d: checksum mismatch", path, offs[mid])
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("error %q, want prefix %q", err, want)
	}
}

// TestStaleRecords checks where the log ends when records of another
// segment follow: a valid stale record ends it cleanly, and so does a
// bad record followed by stale ones (a recycled segment).
func TestStaleRecords(t *testing.T) {
	ours, payloads, _ := testSegment(3, 300)
	var stalePayloads [][]byte
	for i := range 4 {
		stalePayloads = append(stalePayloads, testPayload(uint64(100+i), 200))
	}
	stale, _ := encodeRecords(6, stalePayloads)
	fs := newTestFS(t)
	path := segPath(7)
	for _, skip := range []int{0, 1, 50, 213} {
		writeFile(t, fs, path, append(append([]byte(nil), ours...), stale[skip:]...))
		got, res, err := replayAll(t, fs, path, 7)
		if err != nil {
			t.Fatalf("skip %d: %v", skip, err)
		}
		if len(got) != len(payloads) || res.TornTail || res.ValidSize != int64(len(ours)) {
			t.Fatalf("skip %d: %d records, %+v; want %d, no torn tail", skip, len(got), res, len(payloads))
		}
		if sz := fileSize(t, fs, path); sz != int64(len(ours)+len(stale)-skip) {
			t.Fatalf("skip %d: file truncated to %d", skip, sz)
		}
	}
	// Records of this segment after stale data mean corruption.
	tail, _ := encodeRecords(7, [][]byte{[]byte("late")})
	writeFile(t, fs, path, append(append(append([]byte(nil), ours...), stale[1:]...), tail...))
	if _, _, err := replayAll(t, fs, path, 7); !errors.Is(err, base.ErrCorruption) {
		t.Fatalf("err = %v, want corruption", err)
	}
}

// TestReplayErrors checks that callback and I/O errors are returned and
// are not corruption.
func TestReplayErrors(t *testing.T) {
	data, _, offs := testSegment(5, 100)
	mem := newTestFS(t)
	path := segPath(7)
	writeFile(t, mem, path, data)

	boom := errors.New("boom")
	n := 0
	res, err := Replay(mem, path, 7, nil, func([]byte, int64) error {
		if n++; n == 3 {
			return boom
		}
		return nil
	})
	if !errors.Is(err, boom) || errors.Is(err, base.ErrCorruption) || res.Records != 2 ||
		!strings.Contains(err.Error(), fmt.Sprintf("offset %d", offs[2])) {
		t.Fatalf("callback error: %+v, %v", res, err)
	}

	fs := &vfs.ErrorFS{FS: mem, Inject: func(op vfs.Op, name string) bool { return op == vfs.OpRead }}
	if _, err := Replay(fs, path, 7, nil, func([]byte, int64) error { return nil }); !errors.Is(err, vfs.ErrInjected) ||
		errors.Is(err, base.ErrCorruption) {
		t.Fatalf("read error: %v", err)
	}
	if _, err := Replay(mem, segPath(8), 8, nil, func([]byte, int64) error { return nil }); err == nil {
		t.Fatal("replay of a missing segment succeeded")
	}

	// A torn tail whose truncation fails reports the failure.
	writeFile(t, mem, path, data[:len(data)-1])
	fs = &vfs.ErrorFS{FS: mem, Inject: func(op vfs.Op, name string) bool { return op == vfs.OpSync }}
	if _, err := Replay(fs, path, 7, nil, func([]byte, int64) error { return nil }); !errors.Is(err, vfs.ErrInjected) {
		t.Fatalf("failed truncation: %v", err)
	}
}

// TestScanBudget checks that crafted bytes that would make the scan after a
// bad record quadratic are reported as corruption instead.
func TestScanBudget(t *testing.T) {
	data, _, offs := testSegment(3, 100)
	// A bad record, then 1 MiB of headers of this segment every 12 bytes,
	// each claiming a long payload.
	bad := append([]byte(nil), data...)
	bad[offs[2]+headerSize] ^= 1
	var h [headerSize]byte
	encodeHeader(&h, 7, make([]byte, 512<<10))
	for len(bad) < 1<<20 {
		bad = append(bad, h[:]...)
	}
	fs := newTestFS(t)
	writeFile(t, fs, segPath(7), bad)
	_, _, err := replayAll(t, fs, segPath(7), 7)
	if !errors.Is(err, base.ErrCorruption) || !strings.Contains(err.Error(), fmt.Sprintf("offset %d:", offs[2])) {
		t.Fatalf("err = %v, want corruption at offset %d", err, offs[2])
	}
}

// TestScanAcrossWindows checks the scan after a bad record when the records
// it must find lie beyond Replay's read window.
func TestScanAcrossWindows(t *testing.T) {
	big := func(id uint64) []byte { return testPayload(id, readWindow+1000) }
	fs := newTestFS(t)
	path := segPath(7)

	// A flipped bit in a large record; the next record starts beyond the
	// first window.
	data, offs := encodeRecords(7, [][]byte{[]byte("a"), big(1), []byte("c"), big(3)})
	for _, rec := range []int{1, 3} {
		bad := append([]byte(nil), data...)
		bad[offs[rec]+headerSize+readWindow/2] ^= 1
		writeFile(t, fs, path, bad)
		_, res, err := replayAll(t, fs, path, 7)
		if rec == 3 {
			// The last record: a torn tail.
			if err != nil || !res.TornTail || res.ValidSize != offs[3] {
				t.Fatalf("record %d: %+v, %v; want a torn tail at %d", rec, res, err, offs[3])
			}
			continue
		}
		if !errors.Is(err, base.ErrCorruption) || !strings.Contains(err.Error(), fmt.Sprintf("offset %d:", offs[rec])) {
			t.Fatalf("record %d: err = %v, want corruption at %d", rec, err, offs[rec])
		}
	}

	// Garbage spanning several windows, then stale records: a clean end;
	// with a record of this segment after them: corruption.
	ours, _ := encodeRecords(7, [][]byte{[]byte("a"), []byte("b")})
	garbage := testPayload(99, 3*readWindow)
	stale, _ := encodeRecords(6, [][]byte{big(4), []byte("stale")})
	late, _ := encodeRecords(7, [][]byte{big(5)})
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	writeFile(t, fs, path, cat(ours, garbage, stale))
	if got, res, err := replayAll(t, fs, path, 7); err != nil || len(got) != 2 || res.TornTail {
		t.Fatalf("stale after garbage: %d records, %+v, %v", len(got), res, err)
	}
	writeFile(t, fs, path, cat(ours, garbage, stale, garbage, late))
	if _, _, err := replayAll(t, fs, path, 7); !errors.Is(err, base.ErrCorruption) {
		t.Fatalf("late record: err = %v, want corruption", err)
	}
	writeFile(t, fs, path, cat(ours, garbage))
	if got, res, err := replayAll(t, fs, path, 7); err != nil || len(got) != 2 || !res.TornTail {
		t.Fatalf("garbage only: %d records, %+v, %v", len(got), res, err)
	}
}
