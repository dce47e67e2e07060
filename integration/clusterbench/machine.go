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
