//go:build linux

package server

import (
	"encoding/json"
	"errors"
	"net/http"
	"time"
)

// sseWriter writes Server-Sent Events (the WHATWG HTML "server-sent
// events" framing: event and data lines, a blank line between events),
// each write with a deadline: a client that does not take an event in
// time is dropped, so it cannot hold a request (and its sandbox) open.
// The first write sends the status and headers. After a failed write it
// writes nothing more. It is the one writer of every stream the server
// sends: execute's named events and chat's data-only chunks.
type sseWriter struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	started bool
	err     error
}

func newSSE(w http.ResponseWriter, timeout time.Duration) *sseWriter {
	return &sseWriter{w: w, rc: http.NewResponseController(w), timeout: timeout}
}

// event writes the event name with v, as JSON, for its data.
func (s *sseWriter) event(name string, v any) error {
	data, _ := json.Marshal(v)
	return s.write(name, data)
}

// data writes an event of data alone, of the default type ("message"),
// as OpenAI's chat completion streams are written. data must hold no line
// end.
func (s *sseWriter) data(data []byte) error {
	return s.write("", data)
}

func (s *sseWriter) write(name string, data []byte) error {
	if s.err != nil {
		return s.err
	}
	s.rc.SetWriteDeadline(time.Now().Add(s.timeout))
	if !s.started {
		h := s.w.Header()
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Accel-Buffering", "no")
		s.w.WriteHeader(http.StatusOK)
		s.started = true
	}
	b := make([]byte, 0, len("event: \ndata: \n\n")+len(name)+len(data))
	if name != "" {
		b = append(append(append(b, "event: "...), name...), '\n')
	}
	b = append(append(append(b, "data: "...), data...), "\n\n"...)
	if _, err := s.w.Write(b); err != nil {
		s.err = err
		return err
	}
	if err := s.rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		s.err = err
	}
	return s.err
}
