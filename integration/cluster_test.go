// Package integration runs real tierkv processes on loopback. TestMain
// builds the binary once; every test starts its own cluster with free
// ports and temporary data directories.
package integration

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	kvv1 "github.com/tierkv/tierkv/api/kv/v1"
	"github.com/tierkv/tierkv/client"
)

var tierkvBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tierkv-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	tierkvBin = filepath.Join(dir, "tierkv")
	build := exec.Command("go", "build", "-o", tierkvBin, "github.com/tierkv/tierkv/cmd/tierkv")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build tierkv:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		// Goroutines of the tests (output readers, waiters) must have ended.
		if err := goleak.Find(goleak.IgnoreTopFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run")); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// freePort returns a loopback port free for TCP and UDP (gossip uses both).
// It is below the kernel's ephemeral range, so that no outbound
// connection (a peer's, another test's) and no listener on port 0 can
// take it between this check and the process binding it, or while the
// process is down between a kill and its restart on the same port. (A
// port from port 0 is in that range: a three-node start failed with
// "address already in use" once that way.)
func freePort(t testing.TB) int {
	t.Helper()
	lo, hi := unassignedPorts()
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 1000 {
		port := lo + rand.IntN(hi-lo)
		if portsUsed[port] {
			continue
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		pc, err := net.ListenPacket("udp", addr)
		l.Close()
		if err == nil {
			pc.Close()
			portsUsed[port] = true
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

var (
	portsMu   sync.Mutex
	portsUsed = map[int]bool{} // handed out by freePort in this test binary
)

// unassignedPorts returns [lo, hi): ports the kernel does not hand out
// for port 0, below its ephemeral range (Linux's
// ip_local_port_range; 32768 if it cannot be read).
func unassignedPorts() (lo, hi int) {
	hi = 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil && v > 2048 {
				hi = v
			}
		}
	}
	return max(1024, hi-20000), hi
}

type proc struct {
	id                 string
	dir                string
	http, grpc, gossip string
	cmd                *exec.Cmd
	done               chan struct{}
	stderr             *lockedBuffer
	// extra are flags for this process only (e.g. --replace).
	extra []string
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() < 1<<20 {
		l.b.Write(p)
	}
	return len(p), nil
}

func (l *lockedBuffer) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// cluster is n tierkv processes; a killed process restarts with the same
// id, addresses and data directory.
type cluster struct {
	t     testing.TB
	base  string
	procs []*proc
	// args are flags for every process (e.g. an S3 object store).
	args []string
}

func startCluster(t *testing.T, n int) *cluster { return startClusterWith(t, n, nil) }

// startClusterWith starts n processes, one after the other, with args added
// to each command line.
func startClusterWith(t testing.TB, n int, args []string) *cluster {
	t.Helper()
	c := &cluster{t: t, base: t.TempDir(), args: args}
	for range n {
		c.newProc()
	}
	t.Cleanup(func() {
		for _, p := range c.procs {
			c.stop(p)
		}
	})
	for i := range c.procs {
		c.start(i)
		c.waitReady(i + 1)
	}
	return c
}

// newProc adds a process (not started) with free ports.
func (c *cluster) newProc() *proc {
	i := len(c.procs)
	p := &proc{
		id:     fmt.Sprintf("n%d", i+1),
		dir:    filepath.Join(c.base, fmt.Sprintf("n%d", i+1)),
		http:   fmt.Sprintf("127.0.0.1:%d", freePort(c.t)),
		grpc:   fmt.Sprintf("127.0.0.1:%d", freePort(c.t)),
		gossip: fmt.Sprintf("127.0.0.1:%d", freePort(c.t)),
	}
	c.procs = append(c.procs, p)
	return p
}

func (c *cluster) start(i int) {
	c.t.Helper()
	p := c.procs[i]
	var seeds []string
	for j, q := range c.procs {
		if j != i {
			seeds = append(seeds, q.gossip)
		}
	}
	p.cmd = exec.Command(tierkvBin, "serve",
		"--id", p.id, "--data-dir", p.dir,
		"--http-addr", p.http, "--grpc-addr", p.grpc, "--gossip-addr", p.gossip,
		"--seeds", strings.Join(seeds, ","), "--gossip-profile", "local",
		"--hint-replay-interval", "200ms", "--replica-timeout", "3s", "--request-timeout", "5s",
		"--memtable-size", "4194304", "--log-level", "warn", "--ring-delay", "10s")
	p.cmd.Args = append(p.cmd.Args, c.args...)
	p.cmd.Args = append(p.cmd.Args, p.extra...)
	p.stderr = &lockedBuffer{}
	p.cmd.Stderr = p.stderr
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		c.t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	p.done = make(chan struct{})
	serving := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "serving") {
				close(serving)
			}
		}
		io.Copy(io.Discard, out)
	}()
	go func() { p.cmd.Wait(); close(p.done) }()
	select {
	case <-serving:
	case <-p.done:
		c.t.Fatalf("%s exited at start: %s", p.id, p.stderr.String())
	case <-time.After(20 * time.Second):
		c.t.Fatalf("%s did not start: %s", p.id, p.stderr.String())
	}
}

// kill sends SIGKILL and waits for the process to end.
func (c *cluster) kill(i int) {
	p := c.procs[i]
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	p.cmd = nil
}

// stop sends SIGTERM (graceful shutdown) and waits.
func (c *cluster) stop(p *proc) {
	if p.cmd == nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		c.t.Errorf("%s did not stop on SIGTERM", p.id)
		p.cmd.Process.Kill()
		<-p.done
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		c.t.Errorf("%s exited with %d after SIGTERM: %s", p.id, code, p.stderr.String())
	}
	p.cmd = nil
}

func (c *cluster) topology(i int) (*kvv1.TopologyResponse, error) {
	cl, err := client.New([]string{c.procs[i].grpc}, &client.Options{Timeout: time.Second})
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	return cl.Topology(context.Background())
}

func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
}

// waitReady waits until each of the first n running processes sees n
// members with tokens, and every running one Up.
func (c *cluster) waitReady(n int) {
	c.t.Helper()
	waitFor(c.t, 30*time.Second, fmt.Sprintf("%d members ready", n), func() bool {
		for i, p := range c.procs[:n] {
			if p.cmd == nil {
				continue
			}
			top, err := c.topology(i)
			if err != nil || len(top.Members) < n {
				return false
			}
			for _, m := range top.Members {
				running := false
				for _, q := range c.procs {
					if q.id == m.Id && q.cmd != nil {
						running = true
					}
				}
				if len(m.Tokens) == 0 || (running && !m.Up) || m.State != "NORMAL" {
					return false
				}
			}
		}
		return true
	})
}

// waitDown waits until every running process sees process i down.
func (c *cluster) waitDown(i int) {
	c.t.Helper()
	waitFor(c.t, 30*time.Second, c.procs[i].id+" down", func() bool {
		for j, p := range c.procs {
			if p.cmd == nil || j == i {
				continue
			}
			top, err := c.topology(j)
			if err != nil {
				return false
			}
			for _, m := range top.Members {
				if m.Id == c.procs[i].id && m.Up {
					return false
				}
			}
		}
		return true
	})
}

func (c *cluster) client(idx ...int) *client.Client {
	c.t.Helper()
	var addrs []string
	for _, i := range idx {
		addrs = append(addrs, c.procs[i].grpc)
	}
	cl, err := client.New(addrs, &client.Options{Timeout: 5 * time.Second})
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cl.Close() })
	return cl
}

// readReplica reads process i's own copy of key through the internode API.
func (c *cluster) readReplica(i int, key []byte) (*kvv1.ReadResponse, error) {
	cc, err := grpc.NewClient(c.procs[i].grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return kvv1.NewReplicaClient(cc).Read(ctx, &kvv1.ReadRequest{Key: key})
}

func hintsPending(t testing.TB, httpAddr string) float64 {
	resp, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "tierkv_hints_pending "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return -1
}

// TestProcessCluster: QUORUM writes and reads of a workload with three and
// with two of three processes; ALL fails clearly while ONE succeeds; hints
// reach the killed replica after its restart (read from it alone).
func TestProcessCluster(t *testing.T) {
	c := startCluster(t, 3)
	ctx := context.Background()
	cl := c.client(0, 1, 2)
	const keys = 100
	q := client.WithConsistency(client.Quorum)
	for k := range keys {
		if _, err := cl.Put(ctx, fmt.Appendf(nil, "a%03d", k), fmt.Appendf(nil, "v%d", k), q); err != nil {
			t.Fatal(err)
		}
	}
	for k := range keys {
		if v, _, err := cl.Get(ctx, fmt.Appendf(nil, "a%03d", k), q); err != nil || string(v) != fmt.Sprintf("v%d", k) {
			t.Fatalf("get a%03d: %q %v", k, v, err)
		}
	}
	c.kill(2)
	c.waitDown(2)
	live := c.client(0, 1)
	for k := range keys {
		if _, err := live.Put(ctx, fmt.Appendf(nil, "b%03d", k), fmt.Appendf(nil, "w%d", k), q); err != nil {
			t.Fatal(err)
		}
	}
	for k := range keys {
		for _, pre := range []string{"a", "b"} {
			want := map[string]string{"a": "v", "b": "w"}[pre] + strconv.Itoa(k)
			if v, _, err := live.Get(ctx, fmt.Appendf(nil, "%s%03d", pre, k), q); err != nil || string(v) != want {
				t.Fatalf("get %s%03d with n3 down: %q %v", pre, k, v, err)
			}
		}
	}
	_, err := live.Put(ctx, []byte("all"), []byte("x"), client.WithConsistency(client.All))
	if !errors.Is(err, client.ErrUnavailable) || !strings.Contains(err.Error(), "needs 3 replicas, 2 of 3 are up") {
		t.Fatalf("ALL with a node down: %v", err)
	}
	if _, err := live.Put(ctx, []byte("one"), []byte("x"), client.WithConsistency(client.One)); err != nil {
		t.Fatalf("ONE with a node down: %v", err)
	}
	c.start(2)
	c.waitReady(3)
	waitFor(t, 30*time.Second, "hints delivered", func() bool {
		return hintsPending(t, c.procs[0].http) == 0 && hintsPending(t, c.procs[1].http) == 0
	})
	for k := range keys {
		r, err := c.readReplica(2, fmt.Appendf(nil, "b%03d", k))
		if err != nil || !r.Found || string(r.Mutation.Value) != fmt.Sprintf("w%d", k) {
			t.Fatalf("n3 alone: b%03d = %v, %v", k, r, err)
		}
	}
	t.Logf("%d keys at QUORUM with 3 and 2 processes; %d hints delivered to the restarted process", 2*keys, keys)
}
