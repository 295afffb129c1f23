//go:build linux

package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"codeexec/internal/config"
)

// decodeServer is a server of the default configuration, for its decode.
var decodeServer = New(config.Default(), nil, nil, slog.New(slog.DiscardHandler))

// decode runs the server's decode for a client without a key.
func decode(r *http.Request, v any) *apiError { return decodeServer.decode(r, "", v) }

// decodeBody runs decode on a POST /v1/execute request carrying body.
func decodeBody(body string, v any) *apiError {
	r := httptest.NewRequest(http.MethodPost, "/v1/execute", strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	return decode(r, v)
}

// wantErr is what a test expects of an apiError; Message must contain
// every one of Contains.
type wantErr struct {
	Status   int
	Param    string
	Code     string
	Contains []string
}

func checkErr(t *testing.T, call string, got *apiError, want wantErr) {
	t.Helper()
	if got == nil {
		t.Fatalf("%s = nil, want a %d error", call, want.Status)
	}
	if got.Status != want.Status || got.Param != want.Param || (want.Code != "" && got.Code != want.Code) {
		t.Errorf("%s = {status %d, param %q, code %q}, want {status %d, param %q, code %q}",
			call, got.Status, got.Param, got.Code, want.Status, want.Param, want.Code)
	}
	if got.Type != "invalid_request_error" {
		t.Errorf("%s type = %q, want invalid_request_error", call, got.Type)
	}
	for _, s := range want.Contains {
		if !strings.Contains(got.Message, s) {
			t.Errorf("%s message = %q, want it to contain %q", call, got.Message, s)
		}
	}
}

func TestDecodeHostileBodies(t *testing.T) {
	bad := func(param string, contains ...string) wantErr {
		return wantErr{Status: http.StatusBadRequest, Param: param, Code: "invalid_value", Contains: contains}
	}
	tests := []struct {
		name string
		body string
		want wantErr
	}{
		{"unknown field", `{"code":"1","cod":2}`, bad("cod", `unknown field "cod"`)},
		{"unknown nested field", `{"code":"1","files":[{"path":"a","content":"x"}]}`, bad("content", `unknown field "content"`)},
		{"code is a number", `{"code":42}`, bad("code", "code must be a string", "number")},
		{"code is an object", `{"code":{"x":1}}`, bad("code", "code must be a string", "object")},
		{"timeout is a string", `{"code":"1","timeout":"30s"}`, bad("timeout", "timeout must be a number", "string")},
		{"memory is fractional", `{"code":"1","memory_limit_mb":1.5}`, bad("memory_limit_mb", "memory_limit_mb")},
		{"memory overflows int64", `{"code":"1","memory_limit_mb":1e40}`, bad("memory_limit_mb", "memory_limit_mb")},
		{"stream is a string", `{"code":"1","stream":"yes"}`, bad("stream", "stream must be a boolean")},
		{"files is an object", `{"code":"1","files":{"path":"a"}}`, bad("files", "files must be an array")},
		{"nested wrong type", `{"code":"1","files":[{"path":7}]}`, bad("files.path", "files.path must be a string")},
		{"body is an array", `[{"code":"1"}]`, bad("", "the body must be an object")},
		{"body is a string", `"print(1)"`, bad("", "the body must be an object")},
		{"trailing garbage", `{"code":"1"} x`, bad("", "unexpected data after the JSON object")},
		{"second object", `{"code":"1"}{"code":"2"}`, bad("", "unexpected data after the JSON object")},
		{"trailing comma value", `{"code":"1"},`, bad("", "unexpected data")},
		{"truncated string", `{"code":"pri`, bad("", "truncated")},
		{"truncated after comma", `{"code":"1",`, bad("", "truncated")},
		{"truncated key", `{"code"`, bad("", "truncated")},
		{"syntax error", `{"code":'1'}`, bad("", "not valid JSON")},
		{"lone brace", `}`, bad("", "not valid JSON")},
		{"invalid utf-8 in code", "{\"code\":\"print('\xff\xfe')\"}", bad("code", "code is not valid UTF-8")},
		{"invalid utf-8 in timeout's string", "{\"code\":\"1\",\"timeout\":\"\xc3\"}", bad("timeout", "timeout is not valid UTF-8")},
		{"invalid utf-8 nested", "{\"code\":\"1\",\"files\":[{\"path\":\"a\xff\"}]}", bad("files", "files is not valid UTF-8")},
		{"invalid utf-8 in a key", "{\"co\xffde\":\"1\"}", bad("", "not valid UTF-8")},
		{"invalid utf-8 and invalid JSON", "{\"code\":\"\xff", bad("", "not valid UTF-8")},
		{"empty body", ``, bad("", "empty")},
		{"blank body", " \n\t ", bad("", "empty")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var v execRequest
			checkErr(t, fmt.Sprintf("decode(%q)", tt.body), decodeBody(tt.body, &v), tt.want)
		})
	}
}

func TestDecodeAccepts(t *testing.T) {
	str := func(s string) *string { return &s }
	num := func(f float64) *float64 { return &f }
	mb := func(n int64) *int64 { return &n }
	tests := []struct {
		name string
		body string
		want execRequest
	}{
		{"code only", `{"code":"print(1)"}`, execRequest{Code: str("print(1)")}},
		{"whitespace around", " \n{\"code\":\"1\"}\n\n", execRequest{Code: str("1")}},
		{
			name: "every field",
			body: `{"code":"x = 1","timeout":2.5,"memory_limit_mb":256,"stream":true,"session_id":"sess_1",
				"files":[{"path":"a.txt","content_base64":"aGk="},{"file_id":"file-1","path":"b.csv"}]}`,
			want: execRequest{Code: str("x = 1"), Timeout: num(2.5), MemoryLimitMB: mb(256), Stream: true, SessionID: str("sess_1"),
				Files: []inputFile{{Path: "a.txt", ContentBase64: str("aGk=")}, {FileID: "file-1", Path: "b.csv"}}},
		},
		{"escaped unicode", `{"code":"print(\"\u00e9\ud83d\ude00\")"}`, execRequest{Code: str("print(\"é😀\")")}},
		{"null fields are absent", `{"code":"1","timeout":null,"files":null}`, execRequest{Code: str("1")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got execRequest
			if e := decodeBody(tt.body, &got); e != nil {
				t.Fatalf("decode(%q) = %v, want nil", tt.body, e)
			}
			if diff := cmp.Diff(tt.want, got, cmpopts.IgnoreUnexported(apiError{})); diff != "" {
				t.Errorf("decode(%q) mismatch (-want +got):\n%s", tt.body, diff)
			}
		})
	}
}

func TestDecodeBodyTooLarge(t *testing.T) {
	tests := []struct {
		name  string
		body  string
		limit int64
		want  *apiError // nil: decoded
	}{
		{
			name: "over the limit", body: `{"code":"` + strings.Repeat("x", 100) + `"}`, limit: 64,
			want: &apiError{Status: http.StatusRequestEntityTooLarge, Type: "invalid_request_error", Code: "body_too_large",
				Message: "request body is over the limit of 64 bytes"},
		},
		{
			name: "one byte over", body: `{"code":"12345"}`, limit: 15,
			want: &apiError{Status: http.StatusRequestEntityTooLarge, Type: "invalid_request_error", Code: "body_too_large",
				Message: "request body is over the limit of 15 bytes"},
		},
		{name: "exactly the limit", body: `{"code":"12345"}`, limit: 16},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			r := httptest.NewRequest(http.MethodPost, "/v1/execute", strings.NewReader(tt.body))
			r.Body = http.MaxBytesReader(w, r.Body, tt.limit)
			var v execRequest
			got := decode(r, &v)
			if diff := cmp.Diff(tt.want, got, cmpopts.IgnoreUnexported(apiError{})); diff != "" {
				t.Errorf("decode(%d bytes, limit %d) mismatch (-want +got):\n%s", len(tt.body), tt.limit, diff)
			}
		})
	}
}

// errReader fails every read with err.
type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

func TestDecodeUnreadableBody(t *testing.T) {
	r := httptest.NewRequest(http.MethodPost, "/v1/execute", errReader{errors.New("connection reset by peer")})
	var v execRequest
	got := decode(r, &v)
	checkErr(t, "decode(unreadable)", got, wantErr{Status: http.StatusBadRequest, Contains: []string{"cannot read"}})
	if got != nil && strings.Contains(got.Message, "connection reset") {
		t.Errorf("decode(unreadable) message = %q, leaks the internal error", got.Message)
	}
}

func TestDecodeJSONError(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want *apiError
	}{
		{
			name: "type error at top level",
			err:  json.Unmarshal([]byte(`[]`), &execRequest{}),
			want: invalid("", "the body must be an object, not array"),
		},
		{
			name: "type error of a field",
			err:  json.Unmarshal([]byte(`{"timeout":true}`), &execRequest{}),
			want: invalid("timeout", "timeout must be a number, not bool"),
		},
		{
			name: "unexpected EOF",
			err:  io.ErrUnexpectedEOF,
			want: invalid("", "request body is truncated JSON"),
		},
		{
			name: "anything else is still a 400",
			err:  errors.New("json: something new"),
			want: invalid("", "request body is not valid: json: something new"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.err == nil {
				t.Fatal("test error is nil")
			}
			if diff := cmp.Diff(tt.want, jsonError(tt.err), cmpopts.IgnoreUnexported(apiError{})); diff != "" {
				t.Errorf("jsonError(%v) mismatch (-want +got):\n%s", tt.err, diff)
			}
		})
	}
}

// FuzzDecodeExecRequest feeds arbitrary bytes to decode: it must never
// panic, and whatever it refuses must be a client error with a message,
// never a 5xx or an empty answer.
func FuzzDecodeExecRequest(f *testing.F) {
	for _, s := range []string{
		`{"code":"print(1)"}`,
		`{"code":"x","timeout":1.5,"memory_limit_mb":64,"stream":true,"session_id":"sess_x"}`,
		`{"code":"x","files":[{"path":"a/b.txt","content_base64":"aGk="},{"file_id":"file-x"}]}`,
		`{"code":"x"} {"code":"y"}`,
		`{"code":`,
		`{"cod":1}`,
		`{"files":[{"path":1}]}`,
		"{\"code\":\"\xff\"}",
		`{"code":"\ud800"}`,
		`[[[[[[[[[[[[[[[[[[[[`,
		`{"timeout":1e999}`,
		``,
		`null`,
	} {
		f.Add([]byte(s))
	}
	const limit = 4096
	f.Fuzz(func(t *testing.T, body []byte) {
		w := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodPost, "/v1/execute", bytes.NewReader(body))
		r.Body = http.MaxBytesReader(w, r.Body, limit)
		var v execRequest
		e := decode(r, &v)
		if e == nil {
			if len(body) > limit {
				t.Fatalf("decode accepted %d bytes over a limit of %d", len(body), limit)
			}
			if !utf8.Valid(body) {
				t.Fatalf("decode(%q) accepted invalid UTF-8", body)
			}
			return
		}
		if e.Status < 400 || e.Status > 499 {
			t.Errorf("decode(%q) status = %d, want 4xx", body, e.Status)
		}
		if e.Message == "" || e.Type == "" {
			t.Errorf("decode(%q) = %+v, want a message and a type", body, e)
		}
		if len(body) > limit && e.Status != http.StatusRequestEntityTooLarge {
			t.Errorf("decode(%d bytes over limit %d) status = %d, want 413", len(body), limit, e.Status)
		}
		// The error must be writable in OpenAI's shape.
		rec := httptest.NewRecorder()
		writeError(rec, e)
		var out struct {
			Error struct {
				Message string `json:"message"`
				Type    string `json:"type"`
			} `json:"error"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out.Error.Message == "" {
			t.Errorf("writeError(decode(%q)) wrote %q (%v), want an error object with a message", body, rec.Body.String(), err)
		}
	})
}
