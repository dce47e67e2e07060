package wal

import (
	"errors"
	"testing"

	"github.com/tierkv/tierkv/lsm/internal/base"
)

// FuzzReplay replays arbitrary bytes as segment 7. Replay must not panic;
// it returns records or a corruption error, truncates only torn tails, and
// a second replay of what it left finds the same records and a clean end.
//
//	go test -run='^$' -fuzz=FuzzReplay -fuzztime=1m ./lsm/internal/wal/
func FuzzReplay(f *testing.F) {
	data, _, offs := testSegment(4, 64)
	f.Add(data)
	f.Add(data[:len(data)-3])
	f.Add(append(append([]byte(nil), data...), make([]byte, 20)...))
	flipped := append([]byte(nil), data...)
	flipped[offs[1]+headerSize] ^= 1
	f.Add(flipped)
	empty, _ := encodeRecords(7, [][]byte{{}, {}})
	f.Add(empty)
	stale, _ := encodeRecords(6, [][]byte{[]byte("stale record one"), []byte("stale record two")})
	f.Add(append(append([]byte(nil), data[:offs[2]]...), stale[3:]...))
	f.Add([]byte{})

	f.Fuzz(func(t *testing.T, data []byte) {
		fs := newTestFS(t)
		path := segPath(7)
		writeFile(t, fs, path, data)
		got, res, err := replayAll(t, fs, path, 7)
		if err != nil {
			if !errors.Is(err, base.ErrCorruption) {
				t.Fatalf("non-corruption error: %v", err)
			}
			if sz := fileSize(t, fs, path); sz != int64(len(data)) {
				t.Fatalf("corrupt file was modified: %d bytes, had %d", sz, len(data))
			}
			return
		}
		if res.ValidSize > int64(len(data)) || res.Records != len(got) {
			t.Fatalf("Result %+v for %d bytes, %d records", res, len(data), len(got))
		}
		var n int64
		for _, p := range got {
			n += headerSize + int64(len(p))
		}
		if n != res.ValidSize {
			t.Fatalf("records span %d bytes, ValidSize %d", n, res.ValidSize)
		}
		wantSize := int64(len(data))
		if res.TornTail {
			wantSize = res.ValidSize
		}
		if sz := fileSize(t, fs, path); sz != wantSize || res.TruncatedBytes != int64(len(data))-wantSize {
			t.Fatalf("file has %d bytes, want %d; Result %+v", sz, wantSize, res)
		}
		again, res2, err := replayAll(t, fs, path, 7)
		if err != nil || len(again) != len(got) || res2.TornTail || res2.ValidSize != res.ValidSize {
			t.Fatalf("second replay: %d records, %+v, %v; first %d, %+v", len(again), res2, err, len(got), res)
		}
	})
}
