package antientropy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tierkv/tierkv/ring"
)

// SchedulerOptions configures a Scheduler.
type SchedulerOptions struct {
	// Self is this node's id. Periodic passes repair a range only with
	// peers whose id is greater (the peer runs the pairs with smaller ids,
	// and one repair covers both directions); Trigger repairs with all.
	Self ring.NodeID
	// Local is this replica's side. Required.
	Local *Local
	// Plan returns the work of a pass: typically Plan(ring, Self, rf) on
	// the current ring. Required.
	Plan func() []Work
	// Peer returns the Peer of a replica, or an error if it is down or
	// unreachable (the pair is counted as failed and the pass goes on).
	// Required.
	Peer func(ctx context.Context, id ring.NodeID) (Peer, error)
	// Interval is the time from the end of a periodic pass to the start
	// of the next. Default 1 h.
	Interval time.Duration
	// Clock drives the interval. Default: Local's clock.
	Clock Clock
	// Logger receives a line per failed pair and per pass. Default
	// slog.Default().
	Logger *slog.Logger
}

// Progress is the state of the running (or last) pass.
type Progress struct {
	// Running reports a pass in progress.
	Running bool
	// PairsTotal is the number of (peer, range) pairs of the pass, and
	// PairsDone how many are finished (repaired or failed).
	PairsTotal, PairsDone int
}

// Metrics are the Scheduler's counters, for the node to export.
type Metrics struct {
	Progress
	// Passes counts finished passes; FailedPairs counts (peer, range)
	// pairs that failed.
	Passes, FailedPairs uint64
	// Totals sums the Stats of every repair since the Scheduler started.
	Totals Stats
	// LastPassStart and LastPassEnd bound the last finished pass (zero
	// before the first).
	LastPassStart, LastPassEnd time.Time
	// LastPassErr is the last error of the last finished pass, if any.
	LastPassErr error
}

// Scheduler repairs this node's ranges with their other replicas, every
// Interval after Start and whenever Trigger is called. One pass runs at a
// time. Rate limiting is the Local's Options.Limiter, shared by all passes.
type Scheduler struct {
	opts SchedulerOptions

	pass sync.Mutex // held for the duration of a pass

	// mu guards the metrics.
	mu struct {
		sync.Mutex
		m Metrics
	}

	closed atomic.Bool
	cancel context.CancelFunc
	ctx    context.Context
	wg     sync.WaitGroup
	start  sync.Once

	// passDoneForTesting, if set, is called after each periodic pass.
	passDoneForTesting func()
}

// NewScheduler returns a Scheduler; Start starts its periodic passes.
func NewScheduler(opts SchedulerOptions) (*Scheduler, error) {
	if opts.Local == nil || opts.Plan == nil || opts.Peer == nil {
		return nil, errors.New("antientropy: SchedulerOptions needs Local, Plan and Peer")
	}
	if opts.Interval == 0 {
		opts.Interval = time.Hour
	}
	if opts.Interval < 0 {
		return nil, errors.New("antientropy: negative Interval")
	}
	if opts.Clock == nil {
		opts.Clock = opts.Local.opts.Clock
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Scheduler{opts: opts}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// Start starts the periodic passes, the first one after Interval. Calling it
// again does nothing.
func (s *Scheduler) Start() {
	s.start.Do(func() {
		s.wg.Add(1)
		go s.loop()
	})
}

func (s *Scheduler) loop() {
	defer s.wg.Done()
	for {
		if err := s.opts.Clock.Sleep(s.ctx, s.opts.Interval); err != nil {
			return
		}
		_, _ = s.run(s.ctx, false)
		if s.passDoneForTesting != nil {
			s.passDoneForTesting()
		}
	}
}

// Trigger runs a pass now over every range and every one of its peers
// (the admin endpoint calls it), waiting for a running pass to end first. It
// returns the pass's stats and its first error; a failed pair does not stop
// the pass.
func (s *Scheduler) Trigger(ctx context.Context) (Stats, error) {
	if s.closed.Load() {
		return Stats{}, ErrClosed
	}
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { // NB: ends with the call (stop) or at Close.
		select {
		case <-s.ctx.Done():
			stop()
		case <-ctx.Done():
		}
	}()
	return s.run(ctx, true)
}

// run is one pass: the work is grouped by peer, and each peer gets one
// repair session over all its ranges (one scan on each side).
func (s *Scheduler) run(ctx context.Context, all bool) (Stats, error) {
	s.pass.Lock()
	defer s.pass.Unlock()
	byPeer := map[ring.NodeID][]ring.Range{}
	var peers []ring.NodeID
	total := 0
	for _, w := range s.opts.Plan() {
		for _, p := range w.Peers {
			if !all && p <= s.opts.Self {
				continue
			}
			if _, ok := byPeer[p]; !ok {
				peers = append(peers, p)
			}
			byPeer[p] = append(byPeer[p], w.Range)
			total++
		}
	}
	slices.Sort(peers)
	start := s.opts.Clock.Now()
	s.mu.Lock()
	s.mu.m.Progress = Progress{Running: true, PairsTotal: total}
	s.mu.Unlock()

	var st Stats
	var firstErr error
	for _, id := range peers {
		ranges := byPeer[id]
		pst, err := s.repairPeer(ctx, id, ranges)
		st.Add(pst)
		failed := pst.RangesFailed
		if err != nil {
			failed = len(ranges)
			err = fmt.Errorf("antientropy: repair with %s: %w", id, err)
			s.opts.Logger.Warn("anti-entropy repair failed", "peer", id, "ranges", len(ranges), "err", err)
			if firstErr == nil {
				firstErr = err
			}
		}
		s.mu.Lock()
		s.mu.m.PairsDone += len(ranges)
		s.mu.m.FailedPairs += uint64(failed)
		s.mu.m.Totals.Add(pst)
		s.mu.Unlock()
		if ctx.Err() != nil {
			break
		}
	}
	end := s.opts.Clock.Now()
	s.mu.Lock()
	s.mu.m.Running = false
	s.mu.m.Passes++
	s.mu.m.LastPassStart, s.mu.m.LastPassEnd, s.mu.m.LastPassErr = start, end, firstErr
	s.mu.Unlock()
	s.opts.Logger.Info("anti-entropy pass done", "pairs", total, "fetched", st.KeysFetched, "pushed", st.KeysPushed,
		"leaves_differing", st.LeavesDiffering, "duration", end.Sub(start), "err", firstErr)
	return st, firstErr
}

func (s *Scheduler) repairPeer(ctx context.Context, id ring.NodeID, ranges []ring.Range) (Stats, error) {
	p, err := s.opts.Peer(ctx, id)
	if err != nil {
		return Stats{}, err
	}
	return s.opts.Local.Repair(ctx, p, ranges)
}

// Progress returns the state of the running or last pass.
func (s *Scheduler) Progress() Progress {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.m.Progress
}

// Metrics returns a snapshot of the Scheduler's counters.
func (s *Scheduler) Metrics() Metrics {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mu.m
}

// Close stops the periodic passes, cancels a running pass (and Triggers)
// and waits for the loop to end. It is idempotent.
func (s *Scheduler) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.cancel()
	s.wg.Wait()
	return nil
}
