package integration

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDevCommand runs the README's first command, `tierkv dev`, then the
// two curl commands it prints (as HTTP requests), then stops it with
// Ctrl-C (SIGINT) and expects a clean exit, and a manifest backup of every
// node in the one filesystem bucket it printed.
func TestDevCommand(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(tierkvBin, "dev", "--base-port", "0", "--dir", dir)
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		io.Copy(io.Discard, out)
		close(lines)
	}()
	go func() { done <- cmd.Wait() }()
	exited := false
	defer func() {
		if !exited {
			cmd.Process.Kill()
			<-done
		}
	}()

	var printed []string
	deadline := time.After(60 * time.Second)
	for ready := false; !ready; {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("tierkv dev exited: %s\n%s", strings.Join(printed, "\n"), stderr.String())
			}
			printed = append(printed, l)
			ready = strings.Contains(l, "Ctrl-C")
		case <-deadline:
			t.Fatalf("tierkv dev printed no endpoints: %s", strings.Join(printed, "\n"))
		}
	}
	text := strings.Join(printed, "\n")
	t.Log("\n" + text)
	post := regexp.MustCompile(`curl -X POST -H 'X-Consistency-Level: QUORUM' --data-binary '([^']*)' (http://\S+)`).FindStringSubmatch(text)
	get := regexp.MustCompile(`curl -i -H 'X-Consistency-Level: QUORUM' (http://\S+)`).FindStringSubmatch(text)
	if post == nil || get == nil {
		t.Fatalf("no example curl commands in:\n%s", text)
	}
	req, _ := http.NewRequest("POST", post[2], strings.NewReader(post[1]))
	req.Header.Set("X-Consistency-Level", "QUORUM")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("POST %s: %d", post[2], resp.StatusCode)
	}
	req, _ = http.NewRequest("GET", get[1], nil)
	req.Header.Set("X-Consistency-Level", "QUORUM")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Equal(body, []byte(post[1])) || resp.Header.Get("X-Version") == "" {
		t.Fatalf("GET %s: %d %q %v", get[1], resp.StatusCode, body, resp.Header)
	}

	cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-done:
		exited = true
		if err != nil {
			t.Fatalf("tierkv dev after Ctrl-C: %v\n%s", err, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("tierkv dev did not stop on Ctrl-C")
	}
	bucket := filepath.Join(dir, "bucket")
	if !strings.Contains(text, "object store (shared by the nodes, objects under <node id>/): "+bucket) {
		t.Fatalf("tierkv dev does not print its bucket %s:\n%s", bucket, text)
	}
	for _, id := range []string{"n1", "n2", "n3"} {
		if m, _ := filepath.Glob(filepath.Join(bucket, id, "manifests", "*")); len(m) == 0 {
			t.Errorf("no manifest backup of %s in %s after Ctrl-C", id, bucket)
		}
	}
}
