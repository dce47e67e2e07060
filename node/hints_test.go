package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	kvv1 "github.com/tierkv/tierkv/api/kv/v1"
)

// TestHintStoreBounds: hints over hint_max_bytes and hints older than the
// window are dropped and counted; the rest survive a reopen and are
// delivered in version order; a failed delivery keeps them.
func TestHintStoreBounds(t *testing.T) {
	clk := &manualClock{t: time.UnixMilli(1_700_000_000_000)}
	cfg := &Config{Clock: clk, Logger: quietLogger(), HintWindow: time.Hour, HintMaxBytes: 1000, MaxKeySize: 64, MaxValueSize: 1024}
	dir := t.TempDir()
	h, err := openHintStore(dir, cfg)
	if err != nil {
		t.Fatal(err)
	}
	hlc := NewHLC(clk, 1)
	for i := range 20 { // ~60 bytes each: about 16 fit
		h.add("n2", &kvv1.Mutation{Key: fmt.Appendf(nil, "k%02d", i), Value: make([]byte, 40), Version: hlc.Next()})
	}
	stored, dropped := h.pending.Load(), h.dropped.Load()
	if stored == 0 || dropped == 0 || stored+int64(dropped) != 20 || h.bytes.Load() > 1000 {
		t.Fatalf("stored %d, dropped %d, bytes %d (bound 1000)", stored, dropped, h.bytes.Load())
	}
	// A mutation older than the window is not stored.
	old := NewHLC(&manualClock{t: clk.Now().Add(-2 * time.Hour)}, 1).Next()
	h.add("n3", &kvv1.Mutation{Key: []byte("old"), Version: old})
	if h.dropped.Load() != dropped+1 {
		t.Fatal("hint older than the window stored")
	}
	if err := h.close(); err != nil {
		t.Fatal(err)
	}
	if h, err = openHintStore(dir, cfg); err != nil {
		t.Fatal(err)
	}
	defer h.close()
	if h.pending.Load() != stored {
		t.Fatalf("after reopen %d pending, want %d", h.pending.Load(), stored)
	}
	fail := errors.New("down")
	if err := h.replay(context.Background(), "n2", func(context.Context, *kvv1.Mutation) error { return fail }); !errors.Is(err, fail) || h.pending.Load() != stored {
		t.Fatalf("failed replay: %v, %d pending", err, h.pending.Load())
	}
	var last uint64
	var got int64
	if err := h.replay(context.Background(), "n2", func(_ context.Context, m *kvv1.Mutation) error {
		if m.Version <= last || len(m.Value) != 40 {
			return fmt.Errorf("hint %s@%d out of order or corrupt", m.Key, m.Version)
		}
		last = m.Version
		got++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if got != stored || h.pending.Load() != 0 || h.bytes.Load() != 0 || int64(h.delivered.Load()) != stored {
		t.Fatalf("delivered %d of %d; pending %d, bytes %d", got, stored, h.pending.Load(), h.bytes.Load())
	}
	// Hints that expire while waiting are dropped at replay.
	h.add("n2", &kvv1.Mutation{Key: []byte("late"), Version: hlc.Next()})
	clk.Advance(2 * time.Hour)
	d := h.dropped.Load()
	if err := h.replay(context.Background(), "n2", func(context.Context, *kvv1.Mutation) error {
		t.Fatal("expired hint delivered")
		return nil
	}); err != nil || h.dropped.Load() != d+1 || h.pending.Load() != 0 {
		t.Fatalf("expired hint: %v, dropped %d->%d, pending %d", err, d, h.dropped.Load(), h.pending.Load())
	}
}

// FuzzDecodeHint: hint keys and values come from disk; decoding never
// panics and round-trips what hintKey encodes.
func FuzzDecodeHint(f *testing.F) {
	f.Add([]byte(hintKey("n2", &kvv1.Mutation{Key: []byte("k"), Version: 42})), []byte{0, 'v'})
	f.Add([]byte("n2\x00zzzzzzzzzzzzzzzzk"), []byte{1})
	f.Add([]byte("n2"), []byte{})
	f.Fuzz(func(t *testing.T, k, v []byte) {
		m, err := decodeHint("n2", k, v)
		if err != nil {
			return
		}
		if got := hintKey("n2", m); !bytes.EqualFold(got, k) {
			t.Fatalf("round trip %q -> %q", k, got)
		}
	})
}

// FuzzLoadIdentity: node.json comes from disk; bad bytes are an error, never
// a panic.
func FuzzLoadIdentity(f *testing.F) {
	f.Add([]byte(`{"id":"n1","tokens":[1,2],"generation":3}`))
	f.Add([]byte(`{"id":""}`))
	f.Add([]byte(`{`))
	f.Fuzz(func(t *testing.T, b []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, identityFile), b, 0o644); err != nil {
			t.Fatal(err)
		}
		id, found, err := loadIdentity(dir)
		if err == nil && found && id.ID == "" {
			t.Fatal("identity without id accepted")
		}
	})
}
