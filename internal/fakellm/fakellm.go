// Package fakellm is a scripted OpenAI-compatible model provider for tests.
//
// A Handler serves POST /chat/completions (non-streaming and streaming, with
// tool-call argument deltas) and GET /models, under any prefix (so both
// srv.URL and srv.URL+"/v1" work as a base URL). It behaves like a
// tool-using model over a fixed set of scenarios: it decides from the
// conversation whether to call a tool, and builds its answers from the tool
// results it was given, so a broken tool loop cannot pass a test by accident.
// It validates requests like a strict provider, can inject faults, and
// records every request body it received.
//
//	fake := fakellm.New()
//	srv := httptest.NewServer(fake)
//	defer srv.Close()
//	// point the code under test at srv.URL, then inspect fake.Requests().
//
// See scenario.go for the scenarios and the exact code each one sends.
package fakellm

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Fault is injected into the next chat completions request.
type Fault struct {
	// Delay is waited before answering (or before the Status error). The
	// wait ends early when the client goes away.
	Delay time.Duration
	// Status, when non-zero, answers with this status and an OpenAI error
	// body instead of the scripted reply.
	Status int
	// RetryAfter, when set, is sent as the Retry-After header.
	RetryAfter string
	// Message is the error message for Status (a default is used if empty).
	Message string
	// Malformed answers 200 with a body that is not valid JSON (for a
	// streaming request: an SSE event whose data is not valid JSON).
	Malformed bool
}

// Option configures a Handler.
type Option func(*Handler)

// WithAPIKey makes the handler require "Authorization: Bearer key"; other
// requests get 401 with an OpenAI error body.
func WithAPIKey(key string) Option { return func(h *Handler) { h.apiKey = key } }

// WithModels sets the model ids listed by GET /models
// (default "fake-model", "grok-4").
func WithModels(ids ...string) Option {
	return func(h *Handler) { h.models = append([]string(nil), ids...) }
}

// WithFaults queues faults, one per chat completions request, in order.
func WithFaults(f ...Fault) Option { return func(h *Handler) { h.faults = append(h.faults, f...) } }

// WithLatency delays every chat completions answer by d (on top of faults).
func WithLatency(d time.Duration) Option { return func(h *Handler) { h.latency = d } }

// WithChunkDelay waits d between the events of a streamed answer.
func WithChunkDelay(d time.Duration) Option { return func(h *Handler) { h.chunkDelay = d } }

// WithoutValidation turns off the strict request checks (see Validate).
func WithoutValidation() Option { return func(h *Handler) { h.lenient = true } }

// Handler is the fake provider. It is safe for concurrent use.
type Handler struct {
	apiKey     string
	models     []string
	latency    time.Duration
	chunkDelay time.Duration
	lenient    bool

	mu       sync.Mutex
	faults   []Fault
	requests [][]byte
	headers  []http.Header
	calls    int // tool call id counter
	resps    int // completion id counter
}

// New returns a Handler configured by opts.
func New(opts ...Option) *Handler {
	h := &Handler{models: []string{"fake-model", "grok-4"}}
	for _, o := range opts {
		o(h)
	}
	return h
}

// QueueFaults appends faults; each applies to one later chat completions
// request, in order.
func (h *Handler) QueueFaults(f ...Fault) {
	h.mu.Lock()
	h.faults = append(h.faults, f...)
	h.mu.Unlock()
}

// PendingFaults is the number of queued faults not yet used.
func (h *Handler) PendingFaults() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.faults)
}

// Requests returns a copy of every chat completions request body received,
// in order (including rejected and faulted ones).
func (h *Handler) Requests() [][]byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([][]byte, len(h.requests))
	for i, b := range h.requests {
		out[i] = append([]byte(nil), b...)
	}
	return out
}

// Headers returns the headers of every chat completions request, in the
// order of Requests.
func (h *Handler) Headers() []http.Header {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]http.Header, len(h.headers))
	for i, hd := range h.headers {
		out[i] = hd.Clone()
	}
	return out
}

// DecodedRequests decodes Requests; bodies that are not a valid request
// are left out.
func (h *Handler) DecodedRequests() []*Request {
	var out []*Request
	for _, b := range h.Requests() {
		if r, err := Decode(b); err == nil {
			out = append(out, r)
		}
	}
	return out
}

// Reset forgets the recorded requests and the queued faults.
func (h *Handler) Reset() {
	h.mu.Lock()
	h.requests, h.headers, h.faults = nil, nil, nil
	h.mu.Unlock()
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimSuffix(r.URL.Path, "/")
	switch {
	case strings.HasSuffix(path, "/chat/completions"):
		if r.Method != http.MethodPost {
			writeError(w, http.StatusMethodNotAllowed, &APIError{Message: "method not allowed", Type: "invalid_request_error"})
			return
		}
		h.chat(w, r)
	case strings.HasSuffix(path, "/models"):
		if r.Method != http.MethodGet {
			writeError(w, http.StatusMethodNotAllowed, &APIError{Message: "method not allowed", Type: "invalid_request_error"})
			return
		}
		if !h.authorized(w, r) {
			return
		}
		h.listModels(w)
	default:
		writeError(w, http.StatusNotFound, &APIError{Message: "Invalid URL (" + r.Method + " " + r.URL.Path + ")", Type: "invalid_request_error"})
	}
}

func (h *Handler) authorized(w http.ResponseWriter, r *http.Request) bool {
	if h.apiKey == "" || r.Header.Get("Authorization") == "Bearer "+h.apiKey {
		return true
	}
	writeError(w, http.StatusUnauthorized, &APIError{Message: "Incorrect API key provided.", Type: "invalid_request_error", Code: "invalid_api_key"})
	return false
}

func (h *Handler) listModels(w http.ResponseWriter) {
	type model struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Created int64  `json:"created"`
		OwnedBy string `json:"owned_by"`
	}
	list := struct {
		Object string  `json:"object"`
		Data   []model `json:"data"`
	}{Object: "list", Data: []model{}}
	for _, id := range h.models {
		list.Data = append(list.Data, model{ID: id, Object: "model", Created: 1700000000, OwnedBy: "fakellm"})
	}
	writeJSON(w, http.StatusOK, list)
}

func (h *Handler) chat(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<20))
	if err != nil {
		writeError(w, http.StatusBadRequest, &APIError{Message: "could not read the request body", Type: "invalid_request_error"})
		return
	}
	h.mu.Lock()
	h.requests = append(h.requests, body)
	h.headers = append(h.headers, r.Header.Clone())
	var fault *Fault
	if len(h.faults) > 0 {
		f := h.faults[0]
		h.faults = h.faults[1:]
		fault = &f
	}
	h.mu.Unlock()

	if fault != nil && fault.Delay > 0 && !sleep(r.Context(), fault.Delay) {
		return
	}
	if h.latency > 0 && !sleep(r.Context(), h.latency) {
		return
	}
	if fault != nil && fault.RetryAfter != "" {
		w.Header().Set("Retry-After", fault.RetryAfter)
	}
	if fault != nil && fault.Status != 0 {
		msg := fault.Message
		if msg == "" {
			msg = fmt.Sprintf("injected fault: %d %s", fault.Status, http.StatusText(fault.Status))
		}
		typ := "server_error"
		if fault.Status == http.StatusTooManyRequests {
			typ = "rate_limit_exceeded"
		} else if fault.Status < 500 {
			typ = "invalid_request_error"
		}
		writeError(w, fault.Status, &APIError{Message: msg, Type: typ})
		return
	}
	if !h.authorized(w, r) {
		return
	}
	req, err := Decode(body)
	if err != nil {
		writeError(w, http.StatusBadRequest, &APIError{Message: "We could not parse the JSON body of your request: " + err.Error(), Type: "invalid_request_error"})
		return
	}
	if !h.lenient {
		if apiErr := req.Validate(); apiErr != nil {
			writeError(w, http.StatusBadRequest, apiErr)
			return
		}
	}
	if fault != nil && fault.Malformed {
		if req.Stream {
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(http.StatusOK)
			io.WriteString(w, "data: {\"id\": \"chatcmpl-broken\", \"choices\": [\n\ndata: [DONE]\n\n")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, `{"id": "chatcmpl-broken", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assist`)
		return
	}

	rep := Decide(req)
	h.mu.Lock()
	for i := range rep.ToolCalls {
		h.calls++
		rep.ToolCalls[i].ID = fmt.Sprintf("call_%d", h.calls)
	}
	h.resps++
	id := fmt.Sprintf("chatcmpl-fake%d", h.resps)
	h.mu.Unlock()

	u := usageFor(req, rep)
	if req.Stream {
		h.stream(w, r, req, rep, id, u)
		return
	}
	writeJSON(w, http.StatusOK, completion(req, rep, id, u))
}

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// APIError is an OpenAI error object.
type APIError struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    any     `json:"code"`
}

func (e *APIError) Error() string { return e.Message }

func writeError(w http.ResponseWriter, status int, e *APIError) {
	writeJSON(w, status, map[string]*APIError{"error": e})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
}
