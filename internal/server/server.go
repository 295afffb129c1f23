//go:build linux

// Package server is codeexec's HTTP API (docs/openapi.yaml, served as
// GET /openapi.json; docs/api.md is the guide): net/http handlers and
// middleware over the executor and the store. It knows nothing of
// namespaces, but it builds only on Linux, where executor.Executor exists.
package server

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"codeexec/docs"
	"codeexec/internal/config"
	"codeexec/internal/egress"
	"codeexec/internal/executor"
	"codeexec/internal/ids"
	"codeexec/internal/store"
	"codeexec/internal/web"
)

// Server serves the API. Create it with New; it is an http.Handler.
type Server struct {
	cfg     config.Config
	exec    *executor.Executor
	store   *store.Store
	log     *slog.Logger
	metrics *metrics
	mux     *http.ServeMux
	keys    map[string]string // sha256(key) hex -> owner id
	chat    *Chat             // nil: no model provider configured
	egress  *egress.Policy    // nil: sandboxes have no network

	// hardStop is cancelled when the shutdown grace period is over: every
	// running execution is then killed and answered.
	hardStop context.Context
	kill     context.CancelFunc

	inflight atomic.Int64 // executions running or waiting for a sandbox
	mu       sync.Mutex
	perKey   map[string]int // running executions per owner
	// sessionsOf counts each owner's live and reserved sessions.
	sessionsOf map[string]int
	sessions   map[string]*liveSession
	// decoding holds a token per JSON body being read and decoded;
	// decodingOf counts them per owner (see decodePlace).
	decoding   chan struct{}
	decodingOf map[string]int
	wg         sync.WaitGroup // session reapers
	mcp        mcpHub         // /mcp (mcp.go)
	node       *node          // nil: the store is this server's alone (nodes.go)
}

// New builds a server. The caller owns exec and st and closes them after
// Close.
func New(cfg config.Config, exec *executor.Executor, st *store.Store, log *slog.Logger) *Server {
	s := &Server{cfg: cfg, exec: exec, store: st, log: log, mux: http.NewServeMux(),
		keys: map[string]string{}, perKey: map[string]int{}, sessionsOf: map[string]int{}, sessions: map[string]*liveSession{},
		decoding: make(chan struct{}, cfg.DecodeConcurrency), decodingOf: map[string]int{}}
	for _, k := range cfg.APIKeys {
		sum := sha256.Sum256([]byte(k))
		s.keys[hex.EncodeToString(sum[:])] = "key_" + hex.EncodeToString(sum[:8])
	}
	s.hardStop, s.kill = context.WithCancel(context.Background())
	s.metrics = newMetrics(s)
	s.routes()
	return s
}

func (s *Server) routes() {
	api := func(pattern string, h func(http.ResponseWriter, *http.Request, string) *apiError) {
		s.mux.Handle(pattern, s.authed(s.cfg.MaxBodyBytes, s.cfg.BodyReadTimeout, h))
	}
	// Only the endpoints that take a file's content get the larger limit
	// (the file plus room for the multipart framing), by route and never
	// by the Content-Type a client claims: a JSON endpoint reads its body
	// whole.
	upload := func(pattern string, h func(http.ResponseWriter, *http.Request, string) *apiError) {
		s.mux.Handle(pattern, s.authed(s.cfg.MaxUploadBytes+1<<20, s.cfg.UploadReadTimeout, h))
	}
	// The routes of a session or container {id} answer on the node it
	// lives on (nodes.go).
	p := s.placed
	api("POST /v1/execute", s.handleExecute)
	api("GET /v1/runtimes", s.handleRuntimes)
	api("POST /v1/sessions", s.handleCreateSession)
	api("GET /v1/sessions/{id}", p(s.handleGetSession))
	api("DELETE /v1/sessions/{id}", p(s.handleDeleteSession))
	api("POST /v1/sessions/{id}/execute", p(s.handleSessionExecute))
	api("GET /v1/sessions/{id}/files", p(s.handleSessionFiles))
	api("GET /v1/sessions/{id}/files/{path...}", p(s.handleSessionDownload))
	upload("PUT /v1/sessions/{id}/files/{path...}", p(s.handleSessionUpload))
	upload("POST /v1/files", s.handleUpload)
	api("GET /v1/files", s.handleListFiles)
	api("GET /v1/files/{id}", s.handleGetFile)
	api("GET /v1/files/{id}/content", s.handleFileContent)
	api("DELETE /v1/files/{id}", s.handleDeleteFile)
	api("POST /v1/containers", s.handleCreateContainer)
	api("GET /v1/containers", s.handleListContainers)
	api("GET /v1/containers/{id}", p(s.handleGetContainer))
	api("DELETE /v1/containers/{id}", p(s.handleDeleteContainer))
	upload("POST /v1/containers/{id}/files", p(s.handleContainerUpload))
	api("GET /v1/containers/{id}/files", p(s.handleContainerFiles))
	api("GET /v1/containers/{id}/files/{file_id}", p(s.handleGetContainerFile))
	api("GET /v1/containers/{id}/files/{file_id}/content", p(s.handleContainerFileContent))
	api("DELETE /v1/containers/{id}/files/{file_id}", p(s.handleDeleteContainerFile))
	api("POST /v1/chat/completions", s.handleChat)
	api("GET /v1/models", s.handleModels)
	api("POST /v1/responses", s.handleResponses)
	api("GET /v1/responses/{id}", s.handleGetResponse)
	api("DELETE /v1/responses/{id}", s.handleDeleteResponse)
	api("GET /v1/responses/{id}/input_items", s.handleResponseInputItems)
	api("POST /mcp", s.handleMCP) // streamable HTTP, one handler for its three methods
	api("GET /mcp", s.handleMCP)
	api("DELETE /mcp", s.handleMCP)
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	s.mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if n := s.exec.Warm(); n == 0 {
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "warming", "warm_sandboxes": n})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"status": "ready", "warm_sandboxes": s.exec.Warm()})
	})
	s.mux.Handle("GET /metrics", s.metrics.handler())
	s.mux.HandleFunc("GET /openapi.json", s.handleOpenAPI)
	s.mux.HandleFunc("GET /{$}", web.Page) // the playground (internal/web)
	s.mux.HandleFunc("GET /playground/{path...}", web.Asset)
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, &apiError{Status: http.StatusNotFound, Type: "invalid_request_error", Code: "unknown_url",
			Message: "unknown request URL: " + r.Method + " " + r.URL.Path})
	})
}

// handleOpenAPI serves the API contract, docs/openapi.yaml, as JSON.
func (s *Server) handleOpenAPI(w http.ResponseWriter, r *http.Request) {
	spec, err := docs.OpenAPIJSON()
	if err != nil {
		writeError(w, s.internal(r, "openapi.json", err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(spec)
}

type ctxKey int

const requestIDKey ctxKey = 0

// ServeHTTP adds a request id, logs one line per request and turns a
// panic into a 500. A request forwarded by another node (nodes.go) keeps
// the id that node gave it; one with a node signature that does not
// verify is refused.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := ids.New("req_")
	ctx := r.Context()
	if h := r.Header.Get(nodeAuthHeader); h != "" {
		if s.node == nil || !verifyNode(s.node.secret, h, r.Method, r.URL.RequestURI(), time.Now()) {
			writeError(w, &apiError{Status: http.StatusUnauthorized, Type: "invalid_request_error", Code: "invalid_node_auth",
				Message: "the " + nodeAuthHeader + " signature does not verify: the nodes' --node-secret or clocks differ"})
			return
		}
		ctx = context.WithValue(ctx, forwardedKey{}, true)
		if rid := r.Header.Get("X-Request-Id"); strings.HasPrefix(rid, "req_") && len(rid) <= 64 {
			id = rid
		}
	}
	w.Header().Set("X-Request-Id", id)
	r = r.WithContext(context.WithValue(ctx, requestIDKey, id))
	rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
	start := time.Now()
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			s.log.Error("panic", "request_id", id, "panic", p, "stack", string(debug.Stack()))
			if !rec.wrote {
				writeError(rec, errInternal)
			}
		}
		route := r.Pattern
		if route == "" {
			route = "unmatched"
		}
		s.log.Info("request", "request_id", id, "method", r.Method, "route", route,
			"status", rec.status, "duration_ms", float64(time.Since(start).Microseconds())/1000)
	}()
	if r.ContentLength > s.cfg.MaxUploadBytes+1<<20 {
		writeError(rec, &apiError{Status: http.StatusRequestEntityTooLarge, Type: "invalid_request_error", Code: "body_too_large",
			Message: "request body is too large"})
		return
	}
	s.mux.ServeHTTP(rec, r)
}

type statusRecorder struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (r *statusRecorder) WriteHeader(code int) {
	if !r.wrote {
		r.status, r.wrote = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	r.wrote = true
	return r.ResponseWriter.Write(b)
}

// Flush lets SSE handlers flush through the recorder.
func (r *statusRecorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// authed checks the bearer key and limits the body to limit bytes read
// within timeout, then calls h with the caller's owner id ("" when no
// keys are configured).
func (s *Server) authed(limit int64, timeout time.Duration, h func(http.ResponseWriter, *http.Request, string) *apiError) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		owner, ok := s.owner(r)
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="codeexec"`)
			writeError(w, &apiError{Status: http.StatusUnauthorized, Type: "invalid_request_error", Code: "invalid_api_key",
				Message: "missing or invalid API key: send Authorization: Bearer <key>"})
			return
		}
		limitBody(w, r, limit, timeout)
		read := &readBodySlot{}
		r = r.WithContext(context.WithValue(r.Context(), bodyKey{}, read))
		if e := h(w, r, owner); e != nil {
			if e.forward != nil {
				s.forward(w, r, e.forward, read.data)
				return
			}
			if e.Status >= 500 {
				s.log.Error("request failed", "request_id", r.Context().Value(requestIDKey), "err", e.Message)
			}
			writeError(w, e)
		}
	})
}

func (s *Server) owner(r *http.Request) (string, bool) {
	if len(s.keys) == 0 {
		return "", true
	}
	key, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || key == "" {
		return "", false
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(key)))
	h := hex.EncodeToString(sum[:])
	for k, owner := range s.keys {
		if subtle.ConstantTimeCompare([]byte(k), []byte(h)) == 1 {
			return owner, true
		}
	}
	return "", false
}

// internal logs err with the request id and returns the generic 500.
func (s *Server) internal(r *http.Request, what string, err error) *apiError {
	return s.internalCtx(r.Context(), what, err)
}

// internalCtx is internal for a request's context.
func (s *Server) internalCtx(ctx context.Context, what string, err error) *apiError {
	s.log.Error(what, "request_id", ctx.Value(requestIDKey), "err", err)
	return errInternal
}

// errShutdown is the cause of executions killed at shutdown.
var errShutdown = errors.New("the server is shutting down")

// KillExecutions kills every running execution; each is answered with
// status killed. Serve calls it when the shutdown grace period is over.
func (s *Server) KillExecutions() { s.kill() }

// SetEgress lets executions reach the web through the filtering proxy
// with policy p (requests may narrow it). Without it they have no network.
func (s *Server) SetEgress(p *egress.Policy) { s.egress = p }

// Close kills running executions and ends every session. Call it after
// http.Server.Shutdown.
func (s *Server) Close() {
	s.kill()
	s.CloseMCP()
	s.endAllSessions("shutdown")
	s.wg.Wait()
	s.leaveNodes()
}

// endAllSessions ends every live session for reason.
func (s *Server) endAllSessions(reason string) {
	s.mu.Lock()
	var live []*liveSession
	for _, ls := range s.sessions {
		live = append(live, ls)
	}
	s.mu.Unlock()
	for _, ls := range live {
		s.endSession(ls, reason)
	}
}

// isGone reports whether err means the client went away.
func isGone(ctx context.Context, err error) bool {
	return ctx.Err() != nil || errors.Is(err, context.Canceled)
}
