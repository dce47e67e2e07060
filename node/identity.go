package node

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/tierkv/tierkv/ring"
)

// identityFile holds what a node must keep across restarts: its id, its
// tokens (fixed at first join, invariant 6), its clock id (picked at first
// join) and its generation (increased at every start, for the gossip
// heartbeats).
const identityFile = "node.json"

type identity struct {
	ID         string       `json:"id"`
	Tokens     []ring.Token `json:"tokens,omitempty"`
	Generation uint64       `json:"generation"`
	// ClockID is the node's HLC tie-break, unique in the cluster
	// (clockid.go); nil until first joined (and in data dirs of versions
	// without clock ids).
	ClockID *uint8 `json:"clock_id,omitempty"`
	// Joining reports a join whose streaming has not finished: the node
	// gossips JOINING and streams again at its next start.
	Joining bool `json:"joining,omitempty"`
	// Decommissioned reports a node that handed its ranges over and left:
	// it must not start again with this data directory (its data is stale
	// and its tokens belong to others now).
	Decommissioned bool `json:"decommissioned,omitempty"`
}

func loadIdentity(dir string) (identity, bool, error) {
	var id identity
	b, err := os.ReadFile(filepath.Join(dir, identityFile))
	if errors.Is(err, fs.ErrNotExist) {
		return id, false, nil
	}
	if err != nil {
		return id, false, err
	}
	if err := json.Unmarshal(b, &id); err != nil {
		return id, false, fmt.Errorf("node: corrupt %s: %w", filepath.Join(dir, identityFile), err)
	}
	if id.ID == "" {
		return id, false, fmt.Errorf("node: corrupt %s: empty id", filepath.Join(dir, identityFile))
	}
	return id, true, nil
}

// saveIdentity writes the identity durably.
func saveIdentity(dir string, id identity) error { return writeJSONAtomic(dir, identityFile, id) }

// writeJSONAtomic writes v as dir/name durably: temporary file, fsync,
// rename, directory fsync.
func writeJSONAtomic(dir, name string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, name+".tmp")
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func randomID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "n-" + hex.EncodeToString(b[:])
}
