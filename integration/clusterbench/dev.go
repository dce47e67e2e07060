package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// tierkvDev is a `tierkv dev` cluster started by the benchmark.
type tierkvDev struct {
	cmd *exec.Cmd
	dir string
}

// startTierkvDev starts `bin dev` with three nodes on base ports chosen
// free, waits until it prints that the cluster is ready, and returns the HTTP
// and gRPC endpoints.
func startTierkvDev(ctx context.Context, bin string) (_ *tierkvDev, httpEPs, grpcEPs string, _ error) {
	dir, err := os.MkdirTemp("", "clusterbench-tierkv-")
	if err != nil {
		return nil, "", "", err
	}
	base, err := freeBase()
	if err != nil {
		return nil, "", "", err
	}
	cmd := exec.Command(bin, "dev", "-dir", dir, "-base-port", fmt.Sprint(base), "-log-level", "error")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	logf, err := os.Create(dir + ".log")
	if err != nil {
		return nil, "", "", err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, "", "", fmt.Errorf("start %s dev: %w", bin, err)
	}
	d := &tierkvDev{cmd: cmd, dir: dir}
	var hs, gs []string
	for i := 0; i < 3; i++ {
		hs = append(hs, fmt.Sprintf("127.0.0.1:%d", base+i))
		gs = append(gs, fmt.Sprintf("127.0.0.1:%d", base+1000+i))
	}
	// NB: /healthz answers as soon as a node serves, before the ring has
	// settled (a node still JOINING makes QUORUM need three replicas);
	// `tierkv dev` prints its endpoints only once every node sees every
	// other one NORMAL.
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, _ := os.ReadFile(dir + ".log")
		if strings.Contains(string(out), "Ctrl-C stops the cluster.") {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			d.Close()
			return nil, "", "", fmt.Errorf("tierkv dev not ready within 60s (log: %s.log)", dir)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return d, strings.Join(hs, ","), strings.Join(gs, ","), nil
}

// freeBase finds a base port p such that p..p+2, p+1000.., p+2000.. look
// free.
func freeBase() (int, error) {
	for i := 0; i < 50; i++ {
		p, err := freePort()
		if err != nil {
			return 0, err
		}
		if p+2002 > 65535 {
			continue
		}
		return p, nil
	}
	return 0, fmt.Errorf("no free base port")
}

// Close stops the cluster with SIGINT (a clean shutdown) and removes its data.
func (d *tierkvDev) Close() error {
	_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGINT)
	done := make(chan struct{})
	go func() { _ = d.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
	return os.RemoveAll(d.dir)
}
