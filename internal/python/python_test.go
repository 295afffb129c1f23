package python

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
)

func TestReadEvent(t *testing.T) {
	frame := func(s string) []byte {
		b := make([]byte, 4+len(s))
		binary.BigEndian.PutUint32(b, uint32(len(s)))
		copy(b[4:], s)
		return b
	}
	tests := []struct {
		name    string
		in      []byte
		want    string // event type
		wantErr error
	}{
		{"ready", frame(`{"type":"ready"}`), "ready", nil},
		{"done ok", frame(`{"type":"done","status":"ok","result":{"text/plain":"2"}}`), "done", nil},
		{"done error", frame(`{"type":"done","status":"error","error":{"name":"E","value":"v"}}`), "done", nil},
		{"done error without error", frame(`{"type":"done","status":"error"}`), "", ErrProtocol},
		{"done with unknown status", frame(`{"type":"done","status":"great"}`), "", ErrProtocol},
		{"unknown type", frame(`{"type":"root"}`), "", ErrProtocol},
		{"not json", frame(`nope`), "", ErrProtocol},
		{"huge frame", []byte{0xff, 0xff, 0xff, 0xff}, "", ErrProtocol},
		{"short frame", append([]byte{0, 0, 0, 9}, "{}"...), "", ErrProtocol},
		{"clean end", nil, "", io.EOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, err := ReadEvent(bytes.NewReader(tt.in))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Errorf("ReadEvent(%q) error = %v, want %v", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil || ev.Type != tt.want {
				t.Errorf("ReadEvent(%q) = %+v, %v; want type %q", tt.in, ev, err, tt.want)
			}
		})
	}
}

// FuzzDecodeEvent feeds the decoder what a hostile child could send: it
// must never panic, and what it accepts must be a known, consistent event.
func FuzzDecodeEvent(f *testing.F) {
	for _, s := range []string{`{"type":"ready"}`, `{"type":"display","bundle":{"image/png":"AA=="}}`,
		`{"type":"done","status":"error","error":{"name":"E","value":"v","traceback":"t"}}`, `{"type":"done","status":"ok","result":null}`, `[]`, `{"type":1}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ev, err := DecodeEvent(data)
		if err != nil {
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("DecodeEvent(%q) error %v is not a protocol error", data, err)
			}
			return
		}
		switch ev.Type {
		case "ready", "display":
		case "done":
			if (ev.Status == "error") != (ev.Error != nil) || (ev.Status != "ok" && ev.Status != "error") {
				t.Fatalf("DecodeEvent(%q) accepted an inconsistent done: %+v", data, ev)
			}
		default:
			t.Fatalf("DecodeEvent(%q) accepted type %q", data, ev.Type)
		}
	})
}
