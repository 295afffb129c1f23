// Package upstream is the client for the model provider: any service that
// speaks OpenAI's Chat Completions API (xAI, OpenAI, vLLM, Ollama, ...).
//
// Request bodies are built by the caller and sent byte for byte, and
// response bodies are returned as they came, so fields this package knows
// nothing about pass through untouched. What the client adds is the care a
// remote service needs: a time limit per attempt, a bounded number of
// retries of 429, 5xx and connection failures with backoff, bounded reads,
// and failures as an *Error that the server can pass on to its own client.
package upstream

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"mime"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

const (
	defaultTimeout    = 120 * time.Second
	defaultMaxRetries = 2
	baseBackoff       = 250 * time.Millisecond
	maxWait           = 10 * time.Second // the longest backoff, and the longest Retry-After honoured
	maxBodyBytes      = 64 << 20
	maxErrorBytes     = 1 << 20 // of an error body: enough for any error object
	maxMessageBytes   = 500     // of the upstream's message quoted in Error.Message
	minRedactBytes    = 8       // shorter keys are not secrets worth mangling messages for
)

// errTimeout is the cause of an attempt's context when the upstream took
// longer than Config.Timeout.
var errTimeout = errors.New("upstream timeout")

// Config configures a Client. Zero fields get the documented defaults.
type Config struct {
	// BaseURL is the provider's API root, such as "https://api.x.ai/v1";
	// the client appends "/chat/completions" and "/models". A trailing
	// slash is ignored. When it is empty or not an absolute http(s) URL,
	// every call fails with an *Error of status 503.
	BaseURL string

	// APIKey is sent as "Authorization: Bearer <APIKey>"; none is sent
	// when it is empty. It never appears in an error or a log: keys of 8
	// bytes or more are replaced by "[redacted]" wherever the upstream
	// echoes them.
	APIKey string

	// Timeout bounds each attempt (default 120s). For Chat and Models it
	// covers the whole call, answer body included. For ChatStream it bounds
	// each wait for the upstream: for the response header, and then for
	// each read of the stream, so a stream may run as long as the upstream
	// keeps sending (": ping" comments count), and the time the caller's
	// onChunk takes does not count. An attempt that runs out of time is
	// retried like a connection failure, and ends in an *Error of status
	// 504.
	Timeout time.Duration

	// MaxRetries is how many times a call is retried (default 2; negative
	// for none) after a 429 or 5xx answer, a connection failure or a
	// timeout, as long as nothing has been handed to the caller. The wait
	// before retry n (from 0) is the upstream's Retry-After (seconds or an
	// HTTP date), or else 250ms*2^n with ±25% jitter; either is capped at
	// 10s.
	MaxRetries int

	// HTTPClient sends the requests. The default has connection, TLS and
	// idle timeouts, takes proxies from the environment (HTTPS_PROXY,
	// NO_PROXY), and does not follow redirects: a redirect would turn the
	// POST into a GET without its body, so it is reported instead.
	HTTPClient *http.Client

	// Logger receives a warning for each retry. The default discards.
	Logger *slog.Logger
}

// providers are the public endpoints FromEnv falls back on, in order.
var providers = []struct{ keyEnv, url string }{
	{"XAI_API_KEY", "https://api.x.ai/v1"},
	{"OPENAI_API_KEY", "https://api.openai.com/v1"},
}

// FromEnv resolves the upstream's base URL and API key from the
// environment, read with getenv (os.Getenv when nil).
//
// CODEEXEC_UPSTREAM_URL and CODEEXEC_UPSTREAM_API_KEY win. Where
// CODEEXEC_UPSTREAM_URL is unset, the URL is that of the first provider
// whose key is set: XAI_API_KEY gives "https://api.x.ai/v1", else
// OPENAI_API_KEY gives "https://api.openai.com/v1". Where
// CODEEXEC_UPSTREAM_API_KEY is unset, a provider's key is used only with
// that provider's own URL, so that it is never sent to another host. An
// empty baseURL means no upstream is configured.
func FromEnv(getenv func(string) string) (baseURL, apiKey string) {
	if getenv == nil {
		getenv = os.Getenv
	}
	baseURL = strings.TrimRight(getenv("CODEEXEC_UPSTREAM_URL"), "/")
	apiKey = getenv("CODEEXEC_UPSTREAM_API_KEY")
	for _, p := range providers {
		key := getenv(p.keyEnv)
		if key == "" {
			continue
		}
		if baseURL == "" {
			baseURL = p.url
		}
		if apiKey == "" && baseURL == p.url {
			apiKey = key
		}
	}
	return baseURL, apiKey
}

// Client calls the model provider. It is safe for concurrent use.
type Client struct {
	url        string // BaseURL without a trailing slash
	key        string
	timeout    time.Duration
	maxRetries int
	hc         *http.Client
	log        *slog.Logger
	unusable   *Error // why every call fails, when the base URL is missing or bad
}

// New returns a client for the upstream that cfg describes.
func New(cfg Config) *Client {
	c := &Client{
		url:        strings.TrimRight(cfg.BaseURL, "/"),
		key:        cfg.APIKey,
		timeout:    cfg.Timeout,
		maxRetries: cfg.MaxRetries,
		hc:         cfg.HTTPClient,
		log:        cfg.Logger,
	}
	if c.timeout <= 0 {
		c.timeout = defaultTimeout
	}
	if c.maxRetries == 0 {
		c.maxRetries = defaultMaxRetries
	}
	c.maxRetries = max(c.maxRetries, 0)
	if c.hc == nil {
		c.hc = defaultHTTPClient()
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	// The URL is not quoted in these messages: it may hold credentials.
	if u, err := url.Parse(c.url); c.url == "" {
		c.unusable = &Error{Status: http.StatusServiceUnavailable,
			Message: "no upstream model provider is configured: set CODEEXEC_UPSTREAM_URL, XAI_API_KEY or OPENAI_API_KEY"}
	} else if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		c.unusable = &Error{Status: http.StatusServiceUnavailable,
			Message: "the upstream base URL is not an absolute http or https URL"}
	}
	return c
}

func defaultHTTPClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			ForceAttemptHTTP2:     true,
			TLSHandshakeTimeout:   10 * time.Second,
			ExpectContinueTimeout: time.Second,
			IdleConnTimeout:       90 * time.Second,
			MaxIdleConnsPerHost:   16, // the default of 2 is low for concurrent chats with one host
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// Error is a failure of the upstream, in a shape the server can pass on to
// its client.
type Error struct {
	// Status is the HTTP status to answer the client with: the upstream's
	// own 4xx or 5xx status; 504 when the upstream did not answer within
	// Config.Timeout; 502 when it could not be reached, redirected, or sent
	// something malformed, too large, or an error in place of a 200 answer
	// or in the middle of a stream; 503 when no usable base URL is
	// configured.
	Status int

	// Body is the upstream's error object, {"error": {...}} as OpenAI
	// shapes it, as the upstream sent it (but for a redacted API key), or
	// nil when it sent no such object.
	Body []byte

	// Message says what went wrong, for people, quoting the upstream's
	// error message where it gave one. It never holds the API key.
	Message string
}

func (e *Error) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("upstream failed with status %d", e.Status)
	}
	return e.Message
}

// Chat POSTs body, a Chat Completions request, to /chat/completions as it
// is, and returns the upstream's answer as it is, after checking that it is
// a JSON object and not an error object. body must not ask for a stream.
//
// Failures of the upstream are an *Error. When ctx ends, Chat returns at
// once with ctx.Err(); a deadline of ctx is not taken for a timeout of
// the upstream.
func (c *Client) Chat(ctx context.Context, body []byte) ([]byte, error) {
	return c.fetch(ctx, http.MethodPost, "/chat/completions", body)
}

// Models GETs /models and returns the upstream's answer, a list of models,
// as it is. It fails as Chat does.
func (c *Client) Models(ctx context.Context) ([]byte, error) {
	return c.fetch(ctx, http.MethodGet, "/models", nil)
}

func (c *Client) fetch(ctx context.Context, method, path string, body []byte) ([]byte, error) {
	if c.unusable != nil {
		return nil, c.unusable
	}
	var out []byte
	err := c.retry(ctx, func() error {
		actx, cancel := context.WithTimeoutCause(ctx, c.timeout, errTimeout)
		defer cancel()
		resp, err := c.send(actx, method, path, body, "application/json")
		if err != nil {
			return c.broken(ctx, actx, err)
		}
		defer resp.Body.Close()
		if err := c.checkStatus(resp, resp.Body); err != nil {
			return err
		}
		data, err := io.ReadAll(io.LimitReader(resp.Body, maxBodyBytes+1))
		if err != nil {
			return c.broken(ctx, actx, err)
		}
		if len(data) > maxBodyBytes {
			return c.errorf(http.StatusBadGateway, nil, "upstream answer is over %d MiB", maxBodyBytes>>20)
		}
		if !json.Valid(data) {
			return c.errorf(http.StatusBadGateway, nil, "upstream answered with malformed JSON (%d bytes, starting %q)",
				len(data), data[:min(len(data), 64)])
		}
		if t := bytes.TrimLeft(data, " \t\r\n"); t[0] != '{' {
			return c.errorf(http.StatusBadGateway, nil, "upstream answered with JSON that is not an object (starting %q)",
				t[:min(len(t), 64)])
		}
		if bytes.Contains(data, []byte(`"error"`)) {
			if obj, msg := parseError(data); obj != nil {
				return c.errorf(http.StatusBadGateway, obj, "upstream answered %d with an error%s", resp.StatusCode, suffix(msg))
			}
		}
		out = data
		return nil
	})
	return out, err
}

// ChatStream POSTs body, a Chat Completions request that asks for a stream
// ("stream": true, which the caller sets), to /chat/completions and calls
// onChunk with the data of each event the upstream sends, in order: the
// raw JSON of a chat.completion.chunk, which onChunk may keep. It returns
// nil after "data: [DONE]" or at the end of the stream. Comments, CRLF,
// event fields, data split over several lines and events up to 8 MiB are
// handled as SSEReader says; events without data are skipped.
//
// If onChunk returns an error, the stream is closed and that error
// returned. The call is retried (Config.MaxRetries) only while no chunk has
// reached onChunk. An error object sent in place of a chunk, as OpenAI does
// when it fails mid-stream, ends the stream with an *Error of status 502
// holding it. Otherwise it fails as Chat does.
func (c *Client) ChatStream(ctx context.Context, body []byte, onChunk func(data []byte) error) error {
	if c.unusable != nil {
		return c.unusable
	}
	started := false
	return c.retry(ctx, func() error {
		err := c.stream(ctx, body, onChunk, &started)
		if r, ok := err.(*retryable); ok && started {
			return r.err
		}
		return err
	})
}

// stream is one attempt of ChatStream. It sets *started before the first
// call of onChunk.
func (c *Client) stream(ctx context.Context, body []byte, onChunk func([]byte) error, started *bool) error {
	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// The timer runs only while we wait for the upstream: for the header
	// here, then during each read (watchedReader).
	timer := time.AfterFunc(c.timeout, func() { cancel(errTimeout) })
	defer timer.Stop()
	resp, err := c.send(actx, http.MethodPost, "/chat/completions", body, "text/event-stream")
	timer.Stop()
	if err != nil {
		return c.broken(ctx, actx, err)
	}
	defer resp.Body.Close()
	r := &watchedReader{r: resp.Body, timer: timer, d: c.timeout}
	if err := c.checkStatus(resp, r); err != nil {
		return err
	}
	// An upstream that ignores "stream" or fails with status 200 answers
	// with JSON; reading that as events would silently give nothing.
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt == "application/json" {
		data, _ := io.ReadAll(io.LimitReader(r, maxErrorBytes))
		obj, msg := parseError(data)
		return c.errorf(http.StatusBadGateway, obj, "upstream answered with JSON, not an event stream%s", suffix(msg))
	}
	events := NewSSEReader(r)
	for {
		_, data, err := events.Next()
		switch {
		case err == io.EOF:
			return nil
		case errors.Is(err, bufio.ErrTooLong):
			return c.errorf(http.StatusBadGateway, nil, "upstream stream is unreadable: %v", err)
		case err != nil:
			return c.broken(ctx, actx, err)
		}
		if len(data) == 0 {
			continue
		}
		if string(data) == "[DONE]" {
			return nil
		}
		if bytes.Contains(data, []byte(`"error"`)) {
			if obj, msg := parseError(data); obj != nil {
				return c.errorf(http.StatusBadGateway, obj, "upstream failed mid-stream%s", suffix(msg))
			}
		}
		*started = true
		if err := onChunk(data); err != nil {
			return err
		}
	}
}

// watchedReader arms timer for the duration of each Read, so that a read
// for which the upstream sends nothing for d ends with the timer's
// cancellation of the request.
type watchedReader struct {
	r     io.Reader
	timer *time.Timer
	d     time.Duration
}

func (w *watchedReader) Read(p []byte) (int, error) {
	w.timer.Reset(w.d)
	defer w.timer.Stop()
	return w.r.Read(p)
}

func (c *Client) send(ctx context.Context, method, path string, body []byte, accept string) (*http.Response, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body) // also sets GetBody, for the transport's own retries
	}
	req, err := http.NewRequestWithContext(ctx, method, c.url+path, r)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", accept)
	req.Header.Set("User-Agent", "codeexec")
	if c.key != "" {
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
	return c.hc.Do(req)
}

// retryable marks a failed attempt that another attempt may cure. after is
// the wait the upstream asked for with Retry-After, or negative.
type retryable struct {
	err   *Error
	after time.Duration
}

func (r *retryable) Error() string { return r.err.Error() }

// retry calls attempt until it succeeds, fails in a way that is not
// retryable, or has been retried c.maxRetries times.
func (c *Client) retry(ctx context.Context, attempt func() error) error {
	for n := 0; ; n++ {
		err := attempt()
		r, ok := err.(*retryable)
		if !ok {
			return err
		}
		if n == c.maxRetries {
			return r.err
		}
		wait := r.after
		if wait < 0 {
			wait = backoff(n)
		}
		c.log.Warn("upstream failed; retrying", "status", r.err.Status, "error", r.err.Message, "retry", n+1, "wait", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// backoff is the wait before retry n (from 0) when the upstream did not
// say: 250ms*2^n, capped, with ±25% jitter so that many clients turned
// away together do not come back together.
func backoff(n int) time.Duration {
	d := min(baseBackoff<<min(n, 10), maxWait)
	return d*3/4 + rand.N(d/2)
}

// retryAfter reads a Retry-After header (RFC 9110, section 10.2.3):
// seconds or an HTTP date, capped at maxWait. ok is false when there is
// none or it cannot be read.
func retryAfter(h string, now time.Time) (d time.Duration, ok bool) {
	h = strings.TrimSpace(h)
	if s, err := strconv.ParseInt(h, 10, 64); err == nil && s >= 0 {
		d = time.Duration(min(s, 3600)) * time.Second
	} else if t, err := http.ParseTime(h); err == nil {
		d = max(t.Sub(now), 0)
	} else {
		return 0, false
	}
	return min(d, maxWait), true
}

// broken turns a failure to send a request or to read its answer into
// what the caller gets: ctx.Err() when ctx ended, else a retryable *Error.
func (c *Client) broken(ctx, attempt context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(context.Cause(attempt), errTimeout) {
		return &retryable{c.errorf(http.StatusGatewayTimeout, nil, "upstream did not answer within %v", c.timeout), -1}
	}
	return &retryable{c.errorf(http.StatusBadGateway, nil, "upstream connection failed: %v", err), -1}
}

// checkStatus returns nil for a 2xx answer, and otherwise an *Error
// holding the upstream's error, read from body; 429 and 5xx are
// retryable.
func (c *Client) checkStatus(resp *http.Response, body io.Reader) error {
	code := resp.StatusCode
	if code >= 200 && code <= 299 {
		return nil
	}
	if code < 400 {
		return c.errorf(http.StatusBadGateway, nil, "upstream answered %s, which is not followed: check the base URL", resp.Status)
	}
	// A failed read leaves what was read, which is then not an error
	// object; the status says enough.
	data, _ := io.ReadAll(io.LimitReader(body, maxErrorBytes))
	obj, msg := parseError(data)
	e := c.errorf(code, obj, "upstream answered %s%s", resp.Status, suffix(msg))
	if code == http.StatusTooManyRequests || code >= 500 {
		after, ok := retryAfter(resp.Header.Get("Retry-After"), time.Now())
		if !ok {
			after = -1
		}
		return &retryable{e, after}
	}
	return e
}

// parseError reads an error body. object is data when it is OpenAI's
// {"error": {...}}, else nil. message is the error's message, also from
// the {"error": "..."} and {"message": "..."} some providers send instead.
func parseError(data []byte) (object []byte, message string) {
	var top struct{ Error, Message json.RawMessage }
	if json.Unmarshal(data, &top) != nil {
		return nil, ""
	}
	if bytes.HasPrefix(top.Error, []byte("{")) {
		var inner struct{ Message json.RawMessage }
		json.Unmarshal(top.Error, &inner)
		return data, jsonString(inner.Message)
	}
	if m := jsonString(top.Error); m != "" {
		return nil, m
	}
	return nil, jsonString(top.Message)
}

// jsonString returns the string raw holds, or "" when it holds none.
func jsonString(raw json.RawMessage) string {
	var s string
	json.Unmarshal(raw, &s)
	return s
}

// suffix returns ": msg", cut to maxMessageBytes, or "" for no message.
func suffix(msg string) string {
	if msg == "" {
		return ""
	}
	if len(msg) > maxMessageBytes {
		msg = strings.ToValidUTF8(msg[:maxMessageBytes], "") + "..."
	}
	return ": " + msg
}

// errorf returns an *Error with the API key redacted from its message and
// body.
func (c *Client) errorf(status int, body []byte, format string, args ...any) *Error {
	msg := fmt.Sprintf(format, args...)
	if len(c.key) >= minRedactBytes {
		msg = strings.ReplaceAll(msg, c.key, "[redacted]")
		if body != nil {
			body = bytes.ReplaceAll(body, []byte(c.key), []byte("[redacted]"))
		}
	}
	return &Error{Status: status, Body: body, Message: msg}
}
