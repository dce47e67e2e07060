package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// etcdCluster is a three-member etcd cluster on loopback.
type etcdCluster struct {
	dir     string
	procs   []*exec.Cmd
	clients []*clientv3.Client
	urls    []string
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startEtcd starts three members with their own data directories and waits
// until the cluster answers a linearizable read.
func startEtcd(ctx context.Context, bin string, clients int) (*etcdCluster, error) {
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("etcd server %s: %w (apt-get install etcd-server)", bin, err)
	}
	dir, err := os.MkdirTemp("", "clusterbench-etcd-")
	if err != nil {
		return nil, err
	}
	c := &etcdCluster{dir: dir}
	var peers, clientURLs []string
	var initial []string
	for i := 0; i < 3; i++ {
		pp, err := freePort()
		if err != nil {
			return nil, err
		}
		cp, err := freePort()
		if err != nil {
			return nil, err
		}
		peers = append(peers, fmt.Sprintf("http://127.0.0.1:%d", pp))
		clientURLs = append(clientURLs, fmt.Sprintf("http://127.0.0.1:%d", cp))
		initial = append(initial, fmt.Sprintf("e%d=%s", i, peers[i]))
	}
	c.urls = clientURLs
	for i := 0; i < 3; i++ {
		cmd := exec.Command(bin,
			"--name", fmt.Sprintf("e%d", i),
			"--data-dir", filepath.Join(dir, fmt.Sprintf("e%d", i)),
			"--listen-client-urls", clientURLs[i], "--advertise-client-urls", clientURLs[i],
			"--listen-peer-urls", peers[i], "--initial-advertise-peer-urls", peers[i],
			"--initial-cluster", strings.Join(initial, ","),
			"--initial-cluster-state", "new", "--initial-cluster-token", "clusterbench",
			// Values of 10 KiB overwrite a bounded key space: keep the
			// history short and the backend quota above the default 2 GiB.
			"--auto-compaction-mode", "revision", "--auto-compaction-retention", "10000",
			"--quota-backend-bytes", fmt.Sprint(8<<30),
			"--log-level", "error",
		)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		logf, err := os.Create(filepath.Join(dir, fmt.Sprintf("e%d.log", i)))
		if err != nil {
			return nil, err
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			c.Close()
			return nil, fmt.Errorf("start etcd member %d: %w", i, err)
		}
		c.procs = append(c.procs, cmd)
	}
	// One client connection per benchmark client would be unfair to etcd's
	// multiplexing; one per member, shared round-robin, matches how
	// applications use it.
	for i := 0; i < 3; i++ {
		cl, err := clientv3.New(clientv3.Config{Endpoints: []string{clientURLs[i]}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			c.Close()
			return nil, err
		}
		c.clients = append(c.clients, cl)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := c.clients[0].Get(rctx, "health")
		cancel()
		if err == nil {
			return c, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			c.Close()
			return nil, fmt.Errorf("etcd cluster not ready: %w (logs in %s)", err, dir)
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (c *etcdCluster) Name() string            { return "etcd" }
func (c *etcdCluster) Consistencies() []string { return []string{""} }

func (c *etcdCluster) Put(ctx context.Context, client int, key string, value []byte, _ string) error {
	_, err := c.clients[client%len(c.clients)].Put(ctx, key, string(value))
	return err
}

func (c *etcdCluster) Get(ctx context.Context, client int, key string, _ string) ([]byte, error) {
	resp, err := c.clients[client%len(c.clients)].Get(ctx, key)
	if err != nil {
		return nil, err
	}
	if len(resp.Kvs) == 0 {
		return nil, errNotFound
	}
	return resp.Kvs[0].Value, nil
}

// Close stops the members and removes their data.
func (c *etcdCluster) Close() error {
	for _, cl := range c.clients {
		cl.Close()
	}
	for _, p := range c.procs {
		if p.Process != nil {
			_ = syscall.Kill(-p.Process.Pid, syscall.SIGTERM)
			done := make(chan struct{})
			go func() { _ = p.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				_ = syscall.Kill(-p.Process.Pid, syscall.SIGKILL)
				<-done
			}
		}
	}
	return os.RemoveAll(c.dir)
}
