package tiering

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"maps"
	"strconv"
	"strings"

	"github.com/tierkv/tierkv/lsm"
	"github.com/tierkv/tierkv/lsm/objstorage"
	"github.com/tierkv/tierkv/objectstore"
	"github.com/tierkv/tierkv/tiering/internal/catalog"
)

// A manifest backup object (<node>/manifests/<seq, 20 digits>) holds a
// consistent engine manifest snapshot and the catalog entries of every
// object it references. Layout (little-endian; part of the format; do not
// change):
//
//	magic "TKmb" (4) | version (1) = 1 | seq (8) | created unix ms (8) |
//	(created: the backup covers every write the engine applied before it)
//	manifest length (uvarint) | manifest snapshot (lsm.ManifestSnapshot.Data) |
//	entry count (uvarint) | entry* | crc32c of everything before (4)
//	entry := type (1) | num (uvarint) | size (uvarint) | crc32c (4) | metaOff (uvarint)
const (
	backupMagic   = "TKmb"
	backupVersion = 1
	// maxBackupSize bounds what a restore reads.
	maxBackupSize = 1 << 30
)

// ErrCorruptBackup marks a manifest backup that does not decode.
var ErrCorruptBackup = errors.New("tiering: corrupt manifest backup")

type backup struct {
	seq      uint64
	created  int64
	manifest []byte
	entries  []catalog.Entry
}

func (b *backup) encode() []byte {
	out := []byte(backupMagic)
	out = append(out, backupVersion)
	out = binary.LittleEndian.AppendUint64(out, b.seq)
	out = binary.LittleEndian.AppendUint64(out, uint64(b.created))
	out = binary.AppendUvarint(out, uint64(len(b.manifest)))
	out = append(out, b.manifest...)
	out = binary.AppendUvarint(out, uint64(len(b.entries)))
	for _, e := range b.entries {
		out = append(out, byte(e.Type))
		out = binary.AppendUvarint(out, e.Num)
		out = binary.AppendUvarint(out, uint64(e.Size))
		out = binary.LittleEndian.AppendUint32(out, e.CRC)
		out = binary.AppendUvarint(out, uint64(e.MetaOff))
	}
	return binary.LittleEndian.AppendUint32(out, crc32.Checksum(out, castagnoli))
}

func decodeBackup(data []byte) (*backup, error) {
	bad := func(format string, args ...any) (*backup, error) {
		return nil, fmt.Errorf("%w: %s", ErrCorruptBackup, fmt.Sprintf(format, args...))
	}
	if len(data) < 4+1+16+4 {
		return bad("%d bytes is too short", len(data))
	}
	body := data[:len(data)-4]
	if got, want := binary.LittleEndian.Uint32(data[len(data)-4:]), crc32.Checksum(body, castagnoli); got != want {
		return bad("checksum mismatch: stored %#08x, computed %#08x", got, want)
	}
	if string(body[:4]) != backupMagic {
		return bad("bad magic %q", body[:4])
	}
	if body[4] != backupVersion {
		return bad("unknown version %d", body[4])
	}
	b := &backup{seq: binary.LittleEndian.Uint64(body[5:]), created: int64(binary.LittleEndian.Uint64(body[13:]))}
	p := body[21:]
	uv := func() (uint64, bool) {
		v, n := binary.Uvarint(p)
		if n <= 0 {
			return 0, false
		}
		p = p[n:]
		return v, true
	}
	n, ok := uv()
	if !ok || n > uint64(len(p)) {
		return bad("bad manifest length")
	}
	b.manifest, p = p[:n], p[n:]
	cnt, ok := uv()
	if !ok || cnt > uint64(len(p)) {
		return bad("bad entry count")
	}
	for i := uint64(0); i < cnt; i++ {
		if len(p) < 1 || p[0] > byte(objstorage.FileTypeBlob) {
			return bad("entry %d: bad type", i)
		}
		e := catalog.Entry{Type: objstorage.FileType(p[0])}
		p = p[1:]
		var size, mo uint64
		if e.Num, ok = uv(); !ok {
			return bad("entry %d: bad number", i)
		}
		if size, ok = uv(); !ok || size > 1<<62 || len(p) < 4 {
			return bad("entry %d: bad size", i)
		}
		e.Size = int64(size)
		e.CRC = binary.LittleEndian.Uint32(p)
		p = p[4:]
		if mo, ok = uv(); !ok || mo > size {
			return bad("entry %d: bad metadata offset", i)
		}
		e.MetaOff = int64(mo)
		b.entries = append(b.entries, e)
	}
	if len(p) != 0 {
		return bad("%d trailing bytes", len(p))
	}
	return b, nil
}

func manifestPrefix(node string) string { return node + "/manifests/" }

func backupName(node string, seq uint64) string {
	return fmt.Sprintf("%s%020d", manifestPrefix(node), seq)
}

// listBackups returns the sequence numbers of node's manifest backups in
// b, ascending.
func listBackups(ctx context.Context, b objectstore.Bucket, node string) ([]uint64, error) {
	var seqs []uint64
	err := objectstore.Iter(ctx, b, manifestPrefix(node), func(name string) error {
		s, err := strconv.ParseUint(strings.TrimPrefix(name, manifestPrefix(node)), 10, 64)
		if err == nil {
			seqs = append(seqs, s)
		}
		return nil
	})
	return seqs, err
}

// Backup uploads a manifest backup: it flushes the DB, takes a manifest
// snapshot, uploads (and verifies) every object the snapshot references
// that is not yet remote, keeping the local copies, and only then uploads
// the manifest backup, to the primary and then to the fallback bucket. So
// no backup ever references a missing object.
func (m *Manager) Backup(ctx context.Context) error {
	db := m.db.Load()
	if db == nil {
		return errors.New("tiering: no DB attached")
	}
	m.bgMu.Lock()
	defer m.bgMu.Unlock()
	err := m.backupLocked(ctx, db)
	if err != nil {
		m.m.backupFailures.Add(1)
	}
	return err
}

func (m *Manager) backupLocked(ctx context.Context, db *lsm.DB) error {
	// Every write the engine applied before flushStart is in a flushed
	// table, so in this backup: the backup's created time.
	flushStart := m.opts.Clock.Now()
	if err := db.FlushContext(ctx); err != nil {
		return fmt.Errorf("tiering: backup: flush: %w", err)
	}
	var snap *lsm.ManifestSnapshot
	var entries map[Key]catalog.Entry
	var keys []Key
	// A compaction may delete an object between the snapshot and its
	// upload: take a new snapshot then.
	for attempt := 0; ; attempt++ {
		var err error
		if snap, err = db.ManifestSnapshot(); err != nil {
			return fmt.Errorf("tiering: backup: %w", err)
		}
		keys = keys[:0]
		for _, n := range snap.Tables {
			keys = append(keys, Key{Type: objstorage.FileTypeTable, Num: n})
		}
		for _, n := range snap.Blobs {
			keys = append(keys, Key{Type: objstorage.FileTypeBlob, Num: n})
		}
		entries, err = m.uploadAll(ctx, keys, false)
		if err != nil {
			return fmt.Errorf("tiering: backup: %w", err)
		}
		if len(entries) == len(keys) {
			break
		}
		if attempt == 5 {
			return errors.New("tiering: backup: the engine kept deleting referenced objects; giving up")
		}
	}
	seq, err := m.nextBackupSeq(ctx)
	if err != nil {
		return err
	}
	b := &backup{seq: seq, created: flushStart.UnixMilli(), manifest: snap.Data}
	for _, k := range keys {
		b.entries = append(b.entries, entries[k])
	}
	data := b.encode()
	name := backupName(m.opts.NodeID, seq)
	for _, bk := range []objectstore.Bucket{m.opts.Bucket, m.opts.Fallback} {
		if bk == nil {
			continue
		}
		err := objectstore.Retry(ctx, m.opts.Retry, func(ctx context.Context) error {
			return bk.Put(ctx, name, bytes.NewReader(data), int64(len(data)))
		})
		if err != nil {
			return fmt.Errorf("tiering: upload manifest backup %s: %w", name, err)
		}
	}
	m.mu.Lock()
	m.mu.backupSeq = int64(seq)
	m.mu.Unlock()
	m.m.backups.Add(1)
	return nil
}

func (m *Manager) nextBackupSeq(ctx context.Context) (uint64, error) {
	m.mu.Lock()
	s := m.mu.backupSeq
	m.mu.Unlock()
	if s >= 0 {
		return uint64(s) + 1, nil
	}
	seqs, err := listBackups(ctx, m.opts.Bucket, m.opts.NodeID)
	if err != nil {
		return 0, fmt.Errorf("tiering: list manifest backups: %w", err)
	}
	if len(seqs) == 0 {
		return 1, nil
	}
	return seqs[len(seqs)-1] + 1, nil
}

// GC deletes, from both buckets, objects of this node that neither a
// retained manifest backup (the BackupRetention newest) nor the catalog
// references, once GC has seen them unreferenced for GCDelay; and manifest
// backups older than the retained ones, after the same delay.
func (m *Manager) GC(ctx context.Context) error {
	m.bgMu.Lock()
	defer m.bgMu.Unlock()
	node := m.opts.NodeID
	seqs, err := listBackups(ctx, m.opts.Bucket, node)
	if err != nil {
		return fmt.Errorf("tiering: gc: %w", err)
	}
	ref := map[string]bool{}
	keep := seqs[max(0, len(seqs)-m.opts.BackupRetention):]
	for _, s := range keep {
		name := backupName(node, s)
		b, err := readBackup(ctx, m.primary, name)
		if err != nil {
			return fmt.Errorf("tiering: gc: %w", err)
		}
		ref[name] = true
		for _, e := range b.entries {
			ref[objectName(node, e.Type, e.Num)] = true
		}
	}
	for _, e := range m.cat.Entries() {
		ref[m.objectName(e.Type, e.Num)] = true
	}
	m.mu.Lock()
	for k := range m.mu.inflight {
		ref[m.objectName(k.Type, k.Num)] = true
	}
	m.mu.Unlock()
	var cands []string
	for _, prefix := range []string{node + "/tables/", node + "/blobs/", manifestPrefix(node)} {
		if err := objectstore.Iter(ctx, m.opts.Bucket, prefix, func(name string) error {
			if !ref[name] {
				cands = append(cands, name)
			}
			return nil
		}); err != nil {
			return fmt.Errorf("tiering: gc: list %s: %w", prefix, err)
		}
	}
	now := m.opts.Clock.Now()
	var del []string
	changed := false
	m.mu.Lock()
	seen := map[string]bool{}
	for _, n := range cands {
		seen[n] = true
		since, ok := m.mu.unrefSince[n]
		if !ok {
			m.mu.unrefSince[n] = now
			since = now
			changed = true
		}
		if now.Sub(since) >= m.opts.GCDelay {
			del = append(del, n)
		}
	}
	for n := range m.mu.unrefSince {
		if !seen[n] {
			delete(m.mu.unrefSince, n) // referenced again, or gone
			changed = true
		}
	}
	m.mu.Unlock()
	var errs []error
	for _, n := range del {
		var derr error
		for _, b := range []objectstore.Bucket{m.opts.Bucket, m.opts.Fallback} {
			if b == nil {
				continue
			}
			if err := b.Delete(ctx, n); err != nil {
				derr = errors.Join(derr, fmt.Errorf("tiering: gc: delete %s: %w", n, err))
			}
		}
		if derr != nil {
			errs = append(errs, derr) // the next GC retries it (Delete is idempotent)
			continue
		}
		m.mu.Lock()
		delete(m.mu.unrefSince, n)
		m.mu.Unlock()
		changed = true
		m.m.gcDeleted.Add(1)
	}
	if changed {
		// NB: only the GC (under bgMu) changes unrefSince, so this is
		// the state the next GC starts from.
		m.mu.Lock()
		since := maps.Clone(m.mu.unrefSince)
		m.mu.Unlock()
		if err := m.saveGCState(since); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// readBackup reads and decodes a manifest backup through r, refusing one
// larger than maxBackupSize before reading it (invariant 7).
func readBackup(ctx context.Context, r *reads, name string) (*backup, error) {
	a, err := r.b.Attributes(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if a.Size > maxBackupSize {
		return nil, fmt.Errorf("%w: %s is %d bytes, over the limit of %d", ErrCorruptBackup, name, a.Size, maxBackupSize)
	}
	var data []byte
	err = r.stream(ctx, func(ctx context.Context) (io.ReadCloser, error) {
		return r.b.Get(ctx, name)
	}, func(rd io.Reader) (err error) {
		// NB: bounded again: the object may have changed since.
		data, err = io.ReadAll(io.LimitReader(rd, maxBackupSize+1))
		if err == nil && len(data) > maxBackupSize {
			err = fmt.Errorf("%w: %s is over the limit of %d bytes", ErrCorruptBackup, name, maxBackupSize)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	bk, err := decodeBackup(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return bk, nil
}
