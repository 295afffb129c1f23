//go:build linux

package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"codeexec/internal/config"
	"codeexec/internal/egress"
	"codeexec/internal/executor"
	"codeexec/internal/search"
	"codeexec/internal/server"
	"codeexec/internal/store"
	"codeexec/internal/toolloop"
	"codeexec/internal/upstream"
)

func init() {
	register("serve", command{summary: "serve the HTTP API (what `make run` starts)", run: serveCmd})
}

func serveCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg := config.Default()
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg.Register(fs)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: codeexec serve [flags]\n\nServes the codeexec HTTP API. Every flag can also be set with an environment")
		fmt.Fprintln(stderr, "variable: CODEEXEC_ and the flag's name in capitals, '-' as '_' (e.g.")
		fmt.Fprintln(stderr, "CODEEXEC_API_KEYS, CODEEXEC_ADDR). A flag wins over its variable. See")
		fmt.Fprintln(stderr, "docs/configuration.md.\n\nFlags:")
		fs.PrintDefaults()
	}
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "codeexec serve: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if err := config.ApplyEnv(fs, os.Getenv); err != nil {
		fmt.Fprintf(stderr, "codeexec serve: %v\n", err)
		return 2
	}
	keys, err := readKeys(cfg.APIKeysFile)
	if err != nil {
		fmt.Fprintf(stderr, "codeexec serve: %v\n", err)
		return 2
	}
	cfg.APIKeys = append(cfg.APIKeys, keys...)
	if err := Serve(ctx, cfg, stderr, nil); err != nil {
		var bad *ConfigError
		if errors.As(err, &bad) {
			fmt.Fprintf(stderr, "codeexec serve: invalid configuration:\n%v\n", bad.Err)
			return 2
		}
		fmt.Fprintf(stderr, "codeexec serve: %v\n", err)
		return 1
	}
	return 0
}

// readKeys returns the keys of an --api-keys-file: one per line, blank
// lines and lines starting with '#' ignored. No file, no keys.
func readKeys(file string) ([]string, error) {
	if file == "" {
		return nil, nil
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read API keys: %w", err)
	}
	var keys []string
	for _, line := range strings.Split(string(data), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			keys = append(keys, line)
		}
	}
	return keys, nil
}

// ConfigError is Serve's answer to a configuration it refuses: every
// problem, found before anything was started.
type ConfigError struct{ Err error }

func (e *ConfigError) Error() string { return "invalid configuration: " + e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// check runs every check of cfg, all of them before anything starts:
// cfg.Validate and the building of the egress policy, which reads
// --egress-headers-file and applies egress's own rules to the allowlist.
// Every problem is reported at once, as a *ConfigError.
func check(cfg config.Config) (*egress.Policy, error) {
	err := cfg.Validate()
	policy, perr := egressPolicy(cfg)
	if err = errors.Join(err, perr); err != nil {
		return nil, &ConfigError{err}
	}
	return policy, nil
}

// egressPolicy builds the egress proxy's policy from the --egress-* flags,
// or returns nil when --egress-allow is empty (no network).
func egressPolicy(cfg config.Config) (*egress.Policy, error) {
	if len(cfg.EgressAllow) == 0 {
		return nil, nil // --egress-headers-file alone is refused by Validate
	}
	p := &egress.Policy{Allow: cfg.EgressAllow, MaxBytes: cfg.EgressMaxBytes, HTTPPorts: cfg.EgressHTTPPorts, TLSPorts: cfg.EgressTLSPorts}
	if cfg.EgressHeadersFile != "" {
		data, err := os.ReadFile(cfg.EgressHeadersFile)
		if err != nil {
			return nil, fmt.Errorf("--egress-headers-file: %w", err)
		}
		if err := json.Unmarshal(data, &p.Headers); err != nil {
			return nil, fmt.Errorf("--egress-headers-file %s: want {\"domain\": {\"Header\": \"value\"}}: %w", cfg.EgressHeadersFile, err)
		}
	}
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("--egress-allow, --egress-headers-file: %w", err)
	}
	return p, nil
}

// Serve runs the service until ctx ends, then shuts down gracefully. When
// ready is not nil it receives the listener's address once requests are
// served. A configuration that fails check starts nothing: Serve returns
// a *ConfigError at once.
func Serve(ctx context.Context, cfg config.Config, logOut io.Writer, ready chan<- string) error {
	policy, err := check(cfg)
	if err != nil {
		return err
	}
	var level slog.Level
	level.UnmarshalText([]byte(cfg.LogLevel))
	log := slog.New(slog.NewJSONHandler(logOut, &slog.HandlerOptions{Level: level}))

	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	st, err := store.Open(ctx, cfg.DataDir, store.Options{Database: cfg.Database, BlobStore: cfg.BlobStore})
	if err != nil {
		return err
	}
	defer st.Close()

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return err
	}
	log.Info("starting sandboxes", "pool_size", cfg.PoolSize)
	ex, err := executor.New(ctx, executorConfig(cfg, log))
	if err != nil {
		ln.Close()
		return err
	}
	defer ex.Close()
	srv := server.New(cfg, ex, st, log)
	// Before serving: sessions of an earlier life are over, and in a
	// shared store the node registers among its peers.
	if err := srv.StartNode(ctx); err != nil {
		ln.Close()
		return err
	}
	if policy != nil {
		srv.SetEgress(policy)
		log.Info("egress enabled", "allow", policy.Allow)
	}
	if chat, baseURL := chatFromConfig(cfg); chat != nil {
		srv.SetChat(chat)
		log.Info("chat completions enabled", "upstream", baseURL, "web_search", cfg.SearXNGURL != "")
	} else {
		log.Warn("no model provider configured: /v1/chat/completions answers 503 (set CODEEXEC_UPSTREAM_URL)")
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	hs.RegisterOnShutdown(srv.CloseMCP) // MCP event streams would hold Shutdown
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	gcCtx, stopGC := context.WithCancel(context.Background())
	defer stopGC()
	go collectGarbage(gcCtx, st, log)
	database, blobStore := "sqlite", "disk" // never the URLs: they may hold a password
	if cfg.Database != "" {
		database = "postgres"
	}
	if cfg.BlobStore != "" {
		blobStore = "s3"
	}
	log.Info("serving", "addr", ln.Addr().String(), "auth", len(cfg.APIKeys) > 0, "data_dir", cfg.DataDir,
		"database", database, "blob_store", blobStore)
	if ready != nil {
		ready <- ln.Addr().String()
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down: finishing running executions", "grace", cfg.ShutdownGrace.String())
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		log.Warn("grace period over: killing what still runs", "err", err)
		srv.KillExecutions()
		// Let the handlers answer "killed" before the connections go.
		kctx, kcancel := context.WithTimeout(context.Background(), 5*time.Second)
		if hs.Shutdown(kctx) != nil {
			hs.Close()
		}
		kcancel()
	}
	srv.Close()
	return nil
}

// executorConfig is the executor of cfg's pool and limits.
func executorConfig(cfg config.Config, log *slog.Logger) executor.Config {
	lim := executor.DefaultLimits
	lim.Timeout, lim.MemoryBytes, lim.OutputBytes = cfg.Timeout, cfg.MemoryMB<<20, cfg.OutputBytes
	max := executor.MaxLimits
	max.Timeout, max.MemoryBytes, max.OutputBytes = cfg.MaxTimeout, cfg.MaxMemoryMB<<20, cfg.MaxOutputBytes
	return executor.Config{PoolSize: cfg.PoolSize, DataWarmup: cfg.DataWarmup, PlotWarmup: cfg.PlotWarmup, Defaults: lim, Max: max,
		PipIndexURL: cfg.PipIndexURL, TotalMemoryBytes: cfg.SandboxesMemoryMB << 20, TotalPids: cfg.SandboxesPids, Logger: log}
}

// collectGarbage deletes expired files and sessions every minute.
func collectGarbage(ctx context.Context, st *store.Store, log *slog.Logger) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if f, s, err := st.DeleteExpired(ctx, now); err != nil {
				log.Error("delete expired", "err", err)
			} else if f+s > 0 {
				log.Info("deleted expired", "files", f, "sessions", s)
			}
		}
	}
}

// chatFromConfig builds the model provider client and the tool loop, or
// nil when no provider is configured. It also returns the provider's URL.
func chatFromConfig(cfg config.Config) (*server.Chat, string) {
	baseURL, key := cfg.UpstreamURL, cfg.UpstreamAPIKey
	if baseURL == "" {
		baseURL, key = upstream.FromEnv(os.Getenv)
		if cfg.UpstreamAPIKey != "" {
			key = cfg.UpstreamAPIKey
		}
	}
	if baseURL == "" {
		return nil, ""
	}
	up := upstream.New(upstream.Config{BaseURL: baseURL, APIKey: key, Timeout: cfg.UpstreamTimeout})
	loop := &toolloop.Loop{Model: up, MaxTurns: cfg.MaxTurns, TimeBudget: cfg.ToolTimeBudget}
	if cfg.SearXNGURL != "" {
		loop.Search = &search.SearXNG{BaseURL: cfg.SearXNGURL}
	}
	return &server.Chat{Loop: loop, Upstream: up}, baseURL
}
