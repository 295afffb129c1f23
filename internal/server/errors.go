//go:build linux

package server

import (
	"codeexec/internal/store"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// apiError is an error in OpenAI's shape. Message is what the client sees;
// internal detail is logged, never sent.
type apiError struct {
	Status  int    `json:"-"`
	Message string `json:"message"`
	Type    string `json:"type"`
	Param   string `json:"param,omitempty"`
	Code    string `json:"code,omitempty"`
	// forward, when set, is not an error: the request is for a session
	// on that node, and authed forwards it there (nodes.go).
	forward *store.Node
}

func (e *apiError) Error() string { return e.Message }

func invalid(param, format string, args ...any) *apiError {
	return &apiError{Status: http.StatusBadRequest, Type: "invalid_request_error", Param: param, Code: "invalid_value",
		Message: fmt.Sprintf(format, args...)}
}

func notFound(what, id string) *apiError {
	return &apiError{Status: http.StatusNotFound, Type: "invalid_request_error", Code: "not_found",
		Message: fmt.Sprintf("no %s with id %q", what, id)}
}

var errInternal = &apiError{Status: http.StatusInternalServerError, Type: "server_error", Code: "internal_error",
	Message: "the server failed; the request id in the X-Request-Id header identifies it in the logs"}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
}

func writeError(w http.ResponseWriter, e *apiError) {
	if (e.Status == http.StatusTooManyRequests || e.Status == http.StatusServiceUnavailable) && w.Header().Get("Retry-After") == "" {
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, e.Status, map[string]any{"error": e})
}

func jsonError(err error) *apiError {
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &te):
		return invalid(te.Field, "%s must be %s, not %s", orBody(te.Field), kindName(te.Type.Kind().String()), te.Value)
	case errors.As(err, &se):
		return invalid("", "request body is not valid JSON: %v", se)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		// encoding/json has no error type for an unknown field
		// (DisallowUnknownFields): its message is all there is.
		f := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return invalid(f, "unknown field %q", f)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return invalid("", "request body is truncated JSON")
	}
	return invalid("", "request body is not valid: %v", err)
}

func orBody(f string) string {
	if f == "" {
		return "the body"
	}
	return f
}

func kindName(k string) string {
	switch k {
	case "struct", "map":
		return "an object"
	case "slice", "array":
		return "an array"
	case "float64", "int", "int64":
		return "a number"
	case "bool":
		return "a boolean"
	}
	return "a " + k
}

// atCapacity answers a request that needs a new sandbox while the service
// runs as many as it can hold (executor.ErrCapacity).
func atCapacity() *apiError {
	return &apiError{Status: http.StatusServiceUnavailable, Type: "server_error", Code: "capacity",
		Message: "the service runs as many sandboxes as it can hold; retry later, or end a session first"}
}

// shuttingDown answers a request stopped by the end of the shutdown grace
// period before it had a result.
func shuttingDown() *apiError {
	return &apiError{Status: http.StatusServiceUnavailable, Type: "server_error", Code: "shutting_down",
		Message: "the server is shutting down; retry later or on another instance"}
}
