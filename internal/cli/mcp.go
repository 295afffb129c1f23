//go:build linux

package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"codeexec/internal/config"
	"codeexec/internal/egress"
	"codeexec/internal/executor"
	"codeexec/internal/mcp"
	"codeexec/internal/server"
)

func init() {
	register("mcp", command{summary: "serve the sandbox as MCP tools over stdio (Claude Desktop, Cursor, agents)", run: mcpCmd})
}

// mcpCmd serves MCP over stdin and stdout with an executor of its own. Its
// limits are serve's flags of the same names (and CODEEXEC_* variables);
// it logs to stderr only: stdout carries the protocol.
func mcpCmd(ctx context.Context, args []string, _, stderr io.Writer) int {
	cfg := config.Default()
	cfg.PoolSize = 2 // one client: its session's sandbox, and one warm for a reset
	fs := flag.NewFlagSet("mcp", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&cfg.PoolSize, "pool-size", cfg.PoolSize, "warm sandboxes kept ready")
	fs.BoolVar(&cfg.DataWarmup, "data-warmup", cfg.DataWarmup, "warm sandboxes also warm up pandas")
	fs.DurationVar(&cfg.Timeout, "timeout", cfg.Timeout, "default wall-time limit of run_python")
	fs.DurationVar(&cfg.MaxTimeout, "max-timeout", cfg.MaxTimeout, "largest wall-time limit a call may ask for")
	fs.Int64Var(&cfg.MemoryMB, "memory-mb", cfg.MemoryMB, "memory limit of the sandbox in MiB")
	fs.Int64Var(&cfg.OutputBytes, "output-bytes", cfg.OutputBytes, "limit of stdout and of stderr of one call")
	fs.DurationVar(&cfg.SessionIdle, "session-idle", cfg.SessionIdle, "end the sandbox after this long without calls (the next call gets a fresh one)")
	fs.Int64Var(&cfg.MaxUploadBytes, "max-upload-bytes", cfg.MaxUploadBytes, "largest file upload_file and read_file move (also bounded by --max-body-bytes as base64)")
	fs.Int64Var(&cfg.MaxBodyBytes, "max-body-bytes", cfg.MaxBodyBytes, "largest JSON-RPC message read from stdin")
	fs.Func("egress-allow", "comma-separated domains (exact or *.suffix) sandboxed code may reach over HTTP(S); empty: no network", func(v string) error {
		cfg.EgressAllow = nil
		for _, d := range strings.Split(v, ",") {
			if d = strings.TrimSpace(d); d != "" {
				cfg.EgressAllow = append(cfg.EgressAllow, d)
			}
		}
		return nil
	})
	fs.StringVar(&cfg.LogLevel, "log-level", "warn", "debug, info, warn or error (logs go to stderr)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: codeexec mcp [flags]\n\nServes codeexec's sandbox as Model Context Protocol tools (run_python,")
		fmt.Fprintln(stderr, "reset_sandbox, upload_file, list_files, read_file) over stdin and stdout, for")
		fmt.Fprintln(stderr, "Claude Desktop, Cursor and other MCP clients: configure the command")
		fmt.Fprintln(stderr, `{"command": "codeexec", "args": ["mcp"]}. Needs root, like 'codeexec run'.`)
		fmt.Fprintln(stderr, "Flags can also be set with CODEEXEC_ variables, as for serve.\n\nFlags:")
		fs.PrintDefaults()
	}
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "codeexec mcp: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if err := config.ApplyEnv(fs, os.Getenv); err != nil {
		fmt.Fprintf(stderr, "codeexec mcp: %v\n", err)
		return 2
	}
	if cfg.MaxTimeout < cfg.Timeout {
		cfg.MaxTimeout = cfg.Timeout
	}
	cfg.MaxMemoryMB = max(cfg.MaxMemoryMB, cfg.MemoryMB)
	cfg.MaxOutputBytes = max(cfg.MaxOutputBytes, cfg.OutputBytes)
	policy, err := check(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "codeexec mcp: %v\n", err)
		return 2
	}
	var level slog.Level
	level.UnmarshalText([]byte(cfg.LogLevel))
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if err := ServeMCP(ctx, cfg, policy, &sdk.StdioTransport{MaxLineLength: int(cfg.MaxBodyBytes)}, log); err != nil {
		fmt.Fprintf(stderr, "codeexec mcp: %v\n", err)
		return 1
	}
	return 0
}

// ServeMCP serves the MCP tools with cfg's pool and limits over t, with an
// executor of its own, until the client disconnects or ctx ends. policy is
// the executions' network (nil: none).
func ServeMCP(ctx context.Context, cfg config.Config, policy *egress.Policy, t sdk.Transport, log *slog.Logger) error {
	ex, err := executor.New(ctx, executorConfig(cfg, log))
	if err != nil {
		return err
	}
	defer ex.Close()
	svc, err := mcp.New(mcp.Options{Backend: mcp.ExecutorBackend{Exec: ex, Idle: cfg.SessionIdle},
		Timeout: cfg.Timeout, MaxTimeout: cfg.MaxTimeout, MemoryMB: cfg.MemoryMB, Idle: cfg.SessionIdle,
		MaxFileBytes: server.MCPFileLimit(cfg.MaxUploadBytes, cfg.MaxBodyBytes), Network: policy, Logger: log})
	if err != nil {
		return err
	}
	defer svc.Close()
	err = svc.Server().Run(ctx, t)
	if ctx.Err() != nil || errors.Is(err, io.EOF) {
		return nil // stopped, or the client went
	}
	return err
}
