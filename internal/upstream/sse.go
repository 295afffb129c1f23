package upstream

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// maxEventBytes bounds the data of one event and the length of one line.
// Chunks carrying a base64 image or a long tool-call argument can be
// megabytes; bufio.Scanner's default of 64 KiB is far too small.
const maxEventBytes = 8 << 20

// SSEReader reads a stream of Server-Sent Events as the HTML standard
// interprets one
// (https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation):
// lines end in LF, CRLF or a lone CR; a line starting with a colon is a
// comment (such as ": ping"); the "data" lines of an event are joined with
// LF; a blank line ends the event. The "id" and "retry" fields, and fields
// of other names, are ignored.
//
// It differs from the standard at the end of the stream in one way: an
// event whose lines are complete but which lacks the closing blank line is
// still returned, as some servers close the stream straight after the last
// data line. An event cut off inside a line is dropped, as the standard
// says.
//
// A line or the data of an event over 8 MiB is an error wrapping
// bufio.ErrTooLong.
type SSEReader struct {
	sc      *bufio.Scanner
	checked int  // bytes at the start of the scanner's pending data known to hold no line end
	afterCR bool // the last line ended with CR, so an LF right after it belongs to it
	partial bool // the input ended inside a line
}

// NewSSEReader returns a reader of the events in r.
func NewSSEReader(r io.Reader) *SSEReader {
	s := &SSEReader{sc: bufio.NewScanner(r)}
	// Room for the longest allowed data line with its field name and CRLF.
	s.sc.Buffer(make([]byte, 0, 64<<10), maxEventBytes+64)
	s.sc.Split(s.splitLine)
	return s
}

// Next returns the next event: its type, from the "event" field (empty
// where there is none; the standard calls that "message"), and its data.
// Events without any data line are skipped. data may be empty ("data:"
// with no value) and belongs to the caller. At the end of the stream Next
// returns io.EOF; an error reading the stream is returned as it is.
func (s *SSEReader) Next() (event string, data []byte, err error) {
	hasData := false
	for s.sc.Scan() {
		line := s.sc.Bytes()
		if len(line) == 0 {
			if hasData {
				return event, data, nil
			}
			event = ""
			continue
		}
		name, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		switch string(name) {
		case "event":
			event = string(value)
		case "data":
			if len(data)+len(value) > maxEventBytes {
				return "", nil, fmt.Errorf("sse event data over %d bytes: %w", maxEventBytes, bufio.ErrTooLong)
			}
			if hasData {
				data = append(data, '\n')
			}
			data = append(data, value...)
			hasData = true
		}
		// name "" is a comment; other fields are ignored.
	}
	if err := s.sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return "", nil, fmt.Errorf("sse line over %d bytes: %w", maxEventBytes, err)
		}
		return "", nil, err
	}
	if hasData && !s.partial {
		return event, data, nil
	}
	return "", nil, io.EOF
}

// splitLine is a bufio.SplitFunc for lines ending in LF, CRLF or CR. When
// a CR ends a chunk of input, the line is returned at once rather than
// waiting to see whether an LF follows; an LF at the start of the next
// call is then taken as the rest of that CRLF. It never returns a nil
// token while a complete line is pending, since bufio.Scanner reads more
// input after one, which would delay an event until the next arrives.
func (s *SSEReader) splitLine(data []byte, atEOF bool) (advance int, line []byte, err error) {
	if len(data) == 0 {
		return 0, nil, nil
	}
	start := 0
	if s.afterCR && data[0] == '\n' {
		start = 1
	}
	s.afterCR = false
	if i := bytes.IndexAny(data[start+s.checked:], "\r\n"); i >= 0 {
		end := start + s.checked + i
		s.checked = 0
		s.afterCR = data[end] == '\r'
		return end + 1, data[start:end], nil
	}
	if atEOF && len(data) > start {
		s.partial = true
		return len(data), nil, nil
	}
	s.checked = len(data) - start
	return start, nil, nil
}
