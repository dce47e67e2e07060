package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestReadDisk(t *testing.T) {
	p := filepath.Join(t.TempDir(), "stat")
	// reads: 4 fields, writes: 30320 ios, merges, sectors, 5480 ms; in
	// flight, io_ticks, queue; discards: 4 fields; flushes: 9961 ios, 1908 ms.
	stat := "  100 0 800 40 30320 10213 1356112 5480 0 3088 7409 72 0 9000 16 9961 1908\n"
	if err := os.WriteFile(p, []byte(stat), 0o644); err != nil {
		t.Fatal(err)
	}
	d, ok := readDisk(p)
	if !ok {
		t.Fatal("readDisk: not ok")
	}
	if want := (diskTimes{writes: 30320, writeMillis: 5480, flushes: 9961, flushMillis: 1908}); d != want {
		t.Fatalf("readDisk = %+v, want %+v", d, want)
	}
	if s := d.sub(diskTimes{writes: 320, writeMillis: 480, flushes: 961, flushMillis: 108}).String(); s != "w0.17ms/f0.20ms" {
		t.Errorf("String = %q", s)
	}
	if err := os.WriteFile(p, []byte("1 2 3 4 5 6 7 8 9 10 11\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, ok := readDisk(p); ok {
		t.Error("readDisk of a kernel without flush counters: ok, want not ok")
	}
	if s := (diskTimes{}).String(); s != "n/a" {
		t.Errorf("String without writes = %q, want n/a", s)
	}
	// The temporary directory of this test is on some device; where it
	// is a block device, its stat file must parse.
	if path := diskStatPath(t.TempDir()); path != "" {
		if _, ok := readDisk(path); !ok {
			t.Errorf("readDisk(%s): not ok", path)
		}
	}
}
