//go:build linux

package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
	"unicode/utf8"
)

// decodeWait is how long a request waits for one of the
// --decode-concurrency places before it is refused as busy.
const decodeWait = time.Second

// deadlineBody is a request body read under a read deadline, which it
// lifts once the body is read to its end: past it the connection's
// reads are net/http's own watch for a client that leaves, and a
// deadline there would cancel the request.
type deadlineBody struct {
	io.ReadCloser
	rc   *http.ResponseController
	done bool
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF && !b.done {
		b.done = true
		b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}

// limitBody bounds r's body to limit bytes, read within timeout. A
// request without a body gets no deadline: for it net/http already
// watches the connection.
func limitBody(w http.ResponseWriter, r *http.Request, limit int64, timeout time.Duration) {
	if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
		rc := http.NewResponseController(w)
		if rc.SetReadDeadline(time.Now().Add(timeout)) == nil {
			r.Body = &deadlineBody{ReadCloser: r.Body, rc: rc}
		}
	}
	r.Body = http.MaxBytesReader(w, r.Body, limit)
}

// readBody reads r's JSON body of owner and hands it to parse, holding
// one of the --decode-concurrency places meanwhile: how much memory
// bodies being read and decoded take is bounded overall and per key.
func (s *Server) readBody(r *http.Request, owner string, parse func([]byte) *apiError) *apiError {
	release, e := s.decodePlace(r.Context(), owner)
	if e != nil {
		return e
	}
	defer release()
	data, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return &apiError{Status: http.StatusRequestEntityTooLarge, Type: "invalid_request_error", Code: "body_too_large",
				Message: fmt.Sprintf("request body is over the limit of %d bytes", mbe.Limit)}
		}
		// (The deadline also cancels the request's context: test it first.)
		if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
			return &apiError{Status: http.StatusRequestTimeout, Type: "invalid_request_error", Code: "body_timeout",
				Message: fmt.Sprintf("the request body did not arrive within %v", s.cfg.BodyReadTimeout)}
		}
		return invalid("", "cannot read request body")
	}
	if slot, ok := r.Context().Value(bodyKey{}).(*readBodySlot); ok {
		slot.data = data // for forward
	}
	return parse(data)
}

// decode reads r's JSON body of owner strictly into v (see readBody and
// parseJSON).
func (s *Server) decode(r *http.Request, owner string, v any) *apiError {
	return s.readBody(r, owner, func(data []byte) *apiError { return parseJSON(data, v) })
}

// decodePlace takes one of the places for bodies being decoded: a key
// may hold at most half of them (and no more than its concurrency); when
// all are taken a request waits up to decodeWait.
func (s *Server) decodePlace(ctx context.Context, owner string) (func(), *apiError) {
	busy := &apiError{Status: http.StatusTooManyRequests, Type: "rate_limit_error", Code: "busy",
		Message: "too many request bodies are being read; retry after the time in Retry-After"}
	perKey := min(s.cfg.KeyConcurrency, max(1, s.cfg.DecodeConcurrency/2))
	s.mu.Lock()
	if s.decodingOf[owner] >= perKey {
		s.mu.Unlock()
		s.metrics.rejected.WithLabelValues("busy").Inc()
		return nil, busy
	}
	s.decodingOf[owner]++
	s.mu.Unlock()
	release := func() {
		s.mu.Lock()
		if s.decodingOf[owner]--; s.decodingOf[owner] <= 0 {
			delete(s.decodingOf, owner)
		}
		s.mu.Unlock()
	}
	t := time.NewTimer(decodeWait)
	defer t.Stop()
	select {
	case s.decoding <- struct{}{}:
		return func() { <-s.decoding; release() }, nil
	case <-t.C:
		release()
		s.metrics.rejected.WithLabelValues("busy").Inc()
		return nil, busy
	case <-ctx.Done():
		release()
		return nil, &apiError{Status: http.StatusServiceUnavailable, Type: "server_error", Code: "unavailable", Message: "the request ended"}
	}
}

// parseJSON decodes a JSON body strictly into v: unknown fields, wrong
// types and trailing data are client errors naming the field.
func parseJSON(data []byte, v any) *apiError {
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
