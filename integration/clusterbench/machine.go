package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"golang.org/x/sys/unix"
)

// cpuTimes is the machine's CPU time from /proc/stat, in clock ticks:
// busy is everything but idle and iowait; total includes them.
type cpuTimes struct{ busy, total uint64 }

// readCPU returns the machine's CPU times so far; ok is false where
// /proc/stat is missing (not Linux).
func readCPU() (_ cpuTimes, ok bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTimes{}, false
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return cpuTimes{}, false
	}
	var t cpuTimes
	// user nice system idle iowait irq softirq steal (guest time is
	// counted in user already).
	for i, s := range f[1:9] {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return cpuTimes{}, false
		}
		t.total += v
		if i != 3 && i != 4 {
			t.busy += v
		}
	}
	return t, true
}

func (t cpuTimes) sub(u cpuTimes) cpuTimes { return cpuTimes{t.busy - u.busy, t.total - u.total} }

// String is the share of the machine's CPU time that was busy, or "n/a"
// if none was measured.
func (t cpuTimes) String() string {
	if t.total == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.0f%%", 100*float64(t.busy)/float64(t.total))
}

// diskTimes are a block device's cumulative counters from
// /sys/dev/block/MAJ:MIN/stat (Documentation/block/stat.rst): completed
// writes and cache flushes and the milliseconds they took.
type diskTimes struct {
	writes, writeMillis, flushes, flushMillis uint64
}

// diskStatPath returns the stat file of the block device holding dir, or
// "" where there is none (not Linux, tmpfs, overlay).
func diskStatPath(dir string) string {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return ""
	}
	p := fmt.Sprintf("/sys/dev/block/%d:%d/stat", unix.Major(st.Dev), unix.Minor(st.Dev))
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
}

// readDisk reads the counters at path; ok is false if it cannot.
func readDisk(path string) (_ diskTimes, ok bool) {
	if path == "" {
		return diskTimes{}, false
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return diskTimes{}, false
	}
	f := strings.Fields(string(b))
	if len(f) < 17 { // flush fields since Linux 5.5
		return diskTimes{}, false
	}
	var v [17]uint64
	for i := range v {
		if v[i], err = strconv.ParseUint(f[i], 10, 64); err != nil {
			return diskTimes{}, false
		}
	}
	return diskTimes{writes: v[4], writeMillis: v[7], flushes: v[15], flushMillis: v[16]}, true
}

func (d diskTimes) sub(e diskTimes) diskTimes {
	return diskTimes{d.writes - e.writes, d.writeMillis - e.writeMillis, d.flushes - e.flushes, d.flushMillis - e.flushMillis}
}

func (d diskTimes) add(e diskTimes) diskTimes {
	return diskTimes{d.writes + e.writes, d.writeMillis + e.writeMillis, d.flushes + e.flushes, d.flushMillis + e.flushMillis}
}

// String gives the device's mean write and cache-flush latency, as the
// device (not the file system, nor the thread waiting for it) saw them.
func (d diskTimes) String() string {
	if d.writes == 0 {
		return "n/a"
	}
	s := fmt.Sprintf("w%.2fms", float64(d.writeMillis)/float64(d.writes))
	if d.flushes > 0 {
		s += fmt.Sprintf("/f%.2fms", float64(d.flushMillis)/float64(d.flushes))
	}
	return s
}

// syncProbe measures the disk alone, before any cluster runs: writers
// goroutines each append 10 KiB to a file of their own in dir and
// fdatasync it, in a loop, for d (the three replicas' WALs of one put,
// without the rest of the servers). The result holds the syncs' latencies.
func syncProbe(dir string, writers int, d time.Duration) (*result, error) {
	dir, err := os.MkdirTemp(dir, "clusterbench-sync-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	hists := make([]*hdrhistogram.Histogram, writers)
	errs := make([]error, writers)
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	for w := range writers {
		hists[w] = hdrhistogram.New(1, 60_000_000, 3)
		wg.Go(func() {
			f, err := os.Create(filepath.Join(dir, fmt.Sprintf("wal-%d", w)))
			if err != nil {
				errs[w] = err
				return
			}
			defer f.Close()
			buf := make([]byte, 10<<10)
			for time.Now().Before(stop) {
				if _, err := f.Write(buf); err != nil {
					errs[w] = err
					return
				}
				t0 := time.Now()
				if err := syscall.Fdatasync(int(f.Fd())); err != nil {
					errs[w] = err
					return
				}
				_ = hists[w].RecordValue(time.Since(t0).Microseconds())
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	r := &result{hist: hdrhistogram.New(1, 60_000_000, 3)}
	for _, h := range hists {
		r.hist.Merge(h)
	}
	r.ops = r.hist.TotalCount()
	return r, nil
}
