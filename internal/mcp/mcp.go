//go:build linux

// Package mcp serves codeexec's sandbox to Model Context Protocol clients
// (Claude Desktop, Cursor, agent frameworks) with the official Go SDK: the
// tools run_python, reset_sandbox, upload_file, list_files and read_file,
// and the files of the sandbox's /mnt/data as codeexec://files/... resources.
//
// Each MCP session gets its own sandbox session, made on first use through a
// Backend and ended with the MCP session (or by its idle timeout, after which
// the next call gets a fresh one and is told so). `codeexec mcp` serves it
// over stdio with an executor of its own (ExecutorBackend); `codeexec serve`
// serves it over streamable HTTP at /mcp, with a Backend that counts each
// sandbox against the caller's API key like a REST session (package
// server). This package knows no transport and no HTTP.
package mcp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"codeexec/internal/egress"
	"codeexec/internal/executor"
	"codeexec/internal/python"
)

// Sandbox is one sandbox session as the tools use it; *executor.Session is
// one.
type Sandbox interface {
	Execute(ctx context.Context, req executor.Request) (*executor.Result, error)
	Files() ([]executor.File, error)
	Open(path string) (*os.File, int64, error)
	WriteFile(ctx context.Context, f executor.InputFile) error
	// Done is closed when the sandbox has ended; Err then says why.
	Done() <-chan struct{}
	Err() error
	Close()
}

// Backend makes the sandbox of an MCP session. Its errors are shown to the
// client as they are: they must say what the client can do.
type Backend interface {
	NewSandbox(ctx context.Context) (Sandbox, error)
}

// ExecutorBackend makes sandboxes as sessions of Exec that end after Idle
// without executions.
type ExecutorBackend struct {
	Exec *executor.Executor
	Idle time.Duration
}

// NewSandbox implements Backend.
func (b ExecutorBackend) NewSandbox(ctx context.Context) (Sandbox, error) {
	s, err := b.Exec.NewSession(ctx, b.Idle)
	if err != nil {
		if errors.Is(err, executor.ErrCapacity) {
			return nil, errors.New("the sandbox service is at its capacity; retry in a moment")
		}
		return nil, fmt.Errorf("no sandbox could be started: %w", err)
	}
	return s, nil
}

// Options configure a Service. The limits are those of the REST API
// (config.Config): a zero one is refused by Validate.
type Options struct {
	Backend Backend
	// Timeout is run_python's default wall-time limit, MaxTimeout the
	// largest a call may ask for.
	Timeout, MaxTimeout time.Duration
	// MemoryMB is the sandbox's memory limit, told in the description.
	MemoryMB int64
	// Idle is how long a sandbox lives without executions, told in the
	// description.
	Idle time.Duration
	// MaxFileBytes bounds a file upload_file writes and read_file (or a
	// resource read) returns.
	MaxFileBytes int64
	// Network is the egress policy of executions; nil: no network.
	Network *egress.Policy
	// Logger gets the service's failures; nil discards them.
	Logger *slog.Logger
	// Version is the server version told to clients.
	Version string
}

// Service is the MCP server: an *sdk.Server whose tools run in one sandbox
// per MCP session.
type Service struct {
	opts   Options
	server *sdk.Server
	log    *slog.Logger

	mu       sync.Mutex
	sessions map[*sdk.ServerSession]*state
	closed   bool
}

// state is one MCP session's sandbox.
type state struct {
	mu sync.Mutex // held while the sandbox is made, reset or dropped
	sb Sandbox    // nil until first use, and after it ended
	// note says why the previous sandbox ended; it is told with the next
	// run_python result, which runs in a fresh one.
	note string
}

// New builds the service and its tools.
func New(opts Options) (*Service, error) {
	if opts.Backend == nil || opts.Timeout <= 0 || opts.MaxTimeout < opts.Timeout || opts.MemoryMB <= 0 || opts.MaxFileBytes <= 0 {
		return nil, errors.New("mcp: Options need a Backend, positive limits and MaxTimeout >= Timeout")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.Version == "" {
		opts.Version = "dev"
	}
	s := &Service{opts: opts, log: log, sessions: map[*sdk.ServerSession]*state{}}
	s.server = sdk.NewServer(&sdk.Implementation{Name: "codeexec", Title: "codeexec Python sandbox", Version: opts.Version},
		&sdk.ServerOptions{Instructions: s.instructions(), Logger: opts.Logger, HasResources: true})
	s.addTools()
	s.addResources()
	return s, nil
}

// Server is the SDK server, to Run over a transport or to hand to
// sdk.NewStreamableHTTPHandler.
func (s *Service) Server() *sdk.Server { return s.server }

// Close ends every sandbox; the service makes no more.
func (s *Service) Close() {
	s.mu.Lock()
	s.closed = true
	states := s.sessions
	s.sessions = map[*sdk.ServerSession]*state{}
	s.mu.Unlock()
	for _, st := range states {
		st.drop("")
	}
}

// CloseSessions closes every MCP session, each once its running calls are
// over (their sandboxes end with them).
func (s *Service) CloseSessions() {
	var wg sync.WaitGroup
	for ss := range s.server.Sessions() {
		wg.Go(func() { ss.Close() })
	}
	wg.Wait()
}

// stateOf is the state of ss, made on first use; it is dropped, and its
// sandbox ended, when ss ends.
func (s *Service) stateOf(ss *sdk.ServerSession) (*state, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("the server is shutting down")
	}
	if st := s.sessions[ss]; st != nil {
		return st, nil
	}
	st := &state{}
	s.sessions[ss] = st
	go func() {
		ss.Wait()
		s.mu.Lock()
		if s.sessions[ss] == st {
			delete(s.sessions, ss)
		}
		s.mu.Unlock()
		st.drop("")
	}()
	return st, nil
}

// existing is ss's live sandbox, or nil when it has none (never made, or
// ended): listing and reading never start one.
func (s *Service) existing(ss *sdk.ServerSession) Sandbox {
	s.mu.Lock()
	st := s.sessions[ss]
	s.mu.Unlock()
	if st == nil {
		return nil
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	st.checkEnded()
	return st.sb
}

// sandbox returns the live sandbox of ss, making one if it has none, and
// the note to tell about an earlier one that ended.
func (s *Service) sandbox(ctx context.Context, ss *sdk.ServerSession) (Sandbox, string, error) {
	st, err := s.stateOf(ss)
	if err != nil {
		return nil, "", err
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	st.checkEnded()
	if st.sb == nil {
		sb, err := s.opts.Backend.NewSandbox(ctx)
		if err != nil {
			return nil, "", err
		}
		st.sb = sb
	}
	note := st.note
	st.note = ""
	return st.sb, note, nil
}

// checkEnded forgets an ended sandbox, noting why it ended. st.mu is held.
func (st *state) checkEnded() {
	if st.sb == nil {
		return
	}
	select {
	case <-st.sb.Done():
		st.note = endNote(st.sb.Err())
		st.sb = nil
	default:
	}
}

// drop ends st's sandbox; note, when set, is told with the next result.
func (st *state) drop(note string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.sb != nil {
		st.sb.Close()
		st.sb = nil
	}
	if note != "" {
		st.note = note
	}
}

func endNote(err error) string {
	if errors.Is(err, executor.ErrProcessEnded) {
		return "The previous sandbox's process was killed, so this ran in a fresh sandbox: earlier variables, imports and files are gone."
	}
	return "The previous sandbox had ended (idle too long, at its lifetime, or deleted), so this ran in a fresh sandbox: earlier variables, imports and files are gone."
}

// description tells a model what the sandbox has.
func (s *Service) description() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Run Python 3 code in a secure, isolated sandbox and get its output. Preinstalled: %s. "+
		"Variables, imports and files persist between calls, like a notebook, for this session (the sandbox ends after %s without calls; reset_sandbox starts a fresh one). "+
		"Each call is limited to %g s by default (timeout, up to %g s) and the sandbox to %d MiB of memory. "+
		"The working directory is /mnt/data: files written there are returned as resource links (codeexec://files/PATH) and can be read with read_file; upload_file puts files there. "+
		"The value of the last expression is returned like a notebook cell's; plt.show() and display() return images.",
		python.LibraryNames(), s.opts.Idle.Round(time.Second), s.opts.Timeout.Seconds(), s.opts.MaxTimeout.Seconds(), s.opts.MemoryMB)
	if s.opts.Network == nil || len(s.opts.Network.Allow) == 0 {
		b.WriteString(" There is no network access (so nothing can be pip-installed).")
	} else {
		fmt.Fprintf(&b, " HTTP(S) requests (e.g. with requests) may reach only: %s; anything else is refused.", strings.Join(s.opts.Network.Allow, ", "))
	}
	return b.String()
}

func (s *Service) instructions() string {
	return "codeexec runs Python in a sandbox that keeps its state between run_python calls of this session. " +
		"Use run_python for computation, data analysis and plots; files live in /mnt/data (upload_file, list_files, read_file, and resources codeexec://files/PATH)."
}
