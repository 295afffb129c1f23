//go:build linux

package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"time"

	"codeexec/internal/executor"
	"codeexec/internal/toolloop"
	"codeexec/internal/upstream"
)

// Chat connects the server to a model provider. Without it,
// /v1/chat/completions and /v1/models answer 503.
type Chat struct {
	Loop     *toolloop.Loop
	Upstream *upstream.Client
}

// SetChat enables /v1/chat/completions and /v1/models.
func (s *Server) SetChat(c *Chat) { s.chat = c }

func (s *Server) noUpstream() *apiError {
	return &apiError{Status: http.StatusServiceUnavailable, Type: "server_error", Code: "no_upstream",
		Message: "no model provider is configured: set CODEEXEC_UPSTREAM_URL (and CODEEXEC_UPSTREAM_API_KEY), XAI_API_KEY or OPENAI_API_KEY"}
}

func (s *Server) handleModels(w http.ResponseWriter, r *http.Request, owner string) *apiError {
	if s.chat == nil {
		return s.noUpstream()
	}
	data, err := s.chat.Upstream.Models(r.Context())
	if err != nil {
		return s.upstreamError(r, err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(data)
	return nil
}

// upstreamError passes the provider's error on in OpenAI's shape with its
// status; our own failures stay generic.
func (s *Server) upstreamError(r *http.Request, err error) *apiError {
	var ue *upstream.Error
	var ae *apiError
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.As(err, &ue):
		s.log.Warn("upstream error", "request_id", r.Context().Value(requestIDKey), "status", ue.Status, "err", ue.Message)
		switch {
		case ue.Status == http.StatusUnauthorized || ue.Status == http.StatusForbidden:
			// Not the client's key: ours, for the provider.
			return &apiError{Status: http.StatusBadGateway, Type: "upstream_error", Code: "upstream_auth",
				Message: "the model provider refused codeexec's credentials (check CODEEXEC_UPSTREAM_API_KEY)"}
		case ue.Status == http.StatusGatewayTimeout:
			return &apiError{Status: ue.Status, Type: "upstream_error", Code: "upstream_timeout", Message: "the model provider did not answer in time"}
		case ue.Status >= 500 && len(ue.Body) == 0:
			// Transport failures name internal addresses: keep them in the log.
			return &apiError{Status: ue.Status, Type: "upstream_error", Code: "upstream_error", Message: "the model provider failed or could not be reached"}
		}
		e := &apiError{Status: ue.Status, Type: "upstream_error", Code: "upstream_error", Message: "the model provider failed: " + ue.Message}
		if len(ue.Body) > 0 {
			var body struct {
				Error *apiError `json:"error"`
			}
			if json.Unmarshal(ue.Body, &body) == nil && body.Error != nil && body.Error.Message != "" {
				body.Error.Status = ue.Status
				return body.Error
			}
		}
		return e
	case toolloop.IsUpstreamProtocolError(err):
		return &apiError{Status: http.StatusBadGateway, Type: "upstream_error", Code: "bad_upstream_response", Message: err.Error()}
	case errors.Is(err, context.DeadlineExceeded):
		return &apiError{Status: http.StatusGatewayTimeout, Type: "upstream_error", Code: "upstream_timeout", Message: "the model provider did not answer in time"}
	}
	return s.internal(r, "chat", err)
}

// handleChat serves /v1/chat/completions: it reads the request, gives it
// a sandbox with the attached files in place, and runs the tool loop,
// answering with one completion or a stream of chunks.
func (s *Server) handleChat(w http.ResponseWriter, r *http.Request, owner string) *apiError {
	if s.chat == nil {
		return s.noUpstream()
	}
	req, e := s.readChat(r, owner)
	if e != nil {
		return e
	}
	sb := &chatSandbox{s: s, owner: owner}
	defer sb.close()
	fileNames, err := s.attach(r, sb, req)
	if err != nil {
		return s.attachError(r, err)
	}
	timeout := s.cfg.Timeout
	if sb.timeout > 0 {
		timeout = sb.timeout
	}
	var allow []string
	if s.egress != nil {
		allow = s.egress.Allow
	}
	desc := toolloop.SandboxDescription(timeout, s.cfg.MemoryMB, fileNames, allow)

	// The shutdown's hard stop ends a chat request like an execution.
	ctx, cancel := context.WithCancelCause(r.Context())
	defer cancel(nil)
	defer context.AfterFunc(s.hardStop, func() { cancel(errShutdown) })()
	run := func(emit func([]byte) error) ([]byte, error) { return s.chat.Loop.Run(ctx, req, sb, desc, emit) }
	if req.Stream {
		return s.streamChat(ctx, w, r, run)
	}
	resp, err := run(nil)
	if err != nil {
		return s.chatError(ctx, r, err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(resp)
	return nil
}

// readChat reads and checks the body of a chat request of owner.
func (s *Server) readChat(r *http.Request, owner string) (*toolloop.Request, *apiError) {
	var req *toolloop.Request
	if e := s.readBody(r, owner, func(data []byte) *apiError {
		var err error
		if req, err = toolloop.ParseRequest(data); err != nil {
			var re *toolloop.RequestError
			if errors.As(err, &re) {
				return invalid(re.Param, "%s", re.Msg)
			}
			return invalid("", "%v", err)
		}
		return nil
	}); e != nil {
		return nil, e
	}
	if req.Search && s.chat.Loop.Search == nil {
		return nil, invalid("tools", "%v", toolloop.ErrSearchUnavailable)
	}
	if req.Code == nil && len(req.FileIDs) > 0 {
		return nil, invalid("messages", "attached files need the code_execution tool: add {\"type\": \"code_execution\"} to tools")
	}
	return req, nil
}

// attach sets sb up for req's code_execution tool (its timeout, the live
// session it names) and places the attached files in sb, pointing req's
// messages at their paths, which it returns. Its errors are answered by
// attachError.
func (s *Server) attach(r *http.Request, sb *chatSandbox, req *toolloop.Request) ([]string, error) {
	if req.Code == nil {
		return nil, nil
	}
	sb.timeout = time.Duration(req.Code.Timeout * float64(time.Second))
	if sb.timeout > s.cfg.MaxTimeout {
		return nil, invalid("tools", "code_execution.timeout is over the server's maximum of %g s", s.cfg.MaxTimeout.Seconds())
	}
	if id := req.Code.SessionID; id != "" {
		ls, e := s.liveSession(r.Context(), sb.owner, id)
		if e != nil {
			return nil, e
		}
		sb.live = ls
	}
	return s.placeAttached(r, sb, req.FileIDs, "messages", req)
}

// placeAttached places the stored files ids (each once) in sb's sandbox
// and tells the model where they are (req.PlaceFiles); param names them
// in errors. It returns their paths; its errors are for attachError.
func (s *Server) placeAttached(r *http.Request, sb *chatSandbox, ids []string, param string, req *toolloop.Request) ([]string, error) {
	var refs []inputFile
	var order []string
	seen := map[string]bool{}
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			refs = append(refs, inputFile{FileID: id})
			order = append(order, id)
		}
	}
	files, e := s.inputFiles(r.Context(), sb.owner, refs, func(int) string { return param })
	if e != nil {
		return nil, e
	}
	if err := sb.place(r.Context(), files); err != nil {
		return nil, err
	}
	var fileNames []string
	paths := map[string]string{}
	for i, f := range files {
		paths[order[i]] = f.Path
		fileNames = append(fileNames, f.Path)
	}
	req.PlaceFiles(paths)
	return fileNames, nil
}

// attachError is the answer to an error of attach; nil when the client
// has gone and there is no one to answer.
func (s *Server) attachError(r *http.Request, err error) *apiError {
	var ae *apiError
	switch {
	case errors.As(err, &ae):
		return ae
	case inputError(err) != nil:
		return inputError(err)
	case errors.Is(err, executor.ErrSessionEnded):
		return sessionExpired()
	case errors.Is(err, executor.ErrCapacity):
		s.metrics.rejected.WithLabelValues("capacity").Inc()
		return atCapacity()
	case isGone(r.Context(), err):
		return nil
	}
	return s.internal(r, "place attached file", err)
}

// chatError is the answer to a tool loop that failed, ctx being the
// request's context with the server's hard stop; nil when the client has
// gone.
func (s *Server) chatError(ctx context.Context, r *http.Request, err error) *apiError {
	if ctx.Err() != nil && r.Context().Err() == nil {
		return shuttingDown()
	}
	if isGone(r.Context(), err) {
		return nil
	}
	return s.upstreamError(r, err)
}

// streamChat runs the tool loop through run, writing its chunks as
// Server-Sent Events of data alone, then "[DONE]". A failure before the
// first chunk is answered as an error response; after it, as one last
// chunk {"error": ...}.
func (s *Server) streamChat(ctx context.Context, w http.ResponseWriter, r *http.Request, run func(emit func([]byte) error) ([]byte, error)) *apiError {
	sse := newSSE(w, s.cfg.StreamWriteTimeout)
	_, err := run(func(chunk []byte) error {
		if err := sse.data(chunk); err != nil {
			return err
		}
		return ctx.Err()
	})
	if err != nil {
		e := s.chatError(ctx, r, err)
		if e == nil {
			return nil
		}
		if !sse.started {
			return e
		}
		sse.data(mustMarshal(map[string]any{"error": e}))
	}
	sse.data([]byte("[DONE]"))
	return nil
}

func mustMarshal(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

// chatSandbox gives a chat request its sandbox: a live session of the
// owner's when the request names one, else a session of its own, made at
// the first execution and ended with the request.
type chatSandbox struct {
	s       *Server
	owner   string
	timeout time.Duration
	live    *liveSession

	mu      sync.Mutex
	own     *executor.Session
	ownSlot func() // own's place in the owner's session limit
	done    bool
}

func (c *chatSandbox) session(ctx context.Context) (*executor.Session, string, error) {
	if c.live != nil {
		return c.live.sess, c.live.rec.ID, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.own == nil {
		slot, e := c.s.reserveSession(c.owner)
		if e != nil {
			return nil, "", e
		}
		sess, err := c.s.exec.NewSession(ctx, c.s.cfg.SessionIdle)
		if err != nil {
			slot()
			return nil, "", err
		}
		c.own, c.ownSlot = sess, slot
	}
	return c.own, "", nil
}

// place puts the attached files in the request's session, admitted like
// an execution since it may make the session's process.
func (c *chatSandbox) place(ctx context.Context, files []executor.InputFile) error {
	if len(files) == 0 {
		return nil
	}
	release, e := c.s.admit(c.owner)
	if e != nil {
		return e
	}
	defer release()
	sess, _, err := c.session(ctx)
	for _, f := range files {
		if err != nil {
			break
		}
		err = sess.WriteFile(ctx, f)
	}
	return err
}

// Run implements toolloop.Sandbox.
func (c *chatSandbox) Run(ctx context.Context, code string) (*executor.Result, error) {
	if err := executor.CheckCode(code, executor.MaxCodeBytes); err != nil {
		return nil, err
	}
	release, e := c.s.admit(c.owner)
	if e != nil {
		return nil, e // 429 for the whole request
	}
	defer release()
	sess, sid, err := c.session(ctx)
	if err != nil {
		return nil, err
	}
	req := executor.Request{Code: code, Limits: executor.Limits{Timeout: c.timeout}, Sink: storeSink{s: c.s, owner: c.owner, sessionID: sid},
		Network: c.s.egress}
	var res *executor.Result
	if c.live != nil {
		res, err = c.s.execInSession(ctx, c.live, req) // its memory limit; a container's last_active_at
	} else {
		res, err = sess.Execute(ctx, req)
	}
	ended := errors.Is(err, executor.ErrSessionEnded) || (res != nil && res.SessionEnded)
	if res != nil {
		c.s.metrics.observe(res)
	}
	switch {
	case ended && c.live != nil:
		c.s.endSession(c.live, "killed")
	case ended:
		// The code killed its session (a limit it would not yield to):
		// the next execution of this request starts afresh.
		c.mu.Lock()
		if c.own == sess {
			c.own = nil
			c.ownSlot()
		}
		c.mu.Unlock()
		sess.Close()
	}
	return res, err
}

func (c *chatSandbox) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.own != nil {
		c.own.Close()
		c.own = nil
		c.ownSlot()
	}
}
