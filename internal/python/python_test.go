package python

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func frame(s string) []byte {
	b := make([]byte, 4+len(s))
	binary.BigEndian.PutUint32(b, uint32(len(s)))
	copy(b[4:], s)
	return b
}

func TestReadEvent(t *testing.T) {
	tests := []struct {
		name    string
		in      []byte
		want    string // event type
		wantErr error
	}{
		{"display", frame(`{"type":"display","bundle":{"text/plain":"x"}}`), "display", nil},
		{"done ok", frame(`{"type":"done","status":"ok","result":{"text/plain":"2"}}`), "done", nil},
		{"done error", frame(`{"type":"done","status":"error","error":{"name":"E","value":"v"}}`), "done", nil},
		{"done error without error", frame(`{"type":"done","status":"error"}`), "", ErrProtocol},
		{"done with unknown status", frame(`{"type":"done","status":"great"}`), "", ErrProtocol},
		{"put ok", frame(`{"type":"put","status":"ok"}`), "put", nil},
		{"put error", frame(`{"type":"put","status":"error","error":{"name":"OSError","value":"a: No space left on device"}}`), "put", nil},
		{"put error without error", frame(`{"type":"put","status":"error"}`), "", ErrProtocol},
		{"set-up frame during an execution", frame(`{"type":"ready"}`), "", ErrProtocol},
		{"unknown type", frame(`{"type":"root"}`), "", ErrProtocol},
		{"not json", frame(`nope`), "", ErrProtocol},
		{"bundle not an object", frame(`{"type":"display","bundle":[1]}`), "", ErrProtocol},
		{"huge frame", []byte{0xff, 0xff, 0xff, 0xff}, "", ErrProtocol},
		{"just over the limit", binary.BigEndian.AppendUint32(nil, MaxFrame+1), "", ErrProtocol},
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

func TestReadSetup(t *testing.T) {
	s, err := ReadSetup(bytes.NewReader(frame(`{"type":"warmed","pages":[[4096,8192]]}`)), "warmed")
	if err != nil || len(s.Pages) != 1 || s.Pages[0] != (PageRange{4096, 8192}) {
		t.Errorf("ReadSetup(warmed) = %+v, %v; want one page range", s, err)
	}
	for _, in := range []string{`{"type":"display","bundle":{}}`, `{"type":"ready"}`, `nope`} {
		if _, err := ReadSetup(bytes.NewReader(frame(in)), "warmed"); !errors.Is(err, ErrProtocol) {
			t.Errorf("ReadSetup(%q, warmed) error = %v, want %v", in, err, ErrProtocol)
		}
	}
}

func TestBundleDecode(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Bundle
		bad  bool
	}{
		{name: "text and png", in: `{"text/plain":"a\"b\\","image/png":"AA=="}`, want: Bundle{"text/plain": `a"b\`, "image/png": "AA=="}},
		{name: "json kept raw", in: ` { "application/json" : {"a": [1, {"b": "}"}]} , "text/plain":"x" } `,
			want: Bundle{"application/json": json.RawMessage(`{"a": [1, {"b": "}"}]}`), "text/plain": "x"}},
		{name: "literals", in: `{"a":1,"b":true,"c":null,"d":-1.5e3}`,
			want: Bundle{"a": json.RawMessage(`1`), "b": json.RawMessage(`true`), "c": json.RawMessage(`null`), "d": json.RawMessage(`-1.5e3`)}},
		{name: "duplicate keys: last wins", in: `{"a":"1","a":"2"}`, want: Bundle{"a": "2"}},
		{name: "empty", in: `{}`, want: Bundle{}},
		{name: "null", in: `null`, want: nil},
		{name: "array", in: `[]`, bad: true},
		{name: "string", in: `"x"`, bad: true},
		{name: "invalid", in: `{"a":}`, bad: true},
		{name: "too many keys", in: manyKeys(MaxBundleKeys + 1), bad: true},
		{name: "as many keys as allowed", in: manyKeys(MaxBundleKeys), want: func() Bundle {
			b := Bundle{}
			for i := range MaxBundleKeys {
				b[fmt.Sprint("k", i)] = "v"
			}
			return b
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b Bundle
			err := b.UnmarshalJSON([]byte(tt.in))
			if tt.bad {
				if err == nil {
					t.Errorf("UnmarshalJSON(%q) = %v, want an error", tt.in, b)
				}
				return
			}
			if err != nil {
				t.Fatalf("UnmarshalJSON(%q): %v", tt.in, err)
			}
			if diff := cmp.Diff(tt.want, b); diff != "" {
				t.Errorf("UnmarshalJSON(%q) mismatch (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

func manyKeys(n int) string {
	var b strings.Builder
	b.WriteString("{")
	for i := range n {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `"k%d":"v"`, i)
	}
	b.WriteString("}")
	return b.String()
}

// TestDecodeDoesNotMultiply decodes the frames a hostile child would send
// to make the server allocate far more than the frame's bytes, and checks
// that decoding allocates at most a small multiple of the frame. (Bytes
// allocated, counted by the runtime: not a timing.)
func TestDecodeDoesNotMultiply(t *testing.T) {
	const size = MaxFrame - 1024
	fill := func(prefix, unit, suffix string) []byte {
		var b bytes.Buffer
		b.WriteString(prefix)
		for b.Len()+len(unit)+len(suffix) < size {
			if b.Len() > len(prefix) {
				b.WriteString(",")
			}
			b.WriteString(unit)
		}
		b.WriteString(suffix)
		return b.Bytes()
	}
	tests := []struct {
		name string
		data []byte
		ok   bool
	}{
		{"nested empty objects", fill(`{"type":"display","bundle":{"application/json":[`, `{}`, `]}}`), true},
		{"nested arrays", fill(`{"type":"display","bundle":{"application/json":[`, `[[[]]]`, `]}}`), true},
		{"one key repeated", fill(`{"type":"display","bundle":{`, `"k":1`, `}}`), false},
		{"many distinct keys", []byte(`{"type":"display","bundle":` + manyKeys(200_000) + `}`), false},
		{"huge string", fill(`{"type":"display","bundle":{"text/plain":"`, `x`, `"}}`), true},
		{"error with a huge traceback", fill(`{"type":"done","status":"error","error":{"name":"E","value":"v","traceback":"`, `x`, `"}}`), true},
		{"unknown fields", fill(`{"type":"done","status":"ok","pages":[`, `[1,2]`, `]}`), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			ev, err := DecodeEvent(tt.data)
			runtime.ReadMemStats(&after)
			if (err == nil) != tt.ok {
				t.Fatalf("DecodeEvent(%d bytes) error = %v, want ok %v", len(tt.data), err, tt.ok)
			}
			_ = ev
			if got, limit := after.TotalAlloc-before.TotalAlloc, uint64(2*len(tt.data)+1<<20); got > limit {
				t.Errorf("DecodeEvent of a %d-byte frame allocated %d bytes, want at most %d", len(tt.data), got, limit)
			}
		})
	}
}

// FuzzDecodeEvent feeds the decoder what a hostile child could send: it
// must never panic, and what it accepts must be a known, consistent event.
func FuzzDecodeEvent(f *testing.F) {
	for _, s := range []string{`{"type":"display","bundle":{"image/png":"AA=="}}`,
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
		case "display":
		case "done", "put":
			if (ev.Status == "error") != (ev.Error != nil) || (ev.Status != "ok" && ev.Status != "error") {
				t.Fatalf("DecodeEvent(%q) accepted an inconsistent done: %+v", data, ev)
			}
		default:
			t.Fatalf("DecodeEvent(%q) accepted type %q", data, ev.Type)
		}
	})
}

// FuzzBundle checks the bundle scanner against encoding/json: whatever
// object json.Unmarshal decodes, Bundle decodes to the same values (strings
// as strings, the rest as raw JSON of equal meaning), and it never panics
// on anything else.
func FuzzBundle(f *testing.F) {
	for _, s := range []string{`{"a":"b"}`, `{"a":{"b":[1,"]",{"c":"\\\""}]},"d":null}`, ` {} `, `{"a" : 1e5 , "b":[]}`, `[1]`, `{"a":"\u00e9"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var b Bundle
		err := b.UnmarshalJSON(data)
		var want map[string]any
		werr := json.Unmarshal(data, &want)
		if werr != nil || want == nil || len(want) > MaxBundleKeys {
			if err == nil && werr != nil {
				t.Fatalf("UnmarshalJSON(%q) accepted what encoding/json refuses: %v", data, werr)
			}
			return
		}
		if errors.Is(err, errTooManyKeys) {
			return // duplicate keys beyond the bound: encoding/json keeps the last
		}
		if err != nil {
			t.Fatalf("UnmarshalJSON(%q): %v; encoding/json decodes %v", data, err, want)
		}
		got := map[string]any{}
		for k, v := range b {
			if raw, ok := v.(json.RawMessage); ok {
				var x any
				if err := json.Unmarshal(raw, &x); err != nil {
					t.Fatalf("UnmarshalJSON(%q): value of %q is not JSON: %q", data, k, raw)
				}
				if _, isString := x.(string); isString {
					t.Fatalf("UnmarshalJSON(%q): string value of %q kept raw", data, k)
				}
				v = x
			}
			got[k] = v
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("UnmarshalJSON(%q) differs from encoding/json (-want +got):\n%s", data, diff)
		}
	})
}
