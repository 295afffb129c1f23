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

func (s *Server) handleChat(w http.ResponseWriter, r *http.Request, owner string) *apiError {
	if s.chat == nil {
		return s.noUpstream()
	}
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
		return e
	}
	if req.Search && s.chat.Loop.Search == nil {
		return invalid("tools", "%v", toolloop.ErrSearchUnavailable)
	}
	if req.Code == nil && len(req.FileIDs) > 0 {
		return invalid("messages", "attached files need the code_execution tool: add {\"type\": \"code_execution\"} to tools")
	}
	sb := &chatSandbox{s: s, owner: owner}
	defer sb.close()
	var fileNames []string
	if req.Code != nil {
		sb.timeout = time.Duration(req.Code.Timeout * float64(time.Second))
		if sb.timeout > s.cfg.MaxTimeout {
			return invalid("tools", "code_execution.timeout is over the server's maximum of %g s", s.cfg.MaxTimeout.Seconds())
		}
		if id := req.Code.SessionID; id != "" {
			ls, e := s.liveSession(r.Context(), owner, id)
			if e != nil {
				return e
			}
			sb.live = ls
		}
		ids := make([]inputFile, len(req.FileIDs))
		for i, id := range req.FileIDs {
			ids[i].FileID = id
		}
		files, e := s.inputFiles(r.Context(), owner, ids, func(int) string { return "messages" })
		if e != nil {
			return e
		}
		if err := sb.place(r.Context(), files); err != nil {
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
		paths := map[string]string{}
		for i, f := range files {
			paths[req.FileIDs[i]] = f.Path
			fileNames = append(fileNames, f.Path)
		}
		req.PlaceFiles(paths)
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
	stopped := func() bool { return ctx.Err() != nil && r.Context().Err() == nil }
	if !req.Stream {
		resp, err := s.chat.Loop.Run(ctx, req, sb, desc, nil)
		if err != nil {
			if stopped() {
				return shuttingDown()
			}
			if isGone(r.Context(), err) {
				return nil
			}
			return s.upstreamError(r, err)
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(resp)
		return nil
	}
	sse := newSSE(w, s.cfg.StreamWriteTimeout)
	emit := func(chunk []byte) error {
		if err := sse.data(chunk); err != nil {
			return err
		}
		return ctx.Err()
	}
	_, err := s.chat.Loop.Run(ctx, req, sb, desc, emit)
	if err != nil {
		if isGone(r.Context(), err) && !stopped() {
			return nil
		}
		e := s.upstreamError(r, err)
		if stopped() {
			e = shuttingDown()
		}
		if !sse.started {
			return e
		}
		emit(mustMarshal(map[string]any{"error": e}))
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
