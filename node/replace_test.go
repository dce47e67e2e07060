package node

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestReplaceRestoresAndCatchesUp: n3 is lost (no final backup, data
// directory deleted); a replacement with --replace n3 restores n3's engine
// from its manifest backup in the shared bucket, serves the old keys from
// remote tables, and streams from its peers exactly the writes newer than
// the backup, deletes included.
func TestReplaceRestoresAndCatchesUp(t *testing.T) {
	bucket := t.TempDir()
	replacing := false
	c := startCluster(t, 3, func(cfg *Config) {
		cfg.ObjectStore.Dir = filepath.Join(bucket, "shared")
		cfg.ReplaceLookback = time.Millisecond // no slack: the count below is exact
		cfg.ReplaceSkipHydrate = true          // old keys stay remote
		if replacing && cfg.ID == "n3" {
			cfg.Replace = "n3"
			cfg.ID = ""
		}
	})
	ctx := ctxT(t)
	const old, recent, deleted = 300, 100, 20
	for k := range old {
		if _, err := c.nodes[k%3].Put(ctx, fmt.Appendf(nil, "old%03d", k), fmt.Appendf(nil, "o%d", k), All, 0); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(20 * time.Millisecond) // the backup's time is after every old version
	if err := c.nodes[2].Backup(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	for k := range recent {
		if _, err := c.nodes[k%3].Put(ctx, fmt.Appendf(nil, "new%03d", k), fmt.Appendf(nil, "n%d", k), All, 0); err != nil {
			t.Fatal(err)
		}
	}
	for k := range deleted {
		if _, err := c.nodes[k%3].Delete(ctx, fmt.Appendf(nil, "old%03d", k), All, 0); err != nil {
			t.Fatal(err)
		}
	}
	// Lose n3: no final backup, no data directory.
	c.nodes[2].skipFinalBackupForTesting.Store(true)
	c.stop(2)
	if err := os.RemoveAll(c.dirs[2]); err != nil {
		t.Fatal(err)
	}
	c.waitDown(2)
	replacing = true
	c.start(2)
	n3 := c.nodes[2]
	if n3.ID() != "n3" {
		t.Fatalf("replacement id %q", n3.ID())
	}
	c.waitReady()
	st := n3.ReplaceStatus()
	if st == nil || !st.BackupFound || st.RemoteObjects == 0 {
		t.Fatalf("replace status %+v: want a restored backup with remote objects", st)
	}
	waitFor(t, 20*time.Second, "catch-up done", func() bool {
		s := n3.ReplaceStatus()
		return s.Phase == phaseDone || s.Phase == phaseFailed
	})
	st = n3.ReplaceStatus()
	t.Logf("replace status: %+v", *st)
	if st.Phase != phaseDone || st.StreamsDone != 2 {
		t.Fatalf("catch-up ended in %s (%d of %d streams): %s", st.Phase, st.StreamsDone, st.StreamsTotal, st.LastError)
	}
	// Both peers stream exactly the writes newer than the backup.
	if want := int64(2 * (recent + deleted)); st.KeysFromPeers != want {
		t.Errorf("keys from peers %d, want %d (recent writes and deletes, from each of 2 peers)", st.KeysFromPeers, want)
	}
	// n3 alone: old keys from the restored (remote) tables, recent ones and
	// the tombstones from the catch-up.
	for k := range old {
		key := fmt.Appendf(nil, "old%03d", k)
		e, err := n3.ReadLocalForTesting(key)
		if k < deleted {
			if err != nil || !e.Deleted {
				t.Fatalf("n3 alone: %s = %q deleted=%v, %v; want a tombstone", key, e.Value, e.Deleted, err)
			}
			continue
		}
		if err != nil || !bytes.Equal(e.Value, fmt.Appendf(nil, "o%d", k)) {
			t.Fatalf("n3 alone: %s = %q, %v", key, e.Value, err)
		}
	}
	for k := range recent {
		key := fmt.Appendf(nil, "new%03d", k)
		if e, err := n3.ReadLocalForTesting(key); err != nil || !bytes.Equal(e.Value, fmt.Appendf(nil, "n%d", k)) {
			t.Fatalf("n3 alone: %s = %q, %v", key, e.Value, err)
		}
	}
	if tm := n3.tier.Metrics(); tm.RemoteObjects == 0 || tm.BytesDownloaded == 0 {
		t.Errorf("tiering after the reads: %d remote objects, %d bytes downloaded; the old keys should come from the bucket", tm.RemoteObjects, tm.BytesDownloaded)
	}
	if _, err := os.Stat(filepath.Join(c.dirs[2], replaceFile)); !os.IsNotExist(err) {
		t.Errorf("%s left after the catch-up: %v", replaceFile, err)
	}
	// A restart is an ordinary restart (no second restore).
	c.stop(2)
	c.start(2)
	c.waitReady()
	if s := c.nodes[2].ReplaceStatus(); s != nil {
		t.Errorf("restarted replacement reports a replacement: %+v", s)
	}
}

// TestReplaceUnknownNode: --replace of an id no member knows fails with a
// clear error and does not join.
func TestReplaceUnknownNode(t *testing.T) {
	c := startCluster(t, 1, nil)
	cfg := c.config(0)
	cfg.ID = ""
	cfg.Replace = "ghost"
	cfg.DataDir = t.TempDir()
	cfg.GossipAddr, cfg.GRPCAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.Seeds = []string{c.nodes[0].GossipAddr()}
	n, err := Open(cfg)
	if err == nil {
		n.Close()
		t.Fatal("replacing an unknown node succeeded")
	}
	t.Logf("error: %v", err)
}

// TestReplaceFromPeers: with replace_from_peers the replacement restores
// nothing from the bucket and streams every key once, from one replica per
// range.
func TestReplaceFromPeers(t *testing.T) {
	replacing := false
	c := startCluster(t, 3, func(cfg *Config) {
		if replacing && cfg.ID == "n3" {
			cfg.Replace, cfg.ID, cfg.ReplaceFromPeers = "n3", "", true
		}
	})
	ctx := ctxT(t)
	const keys, deleted = 300, 30
	for k := range keys {
		if _, err := c.nodes[k%3].Put(ctx, fmt.Appendf(nil, "k%03d", k), fmt.Appendf(nil, "v%d", k), All, 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.nodes[2].Backup(ctx); err != nil { // ignored by the replacement
		t.Fatal(err)
	}
	for k := range deleted {
		if _, err := c.nodes[0].Delete(ctx, fmt.Appendf(nil, "k%03d", k), All, 0); err != nil {
			t.Fatal(err)
		}
	}
	c.nodes[2].skipFinalBackupForTesting.Store(true)
	c.stop(2)
	if err := os.RemoveAll(c.dirs[2]); err != nil {
		t.Fatal(err)
	}
	c.waitDown(2)
	replacing = true
	c.start(2)
	c.waitReady()
	n3 := c.nodes[2]
	waitFor(t, 20*time.Second, "streamed", func() bool {
		s := n3.ReplaceStatus()
		return s.Phase == phaseDone || s.Phase == phaseFailed
	})
	st := n3.ReplaceStatus()
	if st.Phase != phaseDone || st.BackupFound || st.KeysFromPeers != keys {
		t.Fatalf("replace from peers: %+v; want done, no backup, each of %d keys streamed once", *st, keys)
	}
	for k := range keys {
		e, err := n3.ReadLocalForTesting(fmt.Appendf(nil, "k%03d", k))
		if err != nil || e.Deleted != (k < deleted) || (k >= deleted && string(e.Value) != fmt.Sprintf("v%d", k)) {
			t.Fatalf("n3 alone: k%03d = %q deleted=%v, %v", k, e.Value, e.Deleted, err)
		}
	}
}
