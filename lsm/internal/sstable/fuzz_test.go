package sstable

import (
	"bytes"
	"context"
	"encoding/binary"
	"testing"
)

// Fuzz targets for every decoder of table bytes. Run one with, e.g.:
//
//	go test -run=- -fuzz=FuzzDecodeBlock -fuzztime=30s ./lsm/internal/sstable/
//
// They check that decoding arbitrary bytes returns a value or an error and
// never panics, and that whatever decodes can be used.

// fuzzMaxBlock bounds decompressed sizes in the fuzz targets, to keep them
// fast; the reader uses maxBlockSize.
const fuzzMaxBlock = 1 << 20

// seedTable returns a real table and its parts: footer, blocks with and
// without trailers.
type seedParts struct {
	table               []byte
	footer              []byte
	dataPhys, dataRaw   [][]byte
	indexRaw, propsRaw  []byte
	bloomRaw, indexPhys []byte
}

func makeSeeds(t testing.TB) []seedParts {
	var out []seedParts
	for _, comp := range []Compression{NoCompression, S2Compression, ZstdCompression} {
		es := sequentialEntries(200, 30)
		data, _ := buildTable(t, es, WriterOptions{BlockSize: 1024, BloomBitsPerKey: 10, Compression: comp})
		f, err := decodeFooter(data[len(data)-footerSize:], uint64(len(data)))
		if err != nil {
			t.Fatal(err)
		}
		p := seedParts{table: data, footer: data[len(data)-footerSize:]}
		raw := func(h blockHandle) ([]byte, []byte) {
			phys := data[h.offset:h.end()]
			c, typ, err := checkBlockTrailer(phys)
			if err != nil {
				t.Fatal(err)
			}
			d, err := decompress(typ, c, maxBlockSize)
			if err != nil {
				t.Fatal(err)
			}
			return phys, d
		}
		p.indexPhys, p.indexRaw = raw(f.index)
		_, p.propsRaw = raw(f.props)
		_, p.bloomRaw = raw(f.bloom)
		idx, err := decodeIndex(p.indexRaw, f.bloom.offset)
		if err != nil {
			t.Fatal(err)
		}
		for _, ie := range idx[:3] {
			ph, d := raw(ie.h)
			p.dataPhys = append(p.dataPhys, ph)
			p.dataRaw = append(p.dataRaw, d)
		}
		out = append(out, p)
	}
	return out
}

// exerciseBlock iterates over a decoded block and seeks in it.
func exerciseBlock(t *testing.T, b block) {
	var it blockIter
	it.init(b)
	var prev []byte
	n := 0
	for ok := it.first(); ok; ok = it.nextEntry() {
		e := it.entry()
		if n > 0 && bytes.Compare(prev, e.Key) >= 0 {
			t.Fatalf("decoded block keys out of order: %q then %q", prev, e.Key)
		}
		prev = append(prev[:0], e.Key...)
		if n < 20 {
			k := bytes.Clone(e.Key)
			if got, ok := b.get(k); !ok || !bytes.Equal(got.Key, k) {
				t.Fatalf("get(%q) failed in a valid block", k)
			}
			if !it.seekGE(k) || !bytes.Equal(it.key, k) {
				t.Fatalf("seekGE(%q) failed", k)
			}
		}
		n++
	}
	b.get([]byte("key"))
	it.seekGE([]byte("m"))
}

func FuzzDecodeBlock(f *testing.F) {
	for _, p := range makeSeeds(f) {
		for _, d := range p.dataRaw {
			f.Add(d)
		}
		f.Add(p.indexRaw)
	}
	f.Add([]byte{0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := decodeBlock(data)
		if err != nil {
			return
		}
		exerciseBlock(t, b)
	})
}

// FuzzReadBlock covers the trailer check and decompression. Since the
// fuzzer rarely produces a valid checksum, it also decompresses the
// contents directly, with each block type.
func FuzzReadBlock(f *testing.F) {
	for _, p := range makeSeeds(f) {
		for _, d := range p.dataPhys {
			f.Add(d)
		}
		f.Add(p.indexPhys)
	}
	f.Fuzz(func(t *testing.T, phys []byte) {
		if c, typ, err := checkBlockTrailer(phys); err == nil {
			if d, err := decompress(typ, c, fuzzMaxBlock); err == nil {
				if b, err := decodeBlock(d); err == nil {
					exerciseBlock(t, b)
				}
			}
		}
		if len(phys) >= blockTrailerSize {
			c := phys[:len(phys)-blockTrailerSize]
			for typ := byte(0); typ <= maxBlockTypeByte+1; typ++ {
				if d, err := decompress(typ, c, fuzzMaxBlock); err == nil && len(d) > fuzzMaxBlock {
					t.Fatalf("decompressed %d bytes beyond the limit", len(d))
				}
			}
		}
	})
}

func FuzzDecodeFooter(f *testing.F) {
	for _, p := range makeSeeds(f) {
		f.Add(p.footer, uint64(len(p.table)))
	}
	f.Fuzz(func(t *testing.T, b []byte, size uint64) {
		// Recompute the checksum half of the time so that the fuzzer gets
		// past it and exercises the layout checks.
		if len(b) == footerSize && size%2 == 0 {
			b = bytes.Clone(b)
			binary.LittleEndian.PutUint32(b[60:], crc32c(b[:60]))
		}
		ft, err := decodeFooter(b, size)
		if err != nil {
			return
		}
		if ft.props.end() != size-footerSize {
			t.Fatalf("accepted footer %+v for size %d", ft, size)
		}
	})
}

func FuzzDecodeIndex(f *testing.F) {
	for _, p := range makeSeeds(f) {
		f.Add(p.indexRaw, uint64(len(p.table)))
	}
	f.Fuzz(func(t *testing.T, b []byte, dataEnd uint64) {
		idx, err := decodeIndex(b, dataEnd)
		if err != nil {
			return
		}
		next := uint64(0)
		for i, ie := range idx {
			if ie.h.offset != next || (i > 0 && bytes.Compare(idx[i-1].sep, ie.sep) >= 0) {
				t.Fatalf("accepted bad index entry %d", i)
			}
			next = ie.h.end()
		}
	})
}

func FuzzDecodeProperties(f *testing.F) {
	for _, p := range makeSeeds(f) {
		f.Add(p.propsRaw)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := decodeProperties(b)
		if err != nil {
			return
		}
		// What decodes re-encodes to something that decodes the same.
		p2, err := decodeProperties(p.encode())
		if err != nil || !bytes.Equal(p.SmallestKey, p2.SmallestKey) || p.NumEntries != p2.NumEntries || p.DataSize != p2.DataSize {
			t.Fatalf("re-encoding changed the properties: %v", err)
		}
	})
}

func FuzzDecodeBloom(f *testing.F) {
	for _, p := range makeSeeds(f) {
		f.Add(p.bloomRaw)
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		bf, err := decodeBloom(b)
		if err != nil || bf == nil {
			return
		}
		bf.Test([]byte("key00000000"))
		bf.Test(nil)
	})
}

// FuzzOpen opens whole tables and reads them.
func FuzzOpen(f *testing.F) {
	for _, p := range makeSeeds(f) {
		f.Add(p.table)
	}
	keys := sequentialEntries(200, 0)
	f.Fuzz(func(t *testing.T, data []byte) {
		_ = readAll(context.Background(), data, keys[:20])
		// Fix the checksums so that the fuzzer reaches the decoders.
		if fixed := fixChecksums(data); fixed != nil {
			_ = readAll(context.Background(), fixed, keys[:20])
		}
	})
}

// fixChecksums returns a copy of a table with the checksums of its footer
// and of the blocks it can locate recomputed, or nil.
func fixChecksums(data []byte) []byte {
	if len(data) < footerSize {
		return nil
	}
	data = bytes.Clone(data)
	fb := data[len(data)-footerSize:]
	binary.LittleEndian.PutUint32(fb[60:], crc32c(fb[:60]))
	ft, err := decodeFooter(fb, uint64(len(data)))
	if err != nil {
		return data
	}
	fix := func(h blockHandle) {
		if h.end() <= uint64(len(data)) {
			binary.LittleEndian.PutUint32(data[h.end()-4:], crc32c(data[h.offset:h.end()-4]))
		}
	}
	fix(ft.bloom)
	fix(ft.index)
	fix(ft.props)
	c, typ, err := checkBlockTrailer(data[ft.index.offset:ft.index.end()])
	if err != nil {
		return data
	}
	raw, err := decompress(typ, c, fuzzMaxBlock)
	if err != nil {
		return data
	}
	idx, err := decodeIndex(raw, ft.bloom.offset)
	if err != nil {
		return data
	}
	for _, ie := range idx {
		fix(ie.h)
	}
	return data
}
