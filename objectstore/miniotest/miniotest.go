// Package miniotest starts a real MinIO server for tests.
//
// Start uses, in order: the server named by TIERKV_MINIO_ENDPOINT (with
// TIERKV_MINIO_ACCESS_KEY and TIERKV_MINIO_SECRET_KEY), as printed by
// `integration/minio.sh start`; or a server it starts itself from the binary
// at TIERKV_MINIO_BIN, else $TIERKV_CACHE/bin/minio, else
// ~/.cache/tierkv/bin/minio, as built by `integration/minio.sh install`.
//
// Without a binary the test is skipped with a loud message, unless CI is
// set or TIERKV_REQUIRE_MINIO=1, in which case it fails: `make test` installs
// MinIO first, so it never skips.
package miniotest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

const (
	accessKey = "tierkvadmin"
	secretKey = "tierkvadmin-secret"
	// KMSKeyID is the name of the static KMS key the server is started
	// with (MINIO_KMS_SECRET_KEY), so that it accepts SSE-S3 and SSE-KMS.
	// A test key: not a secret.
	KMSKeyID  = "tierkv-test-key"
	kmsSecret = KMSKeyID + ":qlp720rurzielvq1duLqxB/HRctHPXi4AHtqFGfFzOA="
	// startTimeout bounds the wait for a new server to become healthy.
	startTimeout = 60 * time.Second
)

// Server is a running MinIO server.
type Server struct {
	// Endpoint is the server's URL, e.g. "http://127.0.0.1:41234".
	Endpoint string
	// AccessKey and SecretKey are the root credentials.
	AccessKey, SecretKey string
	// Client is a minio-go client for the server: an independent second
	// client to check what a backend wrote, and to administer buckets.
	Client *minio.Client

	transport *http.Transport
	// proc is the server process when Start started it (nil for
	// TIERKV_MINIO_ENDPOINT); Stop and Restart use it.
	proc *process
}

// process is a MinIO server process that Start started.
type process struct {
	bin, addr, dir, logPath string
	console                 int
	mu                      sync.Mutex
	cmd                     *exec.Cmd
	exited                  chan error
}

// BinaryPath returns where the MinIO binary is looked for.
func BinaryPath() string {
	if p := os.Getenv("TIERKV_MINIO_BIN"); p != "" {
		return p
	}
	cache := os.Getenv("TIERKV_CACHE")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache", "tierkv")
	}
	return filepath.Join(cache, "bin", "minio")
}

// Start returns a running MinIO server that stays up until the end of the
// test (t.Cleanup stops it by its pid and waits for it to exit).
func Start(t testing.TB) *Server {
	t.Helper()
	if ep := os.Getenv("TIERKV_MINIO_ENDPOINT"); ep != "" {
		ak, sk := os.Getenv("TIERKV_MINIO_ACCESS_KEY"), os.Getenv("TIERKV_MINIO_SECRET_KEY")
		if ak == "" {
			ak, sk = accessKey, secretKey
		}
		s := newServer(t, ep, ak, sk)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.waitHealthy(ctx, nil); err != nil {
			t.Fatalf("miniotest: TIERKV_MINIO_ENDPOINT=%s: %v", ep, err)
		}
		return s
	}
	return StartOwn(t)
}

// StartOwn is Start without TIERKV_MINIO_ENDPOINT: it always starts its
// own server from the binary, so that the test may Kill and Restart it.
func StartOwn(t testing.TB) *Server {
	t.Helper()
	bin := BinaryPath()
	if _, err := os.Stat(bin); err != nil {
		msg := fmt.Sprintf("\n\n*** MinIO not installed (%s): run `integration/minio.sh install` (make test does this). ***\n*** The S3 backend was NOT tested against MinIO. ***\n", bin)
		if os.Getenv("CI") != "" || os.Getenv("TIERKV_REQUIRE_MINIO") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	var lastErr error
	for range 3 { // a port picked free can be taken before MinIO binds it
		s, err := startProcess(t, bin)
		if err == nil {
			return s
		}
		lastErr = err
	}
	t.Fatalf("miniotest: %v", lastErr)
	return nil
}

func newServer(t testing.TB, endpoint, ak, sk string) *Server {
	t.Helper()
	tr, err := minio.DefaultTransport(false)
	if err != nil {
		t.Fatal(err)
	}
	host := strings.TrimPrefix(strings.TrimPrefix(endpoint, "http://"), "https://")
	c, err := minio.New(host, &minio.Options{
		Creds:     credentials.NewStaticV4(ak, sk, ""),
		Secure:    strings.HasPrefix(endpoint, "https://"),
		Transport: tr,
	})
	if err != nil {
		t.Fatalf("miniotest: minio-go client: %v", err)
	}
	s := &Server{Endpoint: endpoint, AccessKey: ak, SecretKey: sk, Client: c, transport: tr}
	t.Cleanup(tr.CloseIdleConnections)
	return s
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func startProcess(t testing.TB, bin string) (*Server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	console, err := freePort()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "tierkv-minio-")
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p := &process{bin: bin, addr: fmt.Sprintf("127.0.0.1:%d", port), dir: dir, console: console, logPath: filepath.Join(dir, "minio.log")}
	s := newServer(t, "http://"+p.addr, accessKey, secretKey)
	s.proc = p
	if err := s.run(); err != nil {
		return nil, err
	}
	t.Cleanup(p.stop)
	return s, nil
}

// run starts the process and waits until it is healthy.
func (s *Server) run() error {
	p := s.proc
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(p.bin, "server", "--quiet", "--address", p.addr,
		"--console-address", fmt.Sprintf("127.0.0.1:%d", p.console), filepath.Join(p.dir, "data"))
	cmd.Env = append(os.Environ(),
		"MINIO_ROOT_USER="+accessKey, "MINIO_ROOT_PASSWORD="+secretKey,
		"MINIO_BROWSER=off", "MINIO_UPDATE=off", "MINIO_KMS_SECRET_KEY="+kmsSecret)
	// A file, not a pipe: no goroutine copies the output.
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	p.mu.Lock()
	p.cmd, p.exited = cmd, exited
	p.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if err := s.waitHealthy(ctx, exited); err != nil {
		p.stop()
		logData, _ := os.ReadFile(p.logPath)
		return fmt.Errorf("MinIO at %s: %w; log:\n%s", p.addr, err, tail(string(logData), 2000))
	}
	return nil
}

// stop stops the process, if running (SIGTERM, then SIGKILL after 10 s),
// and waits for it to exit. It is idempotent.
func (p *process) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
	p.cmd, p.exited = nil, nil
}

// Kill kills the server with SIGKILL (an outage in the middle of
// requests), keeping its data directory; Restart brings it back. Only for
// servers started from the binary (StartOwn, or Start without
// TIERKV_MINIO_ENDPOINT); otherwise the test fails.
func (s *Server) Kill(t testing.TB) {
	t.Helper()
	if s.proc == nil {
		t.Fatal("miniotest: Kill needs a server started by Start, not TIERKV_MINIO_ENDPOINT")
	}
	p := s.proc
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.exited
	p.cmd, p.exited = nil, nil
	s.transport.CloseIdleConnections()
}

// Restart starts a killed server again on the same address with the same
// data, and waits until it is healthy.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	if s.proc == nil {
		t.Fatal("miniotest: Restart needs a server started by Start, not TIERKV_MINIO_ENDPOINT")
	}
	s.proc.stop()
	if err := s.run(); err != nil {
		t.Fatalf("miniotest: restart: %v", err)
	}
}

// Pid returns the server's process id, for measurements (its CPU time in
// /proc), or 0 if the server runs elsewhere (TIERKV_MINIO_ENDPOINT) or is
// stopped.
func (s *Server) Pid() int {
	if s.proc == nil {
		return 0
	}
	s.proc.mu.Lock()
	defer s.proc.mu.Unlock()
	if s.proc.cmd == nil || s.proc.cmd.Process == nil {
		return 0
	}
	return s.proc.cmd.Process.Pid
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// waitHealthy polls /minio/health/live until it answers 200 and then an S3
// request (ListBuckets) until it succeeds, or until the process exits
// (exited receives) or ctx ends. NB: a server that is live may still answer
// S3 requests with 503 XMinioServerNotInitialized for a while after a
// restart.
func (s *Server) waitHealthy(ctx context.Context, exited <-chan error) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, startTimeout)
		defer cancel()
	}
	client := &http.Client{Transport: s.transport, Timeout: 2 * time.Second}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.Endpoint+"/minio/health/live", nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				_, err := s.Client.ListBuckets(lctx)
				cancel()
				if err == nil {
					return nil
				}
			}
		}
		select {
		case err := <-exited:
			return fmt.Errorf("server exited before becoming healthy: %v", err)
		case <-ctx.Done():
			return fmt.Errorf("not healthy: %w", ctx.Err())
		case <-tick.C:
		}
	}
}

// NewBucket creates a bucket with a unique name and returns the name. The
// bucket is emptied and removed when the test ends.
func (s *Server) NewBucket(t testing.TB) string {
	t.Helper()
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	name := "tierkv-test-" + hex.EncodeToString(rnd[:])
	ctx := context.Background()
	if err := s.Client.MakeBucket(ctx, name, minio.MakeBucketOptions{}); err != nil {
		t.Fatalf("miniotest: make bucket %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := s.RemoveBucket(ctx, name); err != nil {
			t.Errorf("miniotest: %v", err)
		}
	})
	return name
}

// RemoveBucket removes every object of the bucket and then the bucket.
func (s *Server) RemoveBucket(ctx context.Context, bucket string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	objs := s.Client.ListObjects(ctx, bucket, minio.ListObjectsOptions{Recursive: true})
	for err := range s.Client.RemoveObjects(ctx, bucket, objs, minio.RemoveObjectsOptions{}) {
		if err.Err != nil {
			return fmt.Errorf("remove %s/%s: %w", bucket, err.ObjectName, err.Err)
		}
	}
	if err := s.Client.RemoveBucket(ctx, bucket); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("remove bucket %s: %w", bucket, err)
	}
	return nil
}
