package upstream

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/google/go-cmp/cmp"
)

type event struct{ Event, Data string }

// readEvents reads all events of r, and the error that ended them (nil for
// io.EOF).
func readEvents(r io.Reader) ([]event, error) {
	s := NewSSEReader(r)
	var events []event
	for {
		name, data, err := s.Next()
		if err == io.EOF {
			return events, nil
		}
		if err != nil {
			return events, err
		}
		events = append(events, event{name, string(data)})
	}
}

var sseTests = []struct {
	name  string
	input string
	want  []event
}{
	{"empty", "", nil},
	{"one event", "data: {}\n\n", []event{{"", "{}"}}},
	{"no space after colon", "data:{}\n\n", []event{{"", "{}"}}},
	{"only one space is removed", "data:  x\n\n", []event{{"", " x"}}},
	{"two events", "data: 1\n\ndata: 2\n\n", []event{{"", "1"}, {"", "2"}}},
	{"multi-line data", "data: a\ndata: b\ndata:\n\n", []event{{"", "a\nb\n"}}},
	{"CRLF", "data: 1\r\n\r\ndata: 2\r\ndata: 3\r\n\r\n", []event{{"", "1"}, {"", "2\n3"}}},
	{"lone CR", "data: 1\r\rdata: 2\r\r", []event{{"", "1"}, {"", "2"}}},
	{"CR then CRLF", "data: 1\r\r\ndata: 2\n\r\n", []event{{"", "1"}, {"", "2"}}},
	{"comments", ": ping\n\n:\ndata: 1\n: inside\ndata: 2\n\n", []event{{"", "1\n2"}}},
	{"event type", "event: delta\ndata: 1\n\ndata: 2\n\n", []event{{"delta", "1"}, {"", "2"}}},
	{"event type without data is dropped", "event: x\n\ndata: 1\n\n", []event{{"", "1"}}},
	{"other fields ignored", "id: 5\nretry: 100\nfoo: bar\ndata\n\n", []event{{"", ""}}},
	{"empty data", "data:\n\n", []event{{"", ""}}},
	{"blank lines between events", "\n\n\ndata: 1\n\n\n\n", []event{{"", "1"}}},
	{"complete event without the blank line at EOF", "data: 1\n\ndata: 2\n", []event{{"", "1"}, {"", "2"}}},
	{"event cut inside a line at EOF", "data: 1\n\ndata: 2\ndata: {\"a", []event{{"", "1"}}},
	{"colon in the value", "data: {\"a\":\"b:c\"}\n\n", []event{{"", `{"a":"b:c"}`}}},
}

func TestSSEReader(t *testing.T) {
	readers := []struct {
		name string
		wrap func(io.Reader) io.Reader
	}{
		{"whole", func(r io.Reader) io.Reader { return r }},
		{"byte by byte", iotest.OneByteReader},
		{"halves", iotest.HalfReader},
	}
	for _, tt := range sseTests {
		for _, r := range readers {
			t.Run(tt.name+"/"+r.name, func(t *testing.T) {
				got, err := readEvents(r.wrap(strings.NewReader(tt.input)))
				if err != nil {
					t.Fatalf("Next(%q) error = %v", tt.input, err)
				}
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("Next(%q) mismatch (-want +got):\n%s", tt.input, diff)
				}
			})
		}
	}
}

func TestSSEReaderLimits(t *testing.T) {
	maxData := strings.Repeat("x", maxEventBytes)
	tests := []struct {
		name    string
		input   io.Reader
		want    []event
		wantErr error
	}{
		{"8 MiB event", strings.NewReader("data: " + maxData + "\r\n\r\n"), []event{{"", maxData}}, nil},
		{"line over 8 MiB", strings.NewReader("data: " + maxData + strings.Repeat("x", 100) + "\n\n"), nil, bufio.ErrTooLong},
		{"data over 8 MiB in lines", strings.NewReader(strings.Repeat("data: "+strings.Repeat("x", 1<<20)+"\n", 9) + "\n"), nil, bufio.ErrTooLong},
		{"read error", io.MultiReader(strings.NewReader("data: 1\n\ndata: 2\n"), iotest.ErrReader(iotest.ErrTimeout)), []event{{"", "1"}}, iotest.ErrTimeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := readEvents(tt.input)
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("Next() error = %v, want %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Next() mismatch (-want +got):\n%.500s", diff)
			}
		})
	}
}

// FuzzSSEReader checks that the events do not depend on how the input is
// split into reads, and that line ends never leak into them.
func FuzzSSEReader(f *testing.F) {
	for _, tt := range sseTests {
		f.Add([]byte(tt.input))
	}
	f.Fuzz(func(t *testing.T, input []byte) {
		whole, err := readEvents(bytes.NewReader(input))
		if err != nil {
			t.Fatalf("Next(%q) error = %v", input, err)
		}
		bytewise, err := readEvents(iotest.OneByteReader(bytes.NewReader(input)))
		if err != nil {
			t.Fatalf("Next(%q) byte by byte: error = %v", input, err)
		}
		if diff := cmp.Diff(whole, bytewise); diff != "" {
			t.Fatalf("Next(%q) read whole and byte by byte differ (-whole +bytewise):\n%s", input, diff)
		}
		for _, e := range whole {
			if strings.ContainsAny(e.Event, "\r\n") || strings.Contains(e.Data, "\r") {
				t.Fatalf("Next(%q) gave %q, holding a line end", input, e)
			}
		}
	})
}
