//go:build linux

package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"codeexec/internal/config"
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
	if err := cfg.LoadKeys(); err != nil {
		fmt.Fprintf(stderr, "codeexec serve: %v\n", err)
		return 2
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "codeexec serve: invalid configuration:\n%v\n", err)
		return 2
	}
	if err := Serve(ctx, cfg, stderr, nil); err != nil {
		fmt.Fprintf(stderr, "codeexec serve: %v\n", err)
		return 1
	}
	return 0
}

// Serve runs the service until ctx ends, then shuts down gracefully. When
// ready is not nil it receives the listener's address once requests are
// served.
func Serve(ctx context.Context, cfg config.Config, logOut io.Writer, ready chan<- string) error {
	var level slog.Level
	level.UnmarshalText([]byte(cfg.LogLevel))
	log := slog.New(slog.NewJSONHandler(logOut, &slog.HandlerOptions{Level: level}))

	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	st, err := store.Open(ctx, cfg.DataDir)
	if err != nil {
		return err
	}
	defer st.Close()
	// No process survives a restart: sessions left live are over.
	if n, err := st.EndLiveSessions(ctx, "restart", time.Now()); err != nil {
		return err
	} else if n > 0 {
		log.Info("sessions ended by the restart", "count", n)
	}

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return err
	}
	log.Info("starting sandboxes", "pool_size", cfg.PoolSize)
	lim := executor.DefaultLimits
	lim.Timeout, lim.MemoryBytes, lim.OutputBytes = cfg.Timeout, cfg.MemoryMB<<20, cfg.OutputBytes
	max := executor.MaxLimits
	max.Timeout, max.MemoryBytes, max.OutputBytes = cfg.MaxTimeout, cfg.MaxMemoryMB<<20, cfg.MaxOutputBytes
	ex, err := executor.New(ctx, executor.Config{PoolSize: cfg.PoolSize, DataWarmup: cfg.DataWarmup, PlotWarmup: cfg.PlotWarmup, Defaults: lim, Max: max,
		TotalMemoryBytes: cfg.SandboxesMemoryMB << 20, TotalPids: cfg.SandboxesPids, Logger: log})
	if err != nil {
		ln.Close()
		return err
	}
	defer ex.Close()
	srv := server.New(cfg, ex, st, log)
	if policy, err := cfg.EgressPolicy(); err != nil {
		return err
	} else if policy != nil {
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
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	gcCtx, stopGC := context.WithCancel(context.Background())
	defer stopGC()
	go collectGarbage(gcCtx, st, log)
	log.Info("serving", "addr", ln.Addr().String(), "auth", len(cfg.APIKeys) > 0, "data_dir", cfg.DataDir)
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
