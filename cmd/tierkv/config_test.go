package main

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tierkv/tierkv/node"
)

func parse(t *testing.T, args []string, env map[string]string) (*node.Config, error) {
	t.Helper()
	cfg := node.DefaultConfig().EnsureDefaults()
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	path := fs.String("config", "", "")
	bindConfig(fs, cfg)
	err := loadConfig(fs, cfg, path, args, func(k string) string { return env[k] })
	return cfg, err
}

// TestConfigPrecedence: defaults < YAML < environment < flags.
func TestConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "tierkv.yaml")
	yaml := `
id: from-yaml
data_dir: /yaml/dir
http_addr: 127.0.0.1:1111
seeds: [a:1, b:2]
replication_factor: 5
read_consistency: QUORUM
hint_window: 90m
object_store:
  type: s3
  bucket: b
  endpoint: http://127.0.0.1:9000
  fallback_dir: /fb
tiering:
  cold_level: 2
  upload_interval: 5s
anti_entropy:
  interval: 30m
tombstone_grace_period: 240h
`
	if err := os.WriteFile(file, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := parse(t, []string{"--config", file, "--http-addr", "127.0.0.1:3333"},
		map[string]string{"TIERKV_HTTP_ADDR": "127.0.0.1:2222", "TIERKV_DATA_DIR": "/env/dir", "TIERKV_WRITE_CONSISTENCY": "all"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ID != "from-yaml" || cfg.DataDir != "/env/dir" || cfg.HTTPAddr != "127.0.0.1:3333" ||
		strings.Join(cfg.Seeds, ",") != "a:1,b:2" || cfg.ReplicationFactor != 5 ||
		cfg.ReadConsistency != node.Quorum || cfg.WriteConsistency != node.All ||
		cfg.HintWindow != 90*time.Minute || cfg.ObjectStore.Type != "s3" || cfg.ObjectStore.Bucket != "b" ||
		cfg.GRPCAddr != "0.0.0.0:9090" || cfg.ObjectStore.FallbackDir != "/fb" ||
		cfg.Tiering.ColdLevel != 2 || cfg.Tiering.UploadInterval != 5*time.Second ||
		cfg.AntiEntropy.Interval != 30*time.Minute || cfg.TombstoneGracePeriod != 240*time.Hour {
		t.Fatalf("config %+v", cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
}

// TestConfigStrict: unknown YAML keys, bad values and bad env values are
// errors.
func TestConfigStrict(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"unknown key":        "data_dir: /x\nreplication: 3\n",
		"unknown nested key": "object_store:\n  kind: s3\n",
		"bad consistency":    "read_consistency: MOST\n",
		"bad duration":       "hint_window: soon\n",
	} {
		file := filepath.Join(dir, "c.yaml")
		os.WriteFile(file, []byte(body), 0o644)
		if _, err := parse(t, []string{"--config=" + file}, nil); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := parse(t, nil, map[string]string{"TIERKV_REPLICATION_FACTOR": "three"}); err == nil {
		t.Error("bad env value accepted")
	}
	if _, err := parse(t, []string{"--no-such-flag"}, nil); err == nil {
		t.Error("unknown flag accepted")
	}
	cfg, err := parse(t, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "data_dir is required") {
		t.Fatalf("Validate without data_dir: %v", err)
	}
}

// TestServeHelp: --help explains every setting with its YAML key and
// environment variable.
func TestServeHelp(t *testing.T) {
	var out strings.Builder
	if code := run([]string{"serve", "--help"}, io.Discard, &out, func(string) string { return "" }); code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, s := range []string{"--data-dir (yaml data_dir, env TIERKV_DATA_DIR", "--object-store-bucket (yaml object_store.bucket, env TIERKV_OBJECT_STORE_BUCKET",
		"--hint-window (yaml hint_window, env TIERKV_HINT_WINDOW, default 3h0m0s)", "--config (env TIERKV_CONFIG",
		"--tiering-cold-level (yaml tiering.cold_level, env TIERKV_TIERING_COLD_LEVEL, default 5)",
		"--object-store-fallback-dir (yaml object_store.fallback_dir, env TIERKV_OBJECT_STORE_FALLBACK_DIR"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("--help lacks %q:\n%s", s, out.String())
		}
	}
	if code := run([]string{"serve"}, io.Discard, io.Discard, func(string) string { return "" }); code == 0 {
		t.Error("serve without data_dir succeeded")
	}
}

// TestDevProcs: a dev cluster's process gets the Go processors its nodes
// would have as separate processes, unless GOMAXPROCS is set.
func TestDevProcs(t *testing.T) {
	none := func(string) string { return "" }
	if got := devProcs(3, none); got != 3*startProcs {
		t.Fatalf("devProcs(3) = %d, want 3 x %d", got, startProcs)
	}
	if got := devProcs(1, none); got != startProcs {
		t.Fatalf("devProcs(1) = %d, want %d", got, startProcs)
	}
	set := func(k string) string {
		if k == "GOMAXPROCS" {
			return "1"
		}
		return ""
	}
	if got := devProcs(3, set); got != 0 {
		t.Fatalf("devProcs(3) with GOMAXPROCS set = %d, want 0 (left alone)", got)
	}
}

// TestDevFlags: `tierkv dev` refuses a memtable too small to be useful
// before it starts anything, and documents the setting in --help.
func TestDevFlags(t *testing.T) {
	none := func(string) string { return "" }
	var stderr strings.Builder
	dir := t.TempDir()
	if code := run([]string{"dev", "--dir", dir, "--memtable-size", "1000"}, io.Discard, &stderr, none); code != 2 {
		t.Fatalf("dev --memtable-size 1000: exit %d, want 2", code)
	}
	if !strings.Contains(stderr.String(), "--memtable-size must be at least 1 MiB") {
		t.Fatalf("dev --memtable-size 1000: stderr %q", stderr.String())
	}
	if entries, err := os.ReadDir(dir); err != nil || len(entries) != 0 {
		t.Fatalf("dev with a bad flag left %v in its directory (err %v)", entries, err)
	}
	var help strings.Builder
	run([]string{"dev", "--help"}, io.Discard, &help, none)
	if !strings.Contains(help.String(), "-memtable-size") || !strings.Contains(help.String(), "16777216") {
		t.Fatalf("dev --help lacks the memtable size and its default:\n%s", help.String())
	}
}
