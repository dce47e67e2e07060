package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	sockaddr "github.com/hashicorp/go-sockaddr"
	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	kvv1 "github.com/tierkv/tierkv/api/kv/v1"
	"github.com/tierkv/tierkv/lsm"
	"github.com/tierkv/tierkv/node/antientropy"
	"github.com/tierkv/tierkv/node/shards"
	"github.com/tierkv/tierkv/objectstore"
	"github.com/tierkv/tierkv/ring"
	"github.com/tierkv/tierkv/ring/gossip"
	"github.com/tierkv/tierkv/tiering"
)

// Node is a running tierkv server: engine, hint store, gossip membership,
// coordinator, and the HTTP and gRPC APIs. Its methods are safe for
// concurrent use.
type Node struct {
	cfg   Config
	log   *slog.Logger
	id    ring.NodeID
	db    *lsm.DB
	hints *hintStore
	// tier is the engine's objstorage.Provider: cold tables go to bucket.
	tier     *tiering.Manager
	bucket   objectstore.Bucket
	fallback objectstore.Bucket // nil: none
	// shardSrv serves the shards peers place here and shardOpts builds
	// this node's fallback over its peers (nil, zero: peer shards off).
	shardSrv     *shards.Server
	shardOpts    shards.Options
	shardRebuild sync.Mutex
	shardKick    chan struct{}
	// members is what watchMembership last saw of each member.
	members struct {
		sync.Mutex
		seen map[ring.NodeID]gossip.Meta
	}
	bucketDesc    string
	bucketClosers []func() error
	g             *gossip.Gossip
	hlc           *HLC
	reg           *prometheus.Registry
	m             *metrics
	// tp is the tracer provider, nil when tracing is off.
	tp     *sdktrace.TracerProvider
	tracer trace.Tracer
	// ae is the engine's anti-entropy side; aeSched repairs this node's
	// ranges with their other replicas (repair.go).
	ae      *antientropy.Local
	aeSched *antientropy.Scheduler
	// writePipes and readPipes carry the writes and reads to each remote
	// replica (pipe.go).
	writePipes pipes[*applyReq]
	readPipes  pipes[*readReq]
	// walSync times the engine's WAL syncs (metrics.go).
	walSync prometheus.Histogram
	// drain is closed when Close begins: replica streams end.
	drain chan struct{}
	// ringViews caches the read and future views of the ring (placement.go).
	ringViews atomic.Pointer[ringViews]
	// topo is the progress of a join or decommission (topology.go).
	topo            topoProgress
	decommissioning atomic.Bool
	decommissioned  chan struct{}
	// replace is the progress of a --replace start (replace.go).
	replace replaceProgress

	grpcSrv *grpc.Server
	httpSrv *http.Server
	health  *health.Server
	grpcLn  net.Listener
	httpLn  net.Listener

	// inflight is a semaphore bounding client requests.
	inflight chan struct{}
	closing  atomic.Bool
	// bg tracks goroutines that outlive a request (late replica calls,
	// background read repair, hint replay); Close waits for them.
	bg       sync.WaitGroup
	stop     chan struct{}
	kick     chan struct{}
	unsub    func()
	serveErr chan error

	peers struct {
		sync.Mutex
		// conns holds one client connection per peer, keyed by id; a
		// peer whose gossiped address changed gets a new one.
		conns map[ring.NodeID]*peerConn
	}
	closeOnce sync.Once
	closeErr  error

	// ident is the persisted identity once joined; mu serialises clock id
	// changes and their persistence.
	ident struct {
		sync.Mutex
		id identity
	}

	// applyHookForTesting, if set, runs before the Replica service applies
	// a mutation (tests make replicas hang with it).
	applyHookForTesting atomic.Pointer[func(context.Context)]
	// readHookForTesting, if set, runs before the Replica service answers
	// a read call or a read stream message, with the keys it reads.
	readHookForTesting atomic.Pointer[func(ctx context.Context, keys [][]byte)]
	// pipeSendHookForTesting, if set, runs before a pipe sends a message,
	// with the pipe's kind ("write", "read"), its replica and the message's
	// request count (tests hold a sender with it so that requests queue).
	pipeSendHookForTesting atomic.Pointer[func(kind string, id ring.NodeID, reqs int)]
	// streamHookForTesting, if set, runs after each batch a stream from a
	// peer applied; an error breaks the stream there (tests of resumption).
	streamHookForTesting atomic.Pointer[func(peer ring.NodeID) error]
	// skipFinalBackupForTesting makes Close leave out the final manifest
	// backup, as a crash would (replace tests).
	skipFinalBackupForTesting atomic.Bool
}

type peerConn struct {
	addr string
	cc   *grpc.ClientConn
	rc   kvv1.ReplicaClient
}

// Open starts a node: it opens the engine and the hint store in
// cfg.DataDir, starts listening, joins the cluster through cfg.Seeds and,
// on its first start, allocates and persists its tokens. cfg is copied.
func Open(cfg *Config) (_ *Node, err error) {
	c := *cfg
	c.Seeds = slices.Clone(c.Seeds)
	c.EnsureDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if c.Replace != "" {
		c.ID = c.Replace
	}
	if err := os.MkdirAll(c.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	ident, found, err := loadIdentity(c.DataDir)
	if err != nil {
		return nil, err
	}
	switch {
	case !found && c.ID == "":
		ident.ID = randomID()
	case !found:
		ident.ID = c.ID
	case c.ID != "" && c.ID != ident.ID:
		return nil, fmt.Errorf("node: data_dir %s belongs to node %q, not %q", c.DataDir, ident.ID, c.ID)
	}
	if found && ident.Decommissioned {
		return nil, fmt.Errorf("node: data_dir %s belongs to node %q, which was decommissioned; start on an empty data_dir to join again", c.DataDir, ident.ID)
	}
	ident.Generation = max(ident.Generation+1, uint64(c.Clock.Now().UnixNano()))
	if err := saveIdentity(c.DataDir, ident); err != nil {
		return nil, fmt.Errorf("node: save identity: %w", err)
	}
	c.ID = ident.ID

	n := &Node{
		cfg:       c,
		walSync:   newWALSyncHistogram(),
		log:       c.Logger.With("node", c.ID),
		id:        ring.NodeID(c.ID),
		hlc:       NewHLC(c.Clock, 0), // the clock id is set by join
		inflight:  make(chan struct{}, c.MaxInFlight),
		stop:      make(chan struct{}),
		drain:     make(chan struct{}),
		kick:      make(chan struct{}, 1),
		shardKick: make(chan struct{}, 1),
		serveErr:  make(chan error, 2),

		decommissioned: make(chan struct{}),
	}
	n.peers.conns = make(map[ring.NodeID]*peerConn)
	if c.streamHookForTesting != nil {
		n.streamHookForTesting.Store(&c.streamHookForTesting)
	}
	openStart := c.Clock.Now()
	var cleanup []func()
	defer func() {
		if err != nil {
			for _, f := range slices.Backward(cleanup) {
				f()
			}
		}
	}()

	eo := lsm.Options{}
	if c.EngineOptions != nil {
		eo = *c.EngineOptions
	}
	if err := n.openBuckets(); err != nil {
		n.closeBuckets()
		return nil, err
	}
	cleanup = append(cleanup, func() { n.closeBuckets() })
	// listenAndJoin opens the listeners, starts gossip and joins the
	// cluster (taking tokens and a clock id). It runs once the engine is
	// open, except for a replacement, which needs the ring to restore (its
	// fallback store may be its peers).
	joined := false
	listenAndJoin := func() error {
		if n.grpcLn, err = net.Listen("tcp", c.GRPCAddr); err != nil {
			return fmt.Errorf("node: listen grpc: %w", err)
		}
		cleanup = append(cleanup, func() { n.grpcLn.Close() })
		if n.httpLn, err = net.Listen("tcp", c.HTTPAddr); err != nil {
			return fmt.Errorf("node: listen http: %w", err)
		}
		cleanup = append(cleanup, func() { n.httpLn.Close() })

		if err := n.startTracing(); err != nil {
			return err
		}
		cleanup = append(cleanup, func() { n.stopTracing(context.Background()) })
		n.reg = prometheus.NewRegistry()
		n.m = newMetrics(n)
		if err := n.startGossip(ident); err != nil {
			return err
		}
		cleanup = append(cleanup, func() { n.g.Close() })

		if err := n.join(&ident); err != nil {
			return err
		}
		n.ident.id = ident
		joined = true
		return nil
	}
	engineDir := filepath.Join(c.DataDir, "data")
	rs, err := n.prepareReplace(found)
	if err != nil {
		return nil, err
	}
	if rs != nil && rs.Phase == phaseRestoring {
		if err := listenAndJoin(); err != nil {
			return nil, err
		}
		if err := n.restoreEngine(rs, engineDir); err != nil {
			return nil, err
		}
	}
	if err := n.openTiering(engineDir, &eo); err != nil {
		return nil, err
	}
	cleanup = append(cleanup, func() { n.tier.Close() })
	eo.Provider = n.tier
	eo.Logger = n.log
	eo.Clock = c.Clock
	eo.VersionTime = VersionTime
	eo.MaxKeySize = c.MaxKeySize
	eo.MaxValueSize = c.MaxValueSize
	if c.MemTableSize > 0 {
		eo.MemTableSize = c.MemTableSize
	}
	eo.TombstoneGracePeriod = c.TombstoneGracePeriod
	prevSync := eo.EventListener.WALSync
	eo.EventListener.WALSync = func(d time.Duration) {
		n.walSync.Observe(d.Seconds())
		if prevSync != nil {
			prevSync(d)
		}
	}
	if n.db, err = lsm.Open(engineDir, &eo); err != nil {
		return nil, fmt.Errorf("node: open engine: %w", err)
	}
	cleanup = append(cleanup, func() { n.db.Close() })
	if err := n.openAntiEntropy(c.TombstoneGracePeriod); err != nil {
		return nil, err
	}
	cleanup = append(cleanup, func() { n.aeSched.Close() })
	if n.hints, err = openHintStore(filepath.Join(c.DataDir, "hints"), &c); err != nil {
		return nil, err
	}
	cleanup = append(cleanup, func() { n.hints.close() })

	if !joined {
		if err := listenAndJoin(); err != nil {
			return nil, err
		}
	}

	n.grpcSrv = n.newGRPCServer()
	n.httpSrv = &http.Server{
		Handler:           n.httpHandler(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(n.log.Handler(), slog.LevelWarn),
	}
	n.waitPeersUp()
	go func() { n.serveErr <- n.grpcSrv.Serve(n.grpcLn) }()
	go func() { n.serveErr <- n.httpSrv.Serve(n.httpLn) }()
	cleanup = append(cleanup, func() { n.grpcSrv.Stop(); n.httpSrv.Close(); <-n.serveErr; <-n.serveErr })
	n.unsub = n.g.Subscribe(func(ev gossip.Event) {
		switch ev.Type {
		case gossip.EventUp:
			n.resetBackoff(ev.Member.ID)
			n.kickHints()
		case gossip.EventJoin, gossip.EventUpdate:
			if ev.Member.HasClockID {
				n.checkClockID()
			}
		}
		n.watchMembership(ev)
	})
	n.checkClockID() // members seen before the subscription
	// Nothing fails after this point: the background uploads, backups and
	// GC start only once the node is certain to run.
	n.tier.Attach(n.db)
	n.aeSched.Start()
	if n.shardSrv != nil {
		n.bg.Add(1)
		go n.shardLoop()
	}
	if ident.Joining {
		n.bg.Add(1)
		go n.bootstrap()
	}
	if rs != nil {
		n.replace.set(func(p *replaceProgress) { p.serving = c.Clock.Now().Sub(openStart) })
		n.bg.Add(1)
		go n.catchUp(rs, openStart)
	}
	n.bg.Add(2)
	go n.hintLoop()
	go n.joinLoop()
	n.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	n.health.SetServingStatus(kvv1.KV_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	n.log.Info("node started", "http", n.HTTPAddr(), "grpc", n.GRPCAddr(), "gossip", n.GossipAddr(), "tokens", len(ident.Tokens), "object_store", n.bucketDesc)
	return n, nil
}

func splitHostPort(addr string) (string, int, error) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	return h, port, err
}

// advertise returns the address peers and clients use for a listener:
// AdvertiseHost if set; else the listen host unless it is unspecified
// (0.0.0.0, ::), in which case the machine's private IP, as memberlist does.
func (n *Node) advertise(addr net.Addr) string {
	h, p, _ := net.SplitHostPort(addr.String())
	host := n.cfg.AdvertiseHost
	if host == "" {
		host = h
		if ip := net.ParseIP(h); ip != nil && ip.IsUnspecified() {
			if priv, err := sockaddr.GetPrivateIP(); err == nil && priv != "" {
				host = priv
			} else {
				host = "127.0.0.1"
			}
		}
	}
	return net.JoinHostPort(host, p)
}

func (n *Node) startGossip(ident identity) error {
	gc := gossip.DefaultConfig()
	if n.cfg.GossipProfile == "local" {
		gc = gossip.LocalConfig()
	}
	host, port, err := splitHostPort(n.cfg.GossipAddr)
	if err != nil {
		return fmt.Errorf("node: gossip_addr %q: %w", n.cfg.GossipAddr, err)
	}
	gc.ID = n.id
	gc.Zone = n.cfg.Zone
	gc.RPCAddr = n.advertise(n.grpcLn.Addr())
	gc.HTTPAddr = n.advertise(n.httpLn.Addr())
	gc.Generation = ident.Generation
	gc.Tokens = ident.Tokens
	if ident.ClockID != nil {
		gc.HasClockID, gc.ClockID = true, *ident.ClockID
	}
	gc.State = ring.StateJoining
	if len(ident.Tokens) > 0 && !ident.Joining {
		gc.State = ring.StateNormal
	}
	gc.BindAddr, gc.BindPort = host, port
	gc.AdvertiseAddr = n.cfg.AdvertiseHost
	gc.Seeds = n.cfg.Seeds
	gc.Transport = n.cfg.GossipTransport
	gc.Ring = ring.Options{VNodes: n.cfg.VNodes, ReplicationFactor: n.cfg.ReplicationFactor}
	gc.Logger = n.log.With("component", "gossip")
	if n.g, err = gossip.New(gc); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	return nil
}

// join contacts the seeds and, on a first start, allocates tokens on the
// ring as the seeds describe it and persists them.
// NB: joins must be serialised (docs/ring.md); `tierkv dev` and the test
// harnesses start nodes one after the other.
func (n *Node) join(ident *identity) error {
	if len(n.cfg.Seeds) > 0 {
		if k, err := n.g.Join(); err != nil {
			if len(ident.Tokens) == 0 {
				n.log.Warn("no seed reachable; starting a new cluster", "seeds", n.cfg.Seeds, "err", err)
			} else {
				n.log.Warn("no seed reachable; peers will reconnect", "seeds", n.cfg.Seeds, "err", err)
			}
		} else {
			n.log.Info("joined", "reached", k)
		}
	}
	return n.takeIdentity(ident)
}

// waitPeersUp waits, for a bounded time, until the failure detector has
// heard from every member on the ring, so that a restarted node does not
// answer its first requests with "too few live replicas" while it is only
// its own view that is behind. Peers that stay down do not block the start
// for longer than ten heartbeat intervals.
func (n *Node) waitPeersUp() {
	interval := time.Second
	if n.cfg.GossipProfile == "local" {
		interval = 200 * time.Millisecond
	}
	deadline := time.Now().Add(10 * interval)
	for time.Now().Before(deadline) {
		all := true
		for _, m := range n.g.Ring().Members() {
			if !n.up(m.ID) {
				all = false
				break
			}
		}
		if all {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	n.log.Warn("starting while some peers are down")
}

// ID returns the node's id.
func (n *Node) ID() string { return string(n.id) }

// HTTPAddr returns the address the HTTP API listens on.
func (n *Node) HTTPAddr() string { return n.httpLn.Addr().String() }

// GRPCAddr returns the address the gRPC API listens on.
func (n *Node) GRPCAddr() string { return n.grpcLn.Addr().String() }

// GossipAddr returns the node's gossip address (a seed for others).
func (n *Node) GossipAddr() string { return n.g.LocalAddr() }

// Ring returns the node's current view of the ring.
func (n *Node) Ring() *ring.Ring { return n.g.Ring() }

// Up reports whether the node considers id live (itself always).
func (n *Node) Up(id string) bool { return n.up(ring.NodeID(id)) }

func (n *Node) up(id ring.NodeID) bool { return id == n.id || n.g.Up(id) }

// Registry returns the node's Prometheus registry.
func (n *Node) Registry() *prometheus.Registry { return n.reg }

// HintsPending returns the number of hints not yet delivered.
func (n *Node) HintsPending() int64 { return n.hints.pending.Load() }

// Ready reports whether the node sees want members with tokens, all Up and
// NORMAL (joins streamed).
func (n *Node) Ready(want int) bool {
	ms := n.g.Ring().Members()
	if len(ms) < want {
		return false
	}
	for _, m := range ms {
		if len(m.Tokens) == 0 || !n.up(m.ID) || m.State != ring.StateNormal {
			return false
		}
	}
	return true
}

// ReadLocalForTesting returns this node's own newest version of key,
// bypassing the coordinator (tests check one replica alone with it).
func (n *Node) ReadLocalForTesting(key []byte) (lsm.Entry, error) { return n.db.GetEntry(key) }

// SetLocalForTesting writes a version straight into this node's engine.
func (n *Node) SetLocalForTesting(key, value []byte, version uint64) error {
	return n.db.Set(key, value, version, lsm.Sync)
}

func (n *Node) peer(id ring.NodeID) (kvv1.ReplicaClient, error) {
	p, err := n.peerConn(id)
	if err != nil {
		return nil, err
	}
	return p.rc, nil
}

// conn returns the client connection to peer id (shared by the internode
// services).
func (n *Node) conn(id ring.NodeID) (*grpc.ClientConn, error) {
	p, err := n.peerConn(id)
	if err != nil {
		return nil, err
	}
	return p.cc, nil
}

func (n *Node) peerConn(id ring.NodeID) (*peerConn, error) {
	mem, ok := n.g.Member(id)
	if !ok || mem.RPCAddr == "" {
		return nil, errorf(ErrUnavailable, "replica %s has no known address", id)
	}
	n.peers.Lock()
	defer n.peers.Unlock()
	if n.peers.conns == nil {
		return nil, ErrClosed
	}
	if p, ok := n.peers.conns[id]; ok && p.addr == mem.RPCAddr {
		return p, nil
	} else if ok {
		p.cc.Close()
	}
	cc, err := grpc.NewClient(mem.RPCAddr, n.clientOptions()...)
	if err != nil {
		return nil, err
	}
	p := &peerConn{addr: mem.RPCAddr, cc: cc, rc: kvv1.NewReplicaClient(cc)}
	n.peers.conns[id] = p
	return p, nil
}

// resetBackoff makes the connection to a peer that came up reconnect now:
// a connection waiting out its backoff is replaced by a new one at its next
// use. (grpc's ClientConn.ResetConnectBackoff reads the connection's
// subchannel map without its lock, racing with a subchannel being created.)
func (n *Node) resetBackoff(id ring.NodeID) {
	n.peers.Lock()
	defer n.peers.Unlock()
	if p, ok := n.peers.conns[id]; ok && p.cc.GetState() == connectivity.TransientFailure {
		p.cc.Close()
		delete(n.peers.conns, id)
	}
}

func (n *Node) clientOptions() []grpc.DialOption {
	return append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		// A restarted peer must be reachable again within about a second
		// (grpc's default backoff grows to two minutes); gossip also
		// resets the backoff when the peer comes up.
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{
			BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second,
		}, MinConnectTimeout: time.Second}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(n.maxMsgSize()), grpc.MaxCallSendMsgSize(n.maxMsgSize())),
	}, n.tracingDialOptions()...)
}

// maxMsgSize bounds gRPC messages: a largest key and value, or an
// anti-entropy answer (digests up to 3 MiB, batches of about 1 MiB plus one
// largest entry).
func (n *Node) maxMsgSize() int { return n.cfg.MaxKeySize + n.cfg.MaxValueSize + 4<<20 }

// backgroundContext returns a context for background work that ends when
// the node stops (Close) or cancel is called.
func (n *Node) backgroundContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-n.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

func (n *Node) kickHints() {
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

// hintLoop offers pending hints to replicas that are up, every
// HintReplayInterval and whenever a peer comes up.
func (n *Node) hintLoop() {
	defer n.bg.Done()
	t := time.NewTicker(n.cfg.HintReplayInterval)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		case <-n.kick:
		}
		for _, target := range n.hints.targets() {
			if !n.up(target) {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*n.cfg.ReplicaTimeout)
			err := n.hints.replay(ctx, target, func(ctx context.Context, m *kvv1.Mutation) error {
				return n.applyTo(ctx, target, m)
			})
			cancel()
			if err != nil {
				n.log.Debug("hint replay stopped", "target", target, "err", err)
			}
			select {
			case <-n.stop:
				return
			default:
			}
		}
	}
}

// joinLoop retries the seeds while this node reaches no peer: a node
// restarted before its peers noticed that it had gone may be refused at
// first (memberlist's dead-node reclaim), and the peers' reconnect loops
// may know an old address.
func (n *Node) joinLoop() {
	defer n.bg.Done()
	if len(n.cfg.Seeds) == 0 {
		return
	}
	interval := 10 * time.Second
	if n.cfg.GossipProfile == "local" {
		interval = 500 * time.Millisecond
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		reached := false
		for _, m := range n.g.Members() {
			if m.ID != n.id && m.Reachable {
				reached = true
				break
			}
		}
		if !reached {
			if _, err := n.g.Join(); err != nil {
				n.log.Debug("rejoin failed", "err", err)
			}
		}
	}
}

// Close shuts the node down gracefully: it stops accepting requests,
// drains in-flight ones (up to ShutdownTimeout), stops gossip, flushes
// the engine, uploads a final manifest backup (bounded by ShutdownTimeout
// too), and closes the engine, tiering and the buckets. It is idempotent.
func (n *Node) Close() error {
	n.closeOnce.Do(func() { n.closeErr = n.close() })
	return n.closeErr
}

// stopping reports whether Close has stopped the node's background work.
func (n *Node) stopping() bool {
	select {
	case <-n.stop:
		return true
	default:
		return false
	}
}

func (n *Node) close() error {
	n.closing.Store(true)
	close(n.drain)
	n.health.Shutdown()
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ShutdownTimeout)
	defer cancel()
	var errs []error
	if err := n.httpSrv.Shutdown(ctx); err != nil {
		errs = append(errs, err)
	}
	stopped := make(chan struct{})
	go func() { n.grpcSrv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-ctx.Done():
		n.grpcSrv.Stop()
		<-stopped
	}
	<-n.serveErr
	<-n.serveErr
	close(n.stop)
	n.unsub()
	if err := n.aeSched.Close(); err != nil && !errors.Is(err, antientropy.ErrClosed) {
		errs = append(errs, err)
	}
	n.bg.Wait()
	// NB: bounded, like the drain: a flush that keeps failing (a full
	// disk) is retried forever and must not hold the shutdown. The writes
	// are in the WAL; the next start replays them.
	fctx, fcancel := context.WithTimeout(context.Background(), n.cfg.ShutdownTimeout)
	if err := n.db.FlushContext(fctx); errors.Is(err, context.DeadlineExceeded) {
		n.log.Warn("memtable flush did not finish within shutdown_timeout; stopping without it (the WAL holds the writes, replayed at the next start)",
			"shutdown_timeout", n.cfg.ShutdownTimeout)
	} else if err != nil && !errors.Is(err, lsm.ErrClosed) {
		errs = append(errs, err)
	}
	fcancel()
	// The final manifest backup: a replacement restores from it. Its own
	// budget, since the drain may have used up ctx's. It runs while gossip
	// and the peer connections are up: the fallback store may be the
	// peers. A failure is logged, not returned: the engine's files are
	// intact and the previous backups stand (the last node of a cluster
	// that stops has no peers left to hold its shards).
	bctx, bcancel := context.WithTimeout(context.Background(), n.cfg.ShutdownTimeout)
	if n.skipFinalBackupForTesting.Load() {
		// As after kill -9: no final backup (tiering.Close stops the loop).
	} else if err := n.tier.Shutdown(bctx); err != nil {
		n.log.Warn("final manifest backup failed; the previous backups stand", "err", err)
	}
	bcancel()
	if err := n.g.Close(); err != nil {
		errs = append(errs, err)
	}
	n.peers.Lock()
	for _, p := range n.peers.conns {
		p.cc.Close()
	}
	n.peers.conns = nil
	n.peers.Unlock()
	errs = append(errs, n.hints.close(), n.db.Close(), n.tier.Close(), n.closeBuckets(), n.stopTracing(ctx))
	n.log.Info("node stopped")
	return errors.Join(errs...)
}
