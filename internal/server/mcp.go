//go:build linux

package server

import (
	"context"
	"net/http"
	"os"
	"sync"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"codeexec/internal/executor"
	"codeexec/internal/mcp"
)

// mcpHub serves /mcp: the MCP server of package mcp over streamable HTTP,
// one service and handler per owner, so that one key's MCP sessions are
// unknown (404) to another's, as its REST objects are. Each MCP session's
// sandbox is a live session of its owner (startSession): it counts against
// --key-sessions, its executions are admitted like any (admit), its output
// files are stored, and the REST API sees it under /v1/sessions.
type mcpHub struct {
	mu     sync.Mutex
	of     map[string]*mcpTenant
	closed bool
}

type mcpTenant struct {
	svc *mcp.Service
	h   http.Handler
}

// handleMCP serves an MCP request of owner (authed has checked the key
// and bounded the body).
func (s *Server) handleMCP(w http.ResponseWriter, r *http.Request, owner string) *apiError {
	t, e := s.mcpTenant(owner)
	if e != nil {
		return e
	}
	t.h.ServeHTTP(w, r)
	return nil
}

func (s *Server) mcpTenant(owner string) (*mcpTenant, *apiError) {
	h := &s.mcp
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, shuttingDown()
	}
	if t := h.of[owner]; t != nil {
		return t, nil
	}
	// Made on an owner's first request, after SetEgress.
	svc, err := mcp.New(mcp.Options{Backend: mcpBackend{s: s, owner: owner},
		Timeout: s.cfg.Timeout, MaxTimeout: s.cfg.MaxTimeout, MemoryMB: s.cfg.MemoryMB, Idle: s.cfg.SessionIdle,
		MaxFileBytes: MCPFileLimit(s.cfg.MaxUploadBytes, s.cfg.MaxBodyBytes), Network: s.egress, Logger: s.log})
	if err != nil {
		return nil, s.internalCtx(context.Background(), "mcp server", err)
	}
	handler := sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return svc.Server() }, &sdk.StreamableHTTPOptions{
		SessionTimeout:      s.cfg.SessionIdle,
		MaxRequestBodyBytes: s.cfg.MaxBodyBytes,
		// The SDK refuses a loopback request whose Host is not loopback
		// (DNS rebinding, from a browser): needed while the API is open;
		// with keys a rebound page has no key, and a proxy in front may
		// send any Host.
		DisableLocalhostProtection: len(s.keys) > 0,
	})
	if h.of == nil {
		h.of = map[string]*mcpTenant{}
	}
	t := &mcpTenant{svc: svc, h: handler}
	h.of[owner] = t
	return t, nil
}

// MCPFileLimit is the largest file the MCP tools move: the upload limit,
// and no more than fits a JSON-RPC message of maxBody bytes as base64,
// with room for the rest of the message.
func MCPFileLimit(maxUpload, maxBody int64) int64 {
	return max(1, min(maxUpload, (maxBody-64<<10)/4*3))
}

// CloseMCP ends every MCP session once its running calls are over, and
// refuses new ones: their open event streams would otherwise hold a
// graceful shutdown for its whole grace period. Serve registers it with
// http.Server.RegisterOnShutdown; Close calls it too.
func (s *Server) CloseMCP() {
	h := &s.mcp
	h.mu.Lock()
	h.closed = true
	tenants := h.of
	h.of = nil
	h.mu.Unlock()
	var wg sync.WaitGroup
	for _, t := range tenants {
		wg.Go(func() {
			t.svc.CloseSessions()
			t.svc.Close()
		})
	}
	wg.Wait()
}

// mcpBackend makes the sandboxes of owner's MCP sessions.
type mcpBackend struct {
	s     *Server
	owner string
}

func (b mcpBackend) NewSandbox(ctx context.Context) (mcp.Sandbox, error) {
	ls, e := b.s.startSession(ctx, b.owner, sessionOptions{prefix: "sess_", idle: b.s.cfg.SessionIdle})
	if e != nil {
		return nil, e
	}
	if ls == nil {
		return nil, context.Cause(ctx)
	}
	return &mcpSandbox{s: b.s, owner: b.owner, ls: ls}, nil
}

// mcpSandbox is a live session used by an MCP session.
type mcpSandbox struct {
	s     *Server
	owner string
	ls    *liveSession
}

func (m *mcpSandbox) Execute(ctx context.Context, req executor.Request) (*executor.Result, error) {
	release, e := m.s.admit(m.owner)
	if e != nil {
		return nil, e
	}
	defer release()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	defer context.AfterFunc(m.s.hardStop, func() { cancel(errShutdown) })()
	req.Sink = storeSink{s: m.s, owner: m.owner, sessionID: m.ls.rec.ID}
	res, err := m.s.execInSession(ctx, m.ls, req)
	if res != nil {
		m.s.metrics.observe(res)
	}
	return res, err
}

func (m *mcpSandbox) Files() ([]executor.File, error) { return m.ls.sess.Files() }

func (m *mcpSandbox) Open(p string) (*os.File, int64, error) { return m.ls.sess.Open(p) }

func (m *mcpSandbox) WriteFile(ctx context.Context, f executor.InputFile) error {
	return m.ls.sess.WriteFile(ctx, f)
}

func (m *mcpSandbox) Done() <-chan struct{} { return m.ls.sess.Done() }
func (m *mcpSandbox) Err() error            { return m.ls.sess.Err() }
func (m *mcpSandbox) Close()                { m.s.endSession(m.ls, "deleted") }
