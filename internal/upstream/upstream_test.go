package upstream

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	testKey     = "sk-test-0123456789abcdef"
	testTimeout = 100 * time.Millisecond

	okBody   = `{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}]}`
	rateBody = `{"error":{"message":"Rate limit reached","type":"rate_limit_error","code":"rate_limit_exceeded"}}`
	badBody  = `{"error":{"message":"Unknown parameter: 'foo'","type":"invalid_request_error","param":"foo"}}`
)

// script is a fake upstream that answers attempt i with steps[i], and
// every attempt after the last step with the last step.
type script struct {
	steps    []http.HandlerFunc
	attempts atomic.Int32
}

func (s *script) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	i := int(s.attempts.Add(1)) - 1
	// The server notices a client gone only once the body has been read.
	io.Copy(io.Discard, r.Body)
	s.steps[min(i, len(s.steps)-1)](w, r)
}

// reply answers with status and body, and headers given as name, value
// pairs.
func reply(status int, body string, header ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i+1 < len(header); i += 2 {
			w.Header().Set(header[i], header[i+1])
		}
		if w.Header().Get("Content-Type") == "" {
			w.Header().Set("Content-Type", "application/json")
		}
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
}

// stall answers nothing until the client goes away.
func stall(w http.ResponseWriter, r *http.Request) {
	select {
	case <-r.Context().Done():
	case <-time.After(10 * time.Second):
	}
}

// sse answers with an event stream holding transcript, flushed in small
// pieces so that lines and line ends are split across reads.
func sse(transcript string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		piece := 7
		if len(transcript) > 4096 {
			piece = len(transcript)
		}
		for s := transcript; s != ""; {
			n := min(len(s), piece)
			io.WriteString(w, s[:n])
			w.(http.Flusher).Flush()
			s = s[n:]
		}
	}
}

// newTestClient starts a fake upstream on loopback running steps and
// returns a client of it.
func newTestClient(t *testing.T, maxRetries int, steps ...http.HandlerFunc) (*Client, *script) {
	t.Helper()
	s := &script{steps: steps}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	c := New(Config{BaseURL: srv.URL + "/v1", APIKey: testKey, Timeout: testTimeout, MaxRetries: maxRetries})
	t.Cleanup(c.hc.CloseIdleConnections)
	return c, s
}

// checkErr reports whether got matches want: an *Error equal to it, or an
// error that errors.Is want.
func checkErr(t *testing.T, name string, got, want error) {
	t.Helper()
	var wantE *Error
	if !errors.As(want, &wantE) {
		if !errors.Is(got, want) {
			t.Errorf("%s error = %v, want %v", name, got, want)
		}
		return
	}
	var gotE *Error
	if !errors.As(got, &gotE) {
		t.Errorf("%s error = %v (%T), want *Error %v", name, got, got, want)
		return
	}
	if diff := cmp.Diff(wantE, gotE); diff != "" {
		t.Errorf("%s *Error mismatch (-want +got):\n%s", name, diff)
	}
}

func TestRequests(t *testing.T) {
	// Odd spacing and an unknown field must reach the upstream untouched.
	const body = "{\"model\":\"grok-4\",  \"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\n\"x_unknown\":{\"a\":[1,2.50]}}"
	tests := []struct {
		name    string
		key     string
		call    func(*Client) ([]byte, error)
		want    []string // method, path, Authorization, Content-Type, Accept, User-Agent, body
		answer  string
		wantOut string
	}{
		{
			name:    "Chat",
			key:     testKey,
			call:    func(c *Client) ([]byte, error) { return c.Chat(context.Background(), []byte(body)) },
			want:    []string{"POST", "/v1/chat/completions", "Bearer " + testKey, "application/json", "application/json", "codeexec", body},
			answer:  okBody,
			wantOut: okBody,
		},
		{
			name:    "Models",
			key:     testKey,
			call:    func(c *Client) ([]byte, error) { return c.Models(context.Background()) },
			want:    []string{"GET", "/v1/models", "Bearer " + testKey, "", "application/json", "codeexec", ""},
			answer:  ` {"object":"list","data":[{"id":"grok-4","object":"model"}]}`,
			wantOut: ` {"object":"list","data":[{"id":"grok-4","object":"model"}]}`,
		},
		{
			name: "ChatStream",
			call: func(c *Client) ([]byte, error) {
				var out []byte
				err := c.ChatStream(context.Background(), []byte(body), func(data []byte) error {
					out = append(out, data...)
					return nil
				})
				return out, err
			},
			want:    []string{"POST", "/v1/chat/completions", "", "application/json", "text/event-stream", "codeexec", body},
			answer:  "data: {\"n\":1}\n\ndata: [DONE]\n\n",
			wantOut: `{"n":1}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				got = []string{r.Method, r.URL.Path, r.Header.Get("Authorization"), r.Header.Get("Content-Type"),
					r.Header.Get("Accept"), r.Header.Get("User-Agent"), string(b)}
				if r.Header.Get("Accept") == "text/event-stream" {
					w.Header().Set("Content-Type", "text/event-stream")
				}
				io.WriteString(w, tt.answer)
			}))
			defer srv.Close()
			c := New(Config{BaseURL: srv.URL + "/v1/", APIKey: tt.key})
			defer c.hc.CloseIdleConnections()
			out, err := tt.call(c)
			if err != nil {
				t.Fatalf("%s() error = %v", tt.name, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("%s() sent a wrong request (-want +got):\n%s", tt.name, diff)
			}
			if string(out) != tt.wantOut {
				t.Errorf("%s() = %q, want %q", tt.name, out, tt.wantOut)
			}
		})
	}
}

func TestChat(t *testing.T) {
	tests := []struct {
		name         string
		maxRetries   int
		steps        []http.HandlerFunc
		want         string
		wantErr      error
		wantAttempts int32
	}{
		{
			name:         "ok",
			steps:        []http.HandlerFunc{reply(200, okBody)},
			want:         okBody,
			wantAttempts: 1,
		},
		{
			name:         "500 then 200 is retried after a backoff",
			steps:        []http.HandlerFunc{reply(500, `{"error":{"message":"boom"}}`), reply(200, okBody)},
			want:         okBody,
			wantAttempts: 2,
		},
		{
			name:         "429 with Retry-After 0 then 200",
			steps:        []http.HandlerFunc{reply(429, rateBody, "Retry-After", "0"), reply(200, okBody)},
			want:         okBody,
			wantAttempts: 2,
		},
		{
			name:  "429 forever",
			steps: []http.HandlerFunc{reply(429, rateBody, "Retry-After", "0")},
			wantErr: &Error{Status: 429, Body: []byte(rateBody),
				Message: "upstream answered 429 Too Many Requests: Rate limit reached"},
			wantAttempts: 3,
		},
		{
			name:         "400 is not retried",
			steps:        []http.HandlerFunc{reply(400, badBody), reply(200, okBody)},
			wantErr:      &Error{Status: 400, Body: []byte(badBody), Message: "upstream answered 400 Bad Request: Unknown parameter: 'foo'"},
			wantAttempts: 1,
		},
		{
			name:         "error of another shape gives its message but no body",
			steps:        []http.HandlerFunc{reply(404, `{"code":"Some resource","error":"The model grok-9 does not exist"}`)},
			wantErr:      &Error{Status: 404, Message: "upstream answered 404 Not Found: The model grok-9 does not exist"},
			wantAttempts: 1,
		},
		{
			name:         "HTML error page",
			maxRetries:   -1,
			steps:        []http.HandlerFunc{reply(503, "<html>down</html>", "Content-Type", "text/html")},
			wantErr:      &Error{Status: 503, Message: "upstream answered 503 Service Unavailable"},
			wantAttempts: 1,
		},
		{
			name:         "echoed API key is redacted",
			steps:        []http.HandlerFunc{reply(401, `{"error":{"message":"Incorrect API key provided: `+testKey+`"}}`)},
			wantErr:      &Error{Status: 401, Body: []byte(`{"error":{"message":"Incorrect API key provided: [redacted]"}}`), Message: "upstream answered 401 Unauthorized: Incorrect API key provided: [redacted]"},
			wantAttempts: 1,
		},
		{
			name:         "timeout",
			maxRetries:   -1,
			steps:        []http.HandlerFunc{stall},
			wantErr:      &Error{Status: 504, Message: "upstream did not answer within 100ms"},
			wantAttempts: 1,
		},
		{
			name:         "timeout is retried",
			maxRetries:   1,
			steps:        []http.HandlerFunc{stall, reply(200, okBody)},
			want:         okBody,
			wantAttempts: 2,
		},
		{
			name:         "malformed JSON",
			steps:        []http.HandlerFunc{reply(200, `{"id": "chatcmpl-1", "choices": [`)},
			wantErr:      &Error{Status: 502, Message: `upstream answered with malformed JSON (33 bytes, starting "{\"id\": \"chatcmpl-1\", \"choices\": [")`},
			wantAttempts: 1,
		},
		{
			name:         "JSON that is not an object",
			steps:        []http.HandlerFunc{reply(200, `["hi"]`)},
			wantErr:      &Error{Status: 502, Message: `upstream answered with JSON that is not an object (starting "[\"hi\"]")`},
			wantAttempts: 1,
		},
		{
			name:         "error object with status 200",
			steps:        []http.HandlerFunc{reply(200, rateBody)},
			wantErr:      &Error{Status: 502, Body: []byte(rateBody), Message: "upstream answered 200 with an error: Rate limit reached"},
			wantAttempts: 1,
		},
		{
			name:         "redirect is not followed",
			steps:        []http.HandlerFunc{reply(301, "", "Location", "http://127.0.0.1:1/v1/chat/completions")},
			wantErr:      &Error{Status: 502, Message: "upstream answered 301 Moved Permanently, which is not followed: check the base URL"},
			wantAttempts: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, s := newTestClient(t, tt.maxRetries, tt.steps...)
			got, err := c.Chat(context.Background(), []byte(`{"model":"m"}`))
			if tt.wantErr != nil {
				checkErr(t, "Chat()", err, tt.wantErr)
			} else if err != nil || string(got) != tt.want {
				t.Errorf("Chat() = %q, %v, want %q, nil", got, err, tt.want)
			}
			if n := s.attempts.Load(); n != tt.wantAttempts {
				t.Errorf("Chat() made %d attempts, want %d", n, tt.wantAttempts)
			}
		})
	}
}

func TestChatConnectionRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	c := New(Config{BaseURL: "http://" + addr + "/v1", APIKey: testKey, MaxRetries: 1})
	_, err = c.Chat(context.Background(), []byte(`{}`))
	var e *Error
	if !errors.As(err, &e) || e.Status != 502 || e.Body != nil {
		t.Fatalf("Chat() error = %#v, want *Error with status 502", err)
	}
	if !strings.Contains(e.Message, "connection refused") || strings.Contains(e.Message, testKey) {
		t.Errorf("Chat() error message = %q, want one saying the connection was refused, without the key", e.Message)
	}
}

func TestChatContext(t *testing.T) {
	tests := []struct {
		name         string
		step         http.HandlerFunc
		ctx          func() (context.Context, context.CancelFunc)
		want         error
		wantAttempts int32
	}{
		{
			name: "cancel while waiting",
			step: stall,
			ctx: func() (context.Context, context.CancelFunc) {
				ctx, cancel := context.WithCancel(context.Background())
				time.AfterFunc(20*time.Millisecond, cancel)
				return ctx, cancel
			},
			want:         context.Canceled,
			wantAttempts: 1,
		},
		{
			name: "cancel during the backoff",
			step: reply(500, `{"error":{"message":"boom"}}`),
			ctx: func() (context.Context, context.CancelFunc) {
				ctx, cancel := context.WithCancel(context.Background())
				time.AfterFunc(50*time.Millisecond, cancel) // the first backoff is at least 187ms
				return ctx, cancel
			},
			want:         context.Canceled,
			wantAttempts: 1,
		},
		{
			name: "deadline of ctx is not an upstream timeout",
			step: stall,
			ctx: func() (context.Context, context.CancelFunc) {
				return context.WithTimeout(context.Background(), 20*time.Millisecond)
			},
			want:         context.DeadlineExceeded,
			wantAttempts: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, s := newTestClient(t, 0, tt.step, reply(200, okBody))
			c.timeout = 10 * time.Second
			ctx, cancel := tt.ctx()
			defer cancel()
			_, err := c.Chat(ctx, []byte(`{}`))
			if err != tt.want {
				t.Errorf("Chat() error = %v, want %v", err, tt.want)
			}
			if n := s.attempts.Load(); n != tt.wantAttempts {
				t.Errorf("Chat() made %d attempts, want %d", n, tt.wantAttempts)
			}
		})
	}
}

func TestChatStream(t *testing.T) {
	errStop := errors.New("stop")
	huge := `{"n":"` + strings.Repeat("x", 2<<20) + `"}`
	tests := []struct {
		name         string
		maxRetries   int
		steps        []http.HandlerFunc
		onChunk      func(n int) error // called with the number of the chunk, from 1
		want         []string
		wantErr      error
		wantAttempts int32
	}{
		{
			name:         "chunks in order until DONE",
			steps:        []http.HandlerFunc{sse("data: {\"n\":1}\n\ndata: {\"n\":2}\n\ndata: [DONE]\n\ndata: {\"n\":3}\n\n")},
			want:         []string{`{"n":1}`, `{"n":2}`},
			wantAttempts: 1,
		},
		{
			name:         "end without DONE",
			steps:        []http.HandlerFunc{sse("data: {\"n\":1}\n\ndata: {\"n\":2}\n\n")},
			want:         []string{`{"n":1}`, `{"n":2}`},
			wantAttempts: 1,
		},
		{
			name: "comments, event and id lines, CRLF, multi-line data",
			steps: []http.HandlerFunc{sse(": ping\r\n\r\nevent: message\r\nid: 7\r\ndata: {\"n\":\r\ndata: 1}\r\n\r\n" +
				": ping\r\n\r\ndata:{\"n\":2}\r\n\r\ndata:\r\n\r\ndata: [DONE]\r\n\r\n")},
			want:         []string{"{\"n\":\n1}", `{"n":2}`},
			wantAttempts: 1,
		},
		{
			name:         "a 2 MiB chunk",
			steps:        []http.HandlerFunc{sse("data: {\"n\":1}\n\ndata: " + huge + "\n\ndata: [DONE]\n\n")},
			want:         []string{`{"n":1}`, huge},
			wantAttempts: 1,
		},
		{
			name:  "onChunk error stops the stream",
			steps: []http.HandlerFunc{endless},
			onChunk: func(n int) error {
				if n == 2 {
					return errStop
				}
				return nil
			},
			want:         []string{`{"n":1}`, `{"n":2}`},
			wantErr:      errStop,
			wantAttempts: 1,
		},
		{
			name:         "503 before the first chunk is retried",
			steps:        []http.HandlerFunc{reply(503, `{"error":{"message":"overloaded"}}`, "Retry-After", "0"), sse("data: {\"n\":1}\n\ndata: [DONE]\n\n")},
			want:         []string{`{"n":1}`},
			wantAttempts: 2,
		},
		{
			name:         "400 is not retried",
			steps:        []http.HandlerFunc{reply(400, badBody), sse("data: {\"n\":1}\n\n")},
			wantErr:      &Error{Status: 400, Body: []byte(badBody), Message: "upstream answered 400 Bad Request: Unknown parameter: 'foo'"},
			wantAttempts: 1,
		},
		{
			name:         "broken after the first chunk is not retried",
			steps:        []http.HandlerFunc{brokenAfter("data: {\"n\":1}\n\n"), sse("data: {\"n\":2}\n\n")},
			want:         []string{`{"n":1}`},
			wantErr:      &Error{Status: 502},
			wantAttempts: 1,
		},
		{
			name:         "broken before the first chunk is retried",
			steps:        []http.HandlerFunc{brokenAfter(": ping\n\n"), sse("data: {\"n\":2}\n\n")},
			want:         []string{`{"n":2}`},
			wantAttempts: 2,
		},
		{
			name:         "no header in time",
			maxRetries:   -1,
			steps:        []http.HandlerFunc{stall},
			wantErr:      &Error{Status: 504, Message: "upstream did not answer within 100ms"},
			wantAttempts: 1,
		},
		{
			name:         "stall after the first chunk",
			steps:        []http.HandlerFunc{stallAfter("data: {\"n\":1}\n\n")},
			want:         []string{`{"n":1}`},
			wantErr:      &Error{Status: 504, Message: "upstream did not answer within 100ms"},
			wantAttempts: 1,
		},
		{
			name:         "pings keep a slow stream alive",
			steps:        []http.HandlerFunc{pinging},
			want:         []string{`{"n":1}`},
			wantAttempts: 1,
		},
		{
			name:         "a slow onChunk is not an upstream timeout",
			steps:        []http.HandlerFunc{sse("data: {\"n\":1}\n\ndata: {\"n\":2}\n\ndata: [DONE]\n\n")},
			onChunk:      func(int) error { time.Sleep(2 * testTimeout); return nil },
			want:         []string{`{"n":1}`, `{"n":2}`},
			wantAttempts: 1,
		},
		{
			name:         "error object mid-stream",
			steps:        []http.HandlerFunc{sse("data: {\"n\":1}\n\ndata: " + rateBody + "\n\n")},
			want:         []string{`{"n":1}`},
			wantErr:      &Error{Status: 502, Body: []byte(rateBody), Message: "upstream failed mid-stream: Rate limit reached"},
			wantAttempts: 1,
		},
		{
			name:         "JSON instead of a stream",
			steps:        []http.HandlerFunc{reply(200, rateBody)},
			wantErr:      &Error{Status: 502, Body: []byte(rateBody), Message: "upstream answered with JSON, not an event stream: Rate limit reached"},
			wantAttempts: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, s := newTestClient(t, tt.maxRetries, tt.steps...)
			var got []string
			err := c.ChatStream(context.Background(), []byte(`{"stream":true}`), func(data []byte) error {
				got = append(got, string(data))
				if tt.onChunk != nil {
					return tt.onChunk(len(got))
				}
				return nil
			})
			switch want := tt.wantErr.(type) {
			case nil:
				if err != nil {
					t.Errorf("ChatStream() error = %v, want nil", err)
				}
			case *Error:
				if want.Message == "" { // the message of a connection failure varies
					var e *Error
					if !errors.As(err, &e) || e.Status != want.Status {
						t.Errorf("ChatStream() error = %v, want *Error with status %d", err, want.Status)
					}
					break
				}
				checkErr(t, "ChatStream()", err, want)
			default:
				checkErr(t, "ChatStream()", err, want)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ChatStream() chunks mismatch (-want +got):\n%s", diff)
			}
			if n := s.attempts.Load(); n != tt.wantAttempts {
				t.Errorf("ChatStream() made %d attempts, want %d", n, tt.wantAttempts)
			}
		})
	}
}

// endless streams chunks until the client goes away.
func endless(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/event-stream")
	for i := 1; r.Context().Err() == nil; i++ {
		io.WriteString(w, "data: {\"n\":"+string(rune('0'+i%10))+"}\n\n")
		w.(http.Flusher).Flush()
		time.Sleep(time.Millisecond)
	}
}

// brokenAfter sends transcript and then breaks the connection.
func brokenAfter(transcript string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		sse(transcript)(w, r)
		panic(http.ErrAbortHandler)
	}
}

// stallAfter sends transcript and then nothing until the client goes
// away.
func stallAfter(transcript string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		sse(transcript)(w, r)
		stall(w, r)
	}
}

// pinging sends a comment every testTimeout/4 for three testTimeouts, then
// a chunk.
func pinging(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/event-stream")
	for end := time.Now().Add(3 * testTimeout); time.Now().Before(end); {
		io.WriteString(w, ": ping\n\n")
		w.(http.Flusher).Flush()
		time.Sleep(testTimeout / 4)
	}
	io.WriteString(w, "data: {\"n\":1}\n\ndata: [DONE]\n\n")
}

func TestNotConfigured(t *testing.T) {
	tests := []struct {
		name    string
		baseURL string
		want    string
	}{
		{"empty", "", "no upstream model provider is configured: set CODEEXEC_UPSTREAM_URL, XAI_API_KEY or OPENAI_API_KEY"},
		{"no scheme", "api.x.ai/v1", "the upstream base URL is not an absolute http or https URL"},
		{"other scheme with credentials", "ftp://user:secret@example.com/v1", "the upstream base URL is not an absolute http or https URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := New(Config{BaseURL: tt.baseURL})
			want := &Error{Status: 503, Message: tt.want}
			_, err := c.Chat(context.Background(), []byte(`{}`))
			checkErr(t, "Chat()", err, want)
			_, err = c.Models(context.Background())
			checkErr(t, "Models()", err, want)
			err = c.ChatStream(context.Background(), []byte(`{}`), func([]byte) error { return nil })
			checkErr(t, "ChatStream()", err, want)
		})
	}
}

func TestFromEnv(t *testing.T) {
	const custom = "http://127.0.0.1:11434/v1"
	tests := []struct {
		name    string
		env     map[string]string
		wantURL string
		wantKey string
	}{
		{"nothing", nil, "", ""},
		{"codeexec wins", map[string]string{"CODEEXEC_UPSTREAM_URL": custom + "/", "CODEEXEC_UPSTREAM_API_KEY": "k", "XAI_API_KEY": "x", "OPENAI_API_KEY": "o"}, custom, "k"},
		{"codeexec URL alone gets no provider key", map[string]string{"CODEEXEC_UPSTREAM_URL": custom, "XAI_API_KEY": "x"}, custom, ""},
		{"codeexec URL of xAI gets its key", map[string]string{"CODEEXEC_UPSTREAM_URL": "https://api.x.ai/v1", "XAI_API_KEY": "x"}, "https://api.x.ai/v1", "x"},
		{"codeexec URL of OpenAI gets its key", map[string]string{"CODEEXEC_UPSTREAM_URL": "https://api.openai.com/v1/", "XAI_API_KEY": "x", "OPENAI_API_KEY": "o"}, "https://api.openai.com/v1", "o"},
		{"codeexec key with xAI", map[string]string{"CODEEXEC_UPSTREAM_API_KEY": "k", "XAI_API_KEY": "x"}, "https://api.x.ai/v1", "k"},
		{"codeexec key alone", map[string]string{"CODEEXEC_UPSTREAM_API_KEY": "k"}, "", "k"},
		{"xAI", map[string]string{"XAI_API_KEY": "x"}, "https://api.x.ai/v1", "x"},
		{"OpenAI", map[string]string{"OPENAI_API_KEY": "o"}, "https://api.openai.com/v1", "o"},
		{"xAI before OpenAI", map[string]string{"XAI_API_KEY": "x", "OPENAI_API_KEY": "o"}, "https://api.x.ai/v1", "x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url, key := FromEnv(func(k string) string { return tt.env[k] })
			if url != tt.wantURL || key != tt.wantKey {
				t.Errorf("FromEnv(%v) = %q, %q, want %q, %q", tt.env, url, key, tt.wantURL, tt.wantKey)
			}
		})
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name   string
		header string
		want   time.Duration
		wantOK bool
	}{
		{"none", "", 0, false},
		{"zero", "0", 0, true},
		{"seconds", " 3 ", 3 * time.Second, true},
		{"capped", "120", 10 * time.Second, true},
		{"huge", "99999999999999999", 10 * time.Second, true},
		{"negative", "-1", 0, false},
		{"date", now.Add(2 * time.Second).Format(http.TimeFormat), 2 * time.Second, true},
		{"date in the past", now.Add(-time.Minute).Format(http.TimeFormat), 0, true},
		{"date far ahead", now.Add(time.Hour).Format(http.TimeFormat), 10 * time.Second, true},
		{"garbage", "soon", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := retryAfter(tt.header, now)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("retryAfter(%q) = %v, %v, want %v, %v", tt.header, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	tests := []struct {
		n    int
		base time.Duration
	}{{0, 250 * time.Millisecond}, {1, 500 * time.Millisecond}, {2, time.Second}, {5, 8 * time.Second}, {6, 10 * time.Second}, {100, 10 * time.Second}}
	for _, tt := range tests {
		for range 100 {
			if got := backoff(tt.n); got < tt.base*3/4 || got >= tt.base*5/4 {
				t.Fatalf("backoff(%d) = %v, want in [%v, %v)", tt.n, got, tt.base*3/4, tt.base*5/4)
			}
		}
	}
}

// TestConcurrent runs calls in parallel on one client, for the race
// detector.
func TestConcurrent(t *testing.T) {
	c, _ := newTestClient(t, 0, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Accept") == "text/event-stream" {
			sse("data: {\"n\":1}\n\ndata: [DONE]\n\n")(w, r)
			return
		}
		reply(200, okBody)(w, r)
	})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if _, err := c.Chat(context.Background(), []byte(`{}`)); err != nil {
				t.Errorf("Chat() error = %v", err)
			}
			if err := c.ChatStream(context.Background(), []byte(`{}`), func([]byte) error { return nil }); err != nil {
				t.Errorf("ChatStream() error = %v", err)
			}
		})
	}
	wg.Wait()
}
