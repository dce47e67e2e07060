// Package bench is tierkv's engine benchmark: it runs the same large-value
// workloads against tierkv's lsm and against Pebble v2, Badger v4 and
// goleveldb, one engine after another, and prints throughput, latency,
// write amplification, disk usage and tierkv's ratio to the peers.
package bench

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// Workload names, in run order.
const (
	FillSync1  = "fillrandom-sync-1"
	FillSync16 = "fillrandom-sync-16"
	FillNoSync = "fillrandom-nosync"
	ReadRandom = "readrandom"
	ReadMiss   = "readmissing"
)

// AllWorkloads lists every workload in the order they run.
var AllWorkloads = []string{FillSync1, FillSync16, FillNoSync, ReadRandom, ReadMiss}

type fillSpec struct {
	writers int
	sync    bool
}

var fillSpecs = map[string]fillSpec{
	FillSync1:  {writers: 1, sync: true},
	FillSync16: {writers: 16, sync: true},
	FillNoSync: {writers: 1, sync: false},
}

func isFill(w string) bool { _, ok := fillSpecs[w]; return ok }

// Config holds every knob of a run. Zero values get the defaults from
// DefaultConfig where noted.
type Config struct {
	Dir       string   // base dir; "" = $TMPDIR (os.TempDir) unless tmpfs, then ./.enginebench-tmp
	Engines   []string // nil = all compiled in
	Workloads []string // nil = AllWorkloads

	FillDuration time.Duration // each fill runs this long ...
	FillKeys     int64         // ... or until this many keys are written (0 = no limit)
	ReadDuration time.Duration // each read workload runs this long ...
	ReadOps      int64         // ... or until this many reads are done (0 = no limit)
	Readers      int           // concurrent readers in the read workloads

	KeySize   int
	ValueSize int

	MemTableSize    int64
	BlockCacheSize  int64
	BloomBitsPerKey int

	SettleQuiet time.Duration // settled = engine idle and no bytes written for this long
	SettleMax   time.Duration // give up waiting after this long (reported)
	Progress    time.Duration // progress line interval on Stderr (0 = none)
	Keep        bool          // keep the engines' directories
	Seed        uint64

	Stdout io.Writer
	Stderr io.Writer
}

// DefaultConfig returns the defaults used by cmd/enginebench: all 4 engines
// x 5 workloads in well under 10 minutes on a 2-core machine.
func DefaultConfig() Config {
	return Config{
		FillDuration:    15 * time.Second,
		FillKeys:        40000, // ~400 MiB of user data
		ReadDuration:    10 * time.Second,
		Readers:         1,
		KeySize:         100,
		ValueSize:       10 << 10,
		MemTableSize:    64 << 20,
		BlockCacheSize:  64 << 20,
		BloomBitsPerKey: 10,
		SettleQuiet:     2 * time.Second,
		SettleMax:       60 * time.Second,
		Progress:        5 * time.Second,
		Seed:            1,
		Stdout:          os.Stdout,
		Stderr:          os.Stderr,
	}
}

// Result is one engine x workload measurement.
type Result struct {
	Engine, Workload string
	Ops              int64
	Elapsed          time.Duration
	UserBytes        int64 // key+value bytes written or read
	Hist             *hdrhistogram.Histogram
	// Fill workloads only: device bytes (per IOSource) written during the
	// fill alone, and during fill + flush + settle + close.
	DevBytesFill, DevBytesTotal int64
	IOSource                    string
	DiskBytes                   int64 // allocated (du)
	DiskApparent                int64 // sum of file sizes
	SettleTime                  time.Duration
	Keys                        int64 // keys in the data set (fills: written; reads: read from)
	Failures                    int64 // reads that returned a wrong answer
	Err                         error
}

func (r *Result) OpsPerSec() float64 {
	if r.Err != nil || r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Ops) / r.Elapsed.Seconds()
}

func (r *Result) MBPerSec() float64 {
	if r.Err != nil || r.Elapsed <= 0 {
		return 0
	}
	return float64(r.UserBytes) / 1e6 / r.Elapsed.Seconds()
}

// WriteAmp returns device bytes / user bytes for the fill window and for
// fill+settle; NaN when not applicable.
func (r *Result) WriteAmp() (fill, total float64) {
	if !isFill(r.Workload) || r.UserBytes == 0 || r.IOSource == "none" || r.Err != nil {
		return math.NaN(), math.NaN()
	}
	return float64(r.DevBytesFill) / float64(r.UserBytes), float64(r.DevBytesTotal) / float64(r.UserBytes)
}

func (r *Result) quantile(q float64) time.Duration {
	if r.Hist == nil || r.Hist.TotalCount() == 0 {
		return 0
	}
	return time.Duration(r.Hist.ValueAtQuantile(q)) * time.Microsecond
}

type runner struct {
	cfg    Config
	runDir string
	src    ioSource
	out    io.Writer
	errw   io.Writer
	mu     sync.Mutex
}

// Run executes the benchmark and prints per-result lines, the ratio lines
// and a summary table on cfg.Stdout. It returns the results and an error if
// any engine failed or returned wrong data.
func Run(cfg Config) ([]*Result, error) {
	def := DefaultConfig()
	if cfg.Stdout == nil {
		cfg.Stdout = def.Stdout
	}
	if cfg.Stderr == nil {
		cfg.Stderr = def.Stderr
	}
	if cfg.KeySize == 0 {
		cfg.KeySize = def.KeySize
	}
	if cfg.ValueSize == 0 {
		cfg.ValueSize = def.ValueSize
	}
	if cfg.MemTableSize == 0 {
		cfg.MemTableSize = def.MemTableSize
	}
	if cfg.BlockCacheSize == 0 {
		cfg.BlockCacheSize = def.BlockCacheSize
	}
	if cfg.BloomBitsPerKey == 0 {
		cfg.BloomBitsPerKey = def.BloomBitsPerKey
	}
	if cfg.Readers <= 0 {
		cfg.Readers = 1
	}
	if cfg.SettleQuiet <= 0 {
		cfg.SettleQuiet = def.SettleQuiet
	}
	if cfg.SettleMax <= 0 {
		cfg.SettleMax = def.SettleMax
	}
	if cfg.FillDuration <= 0 && cfg.FillKeys <= 0 {
		return nil, errors.New("need a fill duration or a fill key count")
	}
	if cfg.ReadDuration <= 0 && cfg.ReadOps <= 0 {
		return nil, errors.New("need a read duration or a read op count")
	}
	if cfg.KeySize < 34 {
		return nil, fmt.Errorf("key size %d too small (min 34)", cfg.KeySize)
	}
	if cfg.ValueSize < 8 {
		return nil, fmt.Errorf("value size %d too small (min 8)", cfg.ValueSize)
	}
	if len(cfg.Engines) == 0 {
		cfg.Engines = Engines()
	}
	for _, e := range cfg.Engines {
		if _, ok := registry[e]; !ok {
			return nil, fmt.Errorf("unknown engine %q (compiled in: %s)", e, strings.Join(Engines(), ","))
		}
	}
	if len(cfg.Workloads) == 0 {
		cfg.Workloads = AllWorkloads
	}
	// Run selected workloads in canonical order.
	sel := map[string]bool{}
	for _, w := range cfg.Workloads {
		found := false
		for _, a := range AllWorkloads {
			if a == w {
				found = true
			}
		}
		if !found {
			return nil, fmt.Errorf("unknown workload %q (have %s)", w, strings.Join(AllWorkloads, ","))
		}
		sel[w] = true
	}
	cfg.Workloads = nil
	for _, a := range AllWorkloads {
		if sel[a] {
			cfg.Workloads = append(cfg.Workloads, a)
		}
	}

	base, err := resolveBaseDir(cfg.Dir, cfg.Stderr)
	if err != nil {
		return nil, err
	}
	runDir, err := os.MkdirTemp(base, "enginebench-")
	if err != nil {
		return nil, err
	}
	if !cfg.Keep {
		defer os.RemoveAll(runDir)
		// Interrupted runs should not leave gigabytes behind either.
		sigc := make(chan os.Signal, 1)
		signal.Notify(sigc, os.Interrupt, syscall.SIGTERM)
		defer func() { signal.Stop(sigc); close(sigc) }()
		go func() {
			if _, ok := <-sigc; ok {
				fmt.Fprintf(cfg.Stderr, "interrupted; removing %s\n", runDir)
				os.RemoveAll(runDir)
				os.Exit(130)
			}
		}()
	}
	r := &runner{cfg: cfg, runDir: runDir, out: cfg.Stdout, errw: cfg.Stderr}
	r.src = probeIOSource(runDir)
	fsName, _, _ := fsType(runDir)

	fmt.Fprintf(r.out, "# enginebench: engines=%s workloads=%s\n", strings.Join(cfg.Engines, ","), strings.Join(cfg.Workloads, ","))
	fmt.Fprintf(r.out, "# dir=%s (%s)  key=%dB value=%dB (random, incompressible)  memtable=%s block-cache=%s bloom=%d bits/key\n",
		runDir, fsName, cfg.KeySize, cfg.ValueSize, fmtBytes(cfg.MemTableSize), fmtBytes(cfg.BlockCacheSize), cfg.BloomBitsPerKey)
	fmt.Fprintf(r.out, "# fill: %s or %d keys, whichever first; reads: %s or %d ops, %d reader(s); settle: idle+no writes for %s (max %s)\n",
		cfg.FillDuration, cfg.FillKeys, cfg.ReadDuration, cfg.ReadOps, cfg.Readers, cfg.SettleQuiet, cfg.SettleMax)
	fmt.Fprintf(r.out, "# host: %d CPUs, load average at start %s (other load on the machine skews every number)\n", runtime.NumCPU(), loadAvg())
	fmt.Fprintf(r.out, "# write amplification = delta of /proc/self/io %s (fill window; and fill+flush+settle+close) / user bytes (key+value)\n", r.src)

	var results []*Result
	var failed []string
	for _, eng := range cfg.Engines {
		rs := r.runEngine(eng)
		for _, res := range rs {
			if res.Err != nil || res.Failures > 0 {
				failed = append(failed, eng+"/"+res.Workload)
			}
		}
		results = append(results, rs...)
	}

	fmt.Fprintf(r.out, "# load average at end %s\n", loadAvg())
	fmt.Fprintln(r.out)
	printRatios(r.out, r.errw, cfg, results)
	fmt.Fprintln(r.out)
	printTable(r.out, results)
	if len(failed) > 0 {
		return results, fmt.Errorf("failed: %s", strings.Join(failed, ", "))
	}
	return results, nil
}

// resolveBaseDir picks the base directory and refuses memory-backed
// filesystems by default: fsync latency and write amplification on tmpfs
// would be meaningless.
func resolveBaseDir(dir string, stderr io.Writer) (string, error) {
	if dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", err
		}
		if name, mem, err := fsType(dir); err == nil && mem {
			fmt.Fprintf(stderr, "warning: %s is on %s (memory-backed); sync latency and write amp are meaningless\n", dir, name)
		}
		return dir, nil
	}
	tmp := os.TempDir()
	if name, mem, err := fsType(tmp); err == nil && !mem {
		return tmp, nil
	} else if err == nil {
		fmt.Fprintf(stderr, "note: %s is on %s; using a directory under the working directory instead\n", tmp, name)
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	d := filepath.Join(wd, ".enginebench-tmp")
	if err := os.MkdirAll(d, 0o755); err != nil {
		return "", err
	}
	if name, mem, err := fsType(d); err == nil && mem {
		fmt.Fprintf(stderr, "warning: %s is on %s too; pass -dir on a real disk\n", d, name)
	}
	return d, nil
}

func (r *runner) emit(res *Result) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fmt.Fprintln(r.out, formatResult(res))
}

func (r *runner) logf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fmt.Fprintf(r.errw, format+"\n", args...)
}

func (r *runner) engineConfig(sync bool) EngineConfig {
	return EngineConfig{
		MemTableSize:    r.cfg.MemTableSize,
		BlockCacheSize:  r.cfg.BlockCacheSize,
		BloomBitsPerKey: r.cfg.BloomBitsPerKey,
		SyncWrites:      sync,
	}
}

// runEngine runs every selected workload for one engine. Each fill gets a
// fresh directory; the reads run against the data set of the last fill (a
// nosync fill made just for them if no fill workload was selected).
func (r *runner) runEngine(eng string) []*Result {
	var results []*Result
	// Directories are only removed at the end of the whole run: deleting
	// hundreds of MiB mid-run (with online discard, as on the dev VM) was
	// seen to stall the next workload's fsyncs for seconds.
	engDir := filepath.Join(r.runDir, eng)
	var dataDir string
	var nKeys int64
	described := false
	describe := func(e Engine) {
		if !described {
			described = true
			r.mu.Lock()
			fmt.Fprintf(r.out, "# %s: %s\n", eng, e.Describe())
			r.mu.Unlock()
		}
	}
	var engineErr error
	lastFill := ""
	for _, w := range r.cfg.Workloads {
		if isFill(w) {
			lastFill = w
		}
	}
	for _, w := range r.cfg.Workloads {
		if !isFill(w) {
			continue
		}
		res := &Result{Engine: eng, Workload: w, IOSource: r.src.String()}
		if engineErr != nil {
			res.Err = fmt.Errorf("skipped after earlier error: %w", engineErr)
		} else {
			dir := filepath.Join(engDir, w)
			r.fill(eng, dir, w, res, describe)
			switch {
			case res.Err != nil:
				engineErr = res.Err
			case w == lastFill:
				// The reads use the data set of the last fill.
				dataDir, nKeys = dir, res.Keys
			}
		}
		r.emit(res)
		results = append(results, res)
	}

	var reads []string
	for _, w := range r.cfg.Workloads {
		if !isFill(w) {
			reads = append(reads, w)
		}
	}
	if len(reads) == 0 {
		return results
	}
	readErr := engineErr
	if readErr == nil && dataDir == "" {
		// No fill selected: build a data set with an unreported nosync fill.
		dir := filepath.Join(engDir, "prepare")
		prep := &Result{Engine: eng, Workload: FillNoSync, IOSource: r.src.String()}
		r.logf("[%s] preparing read data set with an unreported %s fill", eng, FillNoSync)
		r.fill(eng, dir, FillNoSync, prep, describe)
		if prep.Err != nil {
			readErr = fmt.Errorf("preparing data set: %w", prep.Err)
		} else {
			dataDir, nKeys = dir, prep.Keys
		}
	}
	var e Engine
	var settleTime time.Duration
	if readErr == nil {
		syncAll()
		// Reopen: every engine starts the reads from its on-disk state with a
		// cold block cache, after flushing and settling.
		e, readErr = openEngine(eng, dataDir, r.engineConfig(false))
		if readErr == nil {
			describe(e)
			settleTime, readErr = r.settle(e, eng, "pre-read")
		}
	}
	for _, w := range reads {
		res := &Result{Engine: eng, Workload: w, IOSource: r.src.String(), Keys: nKeys, SettleTime: settleTime}
		if readErr != nil {
			res.Err = readErr
		} else {
			r.read(e, eng, w, nKeys, res)
			if res.Err == nil {
				res.DiskBytes, res.DiskApparent, res.Err = diskUsage(dataDir)
			}
		}
		r.emit(res)
		results = append(results, res)
	}
	if e != nil {
		if err := e.Close(); err != nil && len(results) > 0 {
			last := results[len(results)-1]
			if last.Err == nil {
				last.Err = fmt.Errorf("close: %w", err)
			}
		}
	}
	return results
}

// fill runs one fill workload in a fresh directory: open, write for the
// configured duration/count, then flush + settle + close, and measure.
func (r *runner) fill(eng, dir, w string, res *Result, describe func(Engine)) {
	spec := fillSpecs[w]
	if err := os.RemoveAll(dir); err != nil {
		res.Err = err
		return
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		res.Err = err
		return
	}
	syncAll() // start without earlier workloads' dirty pages pending
	e, err := openEngine(eng, dir, r.engineConfig(spec.sync))
	if err != nil {
		res.Err = fmt.Errorf("open: %w", err)
		return
	}
	describe(e)
	closed := false
	defer func() {
		if !closed {
			e.Close()
		}
	}()

	io0 := readIO()
	var next atomic.Int64 // next key index to claim
	var done atomic.Int64 // completed ops, for progress
	var firstErr atomic.Pointer[error]
	hists := make([]*hdrhistogram.Histogram, spec.writers)
	var wg sync.WaitGroup
	start := time.Now()
	deadline := time.Time{}
	if r.cfg.FillDuration > 0 {
		deadline = start.Add(r.cfg.FillDuration)
	}
	stopProgress := r.progress(eng, w, &done)
	for g := 0; g < spec.writers; g++ {
		h := newHist()
		hists[g] = h
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			rng := rand.NewChaCha8(seedBytes(r.cfg.Seed, uint64(g)+1, uint64(len(w))))
			key := make([]byte, r.cfg.KeySize)
			val := make([]byte, r.cfg.ValueSize)
			for {
				if firstErr.Load() != nil {
					return
				}
				t0 := time.Now()
				if !deadline.IsZero() && !t0.Before(deadline) {
					return
				}
				i := next.Add(1) - 1
				if r.cfg.FillKeys > 0 && i >= r.cfg.FillKeys {
					return
				}
				makeKey(key, uint64(i), false)
				_, _ = rng.Read(val[8:])
				binary.BigEndian.PutUint64(val[:8], valueTag(uint64(i)))
				if err := e.Set(key, val, spec.sync); err != nil {
					firstErr.CompareAndSwap(nil, &err)
					return
				}
				_ = h.RecordValue(int64(time.Since(t0) / time.Microsecond))
				done.Add(1)
			}
		}(g)
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	stopProgress()
	io1 := readIO()
	if p := firstErr.Load(); p != nil {
		res.Err = *p
		return
	}
	n := next.Load()
	if r.cfg.FillKeys > 0 && n > r.cfg.FillKeys {
		n = r.cfg.FillKeys
	}
	res.Ops, res.Keys = n, n
	res.UserBytes = n * int64(r.cfg.KeySize+r.cfg.ValueSize)
	res.Hist = mergeHists(hists)

	res.SettleTime, res.Err = r.settle(e, eng, w)
	if res.Err != nil {
		return
	}
	closed = true
	if err := e.Close(); err != nil {
		res.Err = fmt.Errorf("close: %w", err)
		return
	}
	io2 := readIO()
	res.DevBytesFill = r.src.value(io1) - r.src.value(io0)
	res.DevBytesTotal = r.src.value(io2) - r.src.value(io0)
	res.DiskBytes, res.DiskApparent, res.Err = diskUsage(dir)
}

// settle makes the engine persist its memtable (Quiesce) and then waits
// until it is idle: the engine reports no background work (where it can)
// AND the process has written nothing for SettleQuiet. The same rule is
// applied to every engine; SettleMax bounds the wait.
func (r *runner) settle(e Engine, eng, phase string) (time.Duration, error) {
	start := time.Now()
	if err := e.Quiesce(); err != nil {
		return time.Since(start), fmt.Errorf("quiesce: %w", err)
	}
	last := r.src.value(readIO())
	quietSince := time.Now()
	lastReport := time.Now()
	for {
		time.Sleep(200 * time.Millisecond)
		now := time.Now()
		cur := r.src.value(readIO())
		busy := e.Busy()
		if cur != last || busy {
			quietSince = now
			last = cur
		}
		if now.Sub(quietSince) >= r.cfg.SettleQuiet {
			return now.Sub(start), nil
		}
		if now.Sub(start) >= r.cfg.SettleMax {
			r.logf("[%s] %s: still busy after settle-max %s; continuing anyway", eng, phase, r.cfg.SettleMax)
			return now.Sub(start), nil
		}
		if r.cfg.Progress > 0 && now.Sub(lastReport) >= r.cfg.Progress {
			lastReport = now
			r.logf("[%s] %s: settling for %s (engine busy=%v)", eng, phase, now.Sub(start).Round(time.Second), busy)
		}
	}
}

// read runs readrandom (keys written by the fill) or readmissing (keys
// never written, interleaved with the present ones in key order).
func (r *runner) read(e Engine, eng, w string, nKeys int64, res *Result) {
	if w == ReadRandom && nKeys == 0 {
		res.Err = errors.New("data set is empty")
		return
	}
	var next, done, failures atomic.Int64
	var firstErr atomic.Pointer[error]
	hists := make([]*hdrhistogram.Histogram, r.cfg.Readers)
	var wg sync.WaitGroup
	start := time.Now()
	deadline := time.Time{}
	if r.cfg.ReadDuration > 0 {
		deadline = start.Add(r.cfg.ReadDuration)
	}
	missing := w == ReadMiss
	stopProgress := r.progress(eng, w, &done)
	var userBytes atomic.Int64
	for g := 0; g < r.cfg.Readers; g++ {
		h := newHist()
		hists[g] = h
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(r.cfg.Seed, uint64(g)*7919+uint64(len(w))))
			key := make([]byte, r.cfg.KeySize)
			var bytes int64
			defer func() { userBytes.Add(bytes) }()
			for {
				if firstErr.Load() != nil {
					return
				}
				t0 := time.Now()
				if !deadline.IsZero() && !t0.Before(deadline) {
					return
				}
				if r.cfg.ReadOps > 0 && next.Add(1) > r.cfg.ReadOps {
					return
				}
				var i uint64
				if missing {
					i = rng.Uint64()
				} else {
					i = rng.Uint64N(uint64(nKeys))
				}
				makeKey(key, i, missing)
				vlen := 0
				found, err := e.Get(key, func(v []byte) error {
					vlen = len(v)
					if len(v) != r.cfg.ValueSize || binary.BigEndian.Uint64(v[:8]) != valueTag(i) {
						return errWrongValue
					}
					return nil
				})
				lat := time.Since(t0)
				if errors.Is(err, errWrongValue) {
					failures.Add(1)
					err = nil
				}
				if err != nil {
					firstErr.CompareAndSwap(nil, &err)
					return
				}
				if found == missing {
					failures.Add(1)
				}
				bytes += int64(len(key) + vlen)
				_ = h.RecordValue(int64(lat / time.Microsecond))
				done.Add(1)
			}
		}(g)
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	stopProgress()
	if p := firstErr.Load(); p != nil {
		res.Err = *p
		return
	}
	res.Ops = done.Load()
	res.UserBytes = userBytes.Load()
	res.Failures = failures.Load()
	res.Hist = mergeHists(hists)
	if res.Failures > 0 {
		r.logf("[%s] %s: %d wrong answers (absent present key, present missing key, or wrong value)", eng, w, res.Failures)
	}
}

var errWrongValue = errors.New("wrong value")

// progress prints "engine workload ops" every cfg.Progress on stderr until
// the returned stop function is called.
func (r *runner) progress(eng, w string, done *atomic.Int64) func() {
	if r.cfg.Progress <= 0 {
		return func() {}
	}
	stop := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(r.cfg.Progress)
		defer t.Stop()
		start := time.Now()
		var prev int64
		for {
			select {
			case <-stop:
				return
			case now := <-t.C:
				d := done.Load()
				r.logf("[progress] engine=%s workload=%s ops=%d elapsed=%s rate=%.0f ops/s",
					eng, w, d, now.Sub(start).Round(time.Second), float64(d-prev)/r.cfg.Progress.Seconds())
				prev = d
			}
		}
	}()
	return func() { close(stop); <-finished }
}

// makeKey fills key (len = KeySize) with the key of index i: 16 hex digits
// of a hash of i (so the fill order is random in key order), 16 hex digits
// of i (uniqueness), '.' padding, and a last byte 'p' for present keys or
// 'm' for the keys readmissing looks up. Missing keys use a different hash
// so they interleave with present keys rather than sorting after them.
func makeKey(key []byte, i uint64, missing bool) {
	const hexd = "0123456789abcdef"
	salt := uint64(0x9e3779b97f4a7c15)
	last := byte('p')
	if missing {
		salt = 0xc2b2ae3d27d4eb4f
		last = 'm'
	}
	h := splitmix64(i ^ salt)
	for j := 0; j < 16; j++ {
		key[j] = hexd[(h>>(60-4*j))&0xf]
		key[16+j] = hexd[(i>>(60-4*j))&0xf]
	}
	for j := 32; j < len(key)-1; j++ {
		key[j] = '.'
	}
	key[len(key)-1] = last
}

// valueTag is stored in the first 8 bytes of key i's value so reads can
// check they got the right value.
func valueTag(i uint64) uint64 { return splitmix64(i + 0x1234567) }

func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

func seedBytes(a, b, c uint64) [32]byte {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[0:], splitmix64(a))
	binary.LittleEndian.PutUint64(s[8:], splitmix64(b))
	binary.LittleEndian.PutUint64(s[16:], splitmix64(c))
	binary.LittleEndian.PutUint64(s[24:], splitmix64(a^b^c))
	return s
}

// Latencies are recorded in microseconds, 1 µs .. 10 min, 3 significant
// digits.
func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(1, 600_000_000, 3) }

func mergeHists(hs []*hdrhistogram.Histogram) *hdrhistogram.Histogram {
	m := newHist()
	for _, h := range hs {
		m.Merge(h)
	}
	return m
}

// loadAvg returns the 1/5/15-minute load averages from /proc/loadavg.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "n/a"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "n/a"
	}
	return strings.Join(f[:3], " ")
}
