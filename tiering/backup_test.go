package tiering

import (
	"errors"
	"reflect"
	"testing"

	"github.com/tierkv/tierkv/lsm/objstorage"
	"github.com/tierkv/tierkv/tiering/internal/catalog"
)

func TestBackupEncoding(t *testing.T) {
	b := &backup{seq: 7, created: 1234, manifest: []byte("manifest bytes"), entries: []catalog.Entry{
		{Type: objstorage.FileTypeTable, Num: 5, Size: 100, CRC: 9, MetaOff: 40},
		{Type: objstorage.FileTypeBlob, Num: 6, Size: 1 << 40, CRC: 1, MetaOff: 1<<40 - 24},
	}}
	data := b.encode()
	got, err := decodeBackup(data)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, b) {
		t.Fatalf("decoded %+v, want %+v", got, b)
	}
	for i := range data {
		bad := append([]byte(nil), data...)
		bad[i] ^= 0x40
		if _, err := decodeBackup(bad); !errors.Is(err, ErrCorruptBackup) {
			t.Fatalf("flipped byte %d: %v", i, err)
		}
	}
}

func FuzzDecodeBackup(f *testing.F) {
	b := &backup{seq: 1, manifest: []byte{1, 2, 3}, entries: []catalog.Entry{{Num: 1, Size: 10, MetaOff: 2}}}
	f.Add(b.encode())
	f.Add([]byte("TKmb"))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := decodeBackup(data)
		if err != nil {
			return
		}
		if string(got.encode()) != string(data) {
			t.Fatal("decoded backup re-encodes differently")
		}
	})
}
