package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
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

// busyPercent is the share of the machine's CPU time that was busy, or -1
// if none was measured.
func (t cpuTimes) busyPercent() float64 {
	if t.total == 0 {
		return -1
	}
	return 100 * float64(t.busy) / float64(t.total)
}

func fmtBusy(t cpuTimes) string {
	if p := t.busyPercent(); p >= 0 {
		return fmt.Sprintf("%.0f%%", p)
	}
	return "n/a"
}

// syncProbe measures the disk alone, before any cluster runs: writers
// goroutines each append 10 KiB to a file of their own in dir and
// fdatasync it, in a loop, for d (the three replicas' WALs of one put,
// without the rest of the servers). It returns the sync latencies.
func syncProbe(dir string, writers int, d time.Duration) ([]time.Duration, error) {
	dir, err := os.MkdirTemp(dir, "clusterbench-sync-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	var mu sync.Mutex
	var lat []time.Duration
	var firstErr error
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			f, err := os.Create(filepath.Join(dir, fmt.Sprintf("wal-%d", w)))
			if err == nil {
				defer f.Close()
			}
			buf := make([]byte, 10<<10)
			var mine []time.Duration
			for err == nil && time.Now().Before(stop) {
				if _, err = f.Write(buf); err != nil {
					break
				}
				t0 := time.Now()
				err = syscall.Fdatasync(int(f.Fd()))
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			defer mu.Unlock()
			lat = append(lat, mine...)
			if err != nil && firstErr == nil {
				firstErr = err
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	slices.Sort(lat)
	return lat, nil
}

// quantile returns the q-quantile of sorted latencies.
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[int(q*float64(len(sorted)-1))]
}
