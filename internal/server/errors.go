//go:build linux

package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"unicode/utf8"
)

// apiError is an error in OpenAI's shape. Message is what the client sees;
// internal detail is logged, never sent.
type apiError struct {
	Status  int    `json:"-"`
	Message string `json:"message"`
	Type    string `json:"type"`
	Param   string `json:"param,omitempty"`
	Code    string `json:"code,omitempty"`
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

// decode reads a JSON body strictly into v: unknown fields, wrong types,
// trailing data and bodies over the limit are client errors naming the
// field.
func decode(r *http.Request, v any) *apiError {
	data, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return &apiError{Status: http.StatusRequestEntityTooLarge, Type: "invalid_request_error", Code: "body_too_large",
				Message: fmt.Sprintf("request body is over the limit of %d bytes", mbe.Limit)}
		}
		return invalid("", "cannot read request body")
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return invalid("", "request body is empty; send a JSON object")
	}
	// encoding/json silently turns invalid UTF-8 into U+FFFD: refuse it,
	// naming the field that holds it.
	if !utf8.Valid(data) {
		var fields map[string]json.RawMessage
		if json.Unmarshal(data, &fields) == nil {
			for name, raw := range fields {
				if !utf8.Valid(raw) {
					return invalid(name, "%s is not valid UTF-8", name)
				}
			}
		}
		return invalid("", "request body is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if dec.More() {
		return invalid("", "unexpected data after the JSON object")
	}
	var extra json.RawMessage
	if err := dec.Decode(&extra); err != io.EOF {
		return invalid("", "unexpected data after the JSON object")
	}
	return nil
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
