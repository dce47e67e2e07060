// Command tierkv runs a tierkv node (`tierkv serve`) or a local three-node
// cluster for development (`tierkv dev`).
//
// The CLI uses the standard library's flag package: two subcommands do not
// need a framework, and one table (bindConfig) gives every setting its flag,
// YAML key and environment variable, so --help documents all three.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/tierkv/tierkv/node"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, os.Getenv))
}

const topUsage = `tierkv: a distributed, tiered key-value store.

Usage:
  tierkv serve [flags]   run a node (tierkv serve --help lists every setting)
  tierkv dev [flags]     run a local three-node cluster on 127.0.0.1
`

func run(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, topUsage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], stdout, stderr, getenv)
	case "dev":
		return dev(ctx, args[1:], stdout, stderr, getenv)
	case "help", "-h", "--help", "-help":
		fmt.Fprint(stdout, topUsage)
		return 0
	}
	fmt.Fprintf(stderr, "tierkv: unknown command %q\n\n%s", args[0], topUsage)
	return 2
}

func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: %w", level, err)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

func serve(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	cfg := node.DefaultConfig().EnsureDefaults() // so that --help shows every default
	fs := flag.NewFlagSet("tierkv serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "YAML configuration file (keys as listed; unknown keys are errors)")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	bindConfig(fs, cfg)
	fs.Usage = func() {
		usage(fs.Output(), fs, "Usage: tierkv serve [flags]\n\nRuns a node. Settings come from, in increasing precedence: defaults, the\nYAML file (--config), environment variables, flags.\n\n")
	}
	if err := loadConfig(fs, cfg, configPath, args, getenv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "tierkv serve: %v\n", err)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "tierkv serve: unexpected arguments %q\n", fs.Args())
		return 2
	}
	log, err := newLogger(stderr, *logLevel)
	if err != nil {
		fmt.Fprintf(stderr, "tierkv serve: %v\n", err)
		return 2
	}
	cfg.Logger = log
	n, err := node.Open(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "tierkv serve: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "tierkv node %s serving http=%s grpc=%s gossip=%s object store: %s\n", n.ID(), n.HTTPAddr(), n.GRPCAddr(), n.GossipAddr(), n.BucketDescription())
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case <-n.Decommissioned():
		log.Info("decommissioned: shutting down")
	}
	if err := n.Close(); err != nil {
		fmt.Fprintf(stderr, "tierkv serve: shutdown: %v\n", err)
		return 1
	}
	return 0
}
