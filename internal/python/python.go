// Package python holds the in-sandbox Python side of codeexec (the zygote
// and the cell runner, embedded .py files) and the wire protocol Go speaks
// with them.
//
// Everything that arrives from a child is untrusted: user code runs in the
// same process as the runner and can forge any frame. Decoding is strict and
// bounded; a malformed frame is a protocol violation that ends the child.
package python

import (
	"bytes"
	"embed"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
)

//go:embed zygote.py runner.py
var sources embed.FS

// Files returns the Python sources to place in the sandbox's /run/codeexec,
// by base name.
func Files() map[string][]byte {
	m := map[string][]byte{}
	for _, name := range []string{"zygote.py", "runner.py"} {
		b, err := sources.ReadFile(name)
		if err != nil {
			panic(err) // embedded at build time
		}
		m[name] = b
	}
	return m
}

// ZygoteConfig is written to /run/codeexec/config.json for the zygote.
type ZygoteConfig struct {
	// Env is the whole environment of every child.
	Env map[string]string `json:"env"`
	// TmpBytes sizes each child's /tmp and /dev/shm tmpfs.
	TmpBytes int64 `json:"tmp_bytes"`
	// WorkdirBytes sizes each child's /mnt/data tmpfs.
	WorkdirBytes int64 `json:"workdir_bytes"`
	// MaxFiles is the inode count of each of those tmpfs.
	MaxFiles int64 `json:"max_files"`
	// MaxFileBytes is RLIMIT_FSIZE, the largest file a child can write.
	MaxFileBytes int64 `json:"max_file_bytes"`
	// MaxOpenFiles is RLIMIT_NOFILE.
	MaxOpenFiles int64 `json:"max_open_files"`
	// MaxProcs is RLIMIT_NPROC for the child's unique uid.
	MaxProcs int64 `json:"max_procs"`
	// Preload are modules the zygote imports before any request (see
	// Preloads); one that is not installed is skipped.
	Preload []string `json:"preload,omitempty"`
}

// Control messages between Go and the zygote (one JSON object per
// SOCK_SEQPACKET message).
type Control struct {
	Op     string      `json:"op"`               // spawn, prefault, ready, spawned, exited
	ID     int         `json:"id,omitempty"`     // child id chosen by Go
	UID    int         `json:"uid,omitempty"`    // spawn: the child's uid inside the sandbox
	PID    int         `json:"pid,omitempty"`    // spawned: pid in the zygote's namespace
	Code   int         `json:"code,omitempty"`   // exited: exit status, -1 if signalled
	Signal int         `json:"signal,omitempty"` // exited: terminating signal
	Ranges []PageRange `json:"ranges,omitempty"` // prefault: what children copy at once
}

// PageRange is [address, bytes] of memory a child writes while it warms up.
type PageRange [2]uint64

// Exec is the request Go sends a child.
type Exec struct {
	Op           string `json:"op"` // always "exec"
	Code         string `json:"code"`
	Nonce        string `json:"nonce"`
	MaxFileBytes int64  `json:"max_file_bytes,omitempty"`
	// Language is "python" (or empty) or "bash": bash runs Code with
	// /bin/bash -c in a subprocess of the child.
	Language string `json:"language,omitempty"`
	// Env is set in os.environ before the code runs (the egress proxy's
	// variables); keys not given are left as they are.
	Env map[string]string `json:"env,omitempty"`
}

// Put asks a child to write files into its /mnt/data; the files' bytes
// follow the frame on the socket, in order. The child answers with a "put"
// Event.
type Put struct {
	Op    string    `json:"op"` // always "put"
	Files []PutFile `json:"files"`
}

// PutFile is one file of a Put: its path below /mnt/data and its size.
type PutFile struct {
	Path  string `json:"path"`
	Bytes int64  `json:"bytes"`
}

// Bundle is a MIME bundle: MIME type to content. A value that is a JSON
// string (text, or base64 for binary types) decodes to a Go string; any
// other value (application/json, say) stays raw JSON as a json.RawMessage,
// so decoding a bundle never costs much more memory than its bytes (see
// UnmarshalJSON).
type Bundle map[string]any

// MaxBundleKeys bounds the MIME types of one bundle. A real one has a few.
const MaxBundleKeys = 64

// Error describes an exception raised by user code.
type Error struct {
	Name      string `json:"name"`
	Value     string `json:"value"`
	Traceback string `json:"traceback,omitempty"`
}

// Event is a frame from a child during an execution: any number of
// "display" frames, then one "done"; or the "put" that answers a Put.
type Event struct {
	Type   string `json:"type"`
	Bundle Bundle `json:"bundle,omitempty"` // display
	Status string `json:"status,omitempty"` // done, put: ok or error
	Result Bundle `json:"result,omitempty"` // done
	Error  *Error `json:"error,omitempty"`  // done, put
	// ExitCode is bash's exit status (done, language bash only).
	ExitCode *int `json:"exit_code,omitempty"`
}

// Setup is a frame a new child sends before it takes code: "ready", then
// "warmed" (and "warmed_data" if asked). A child sends them before any
// user code runs in it.
type Setup struct {
	Type string `json:"type"`
	// Pages, on the "warmed" frame of a child asked to probe, are the
	// ranges of memory it wrote while it set itself up and warmed up.
	Pages []PageRange `json:"pages,omitempty"`
}

// MaxFrame bounds one frame from a child: a display with a PNG of about
// 6 MiB fits. With the executor's per-execution budget of frame bytes it
// bounds the memory a hostile sandbox can make the server hold (see
// docs/security.md).
const MaxFrame = 8 << 20

// ErrProtocol reports a frame a child should never send.
var ErrProtocol = errors.New("sandbox protocol violation")

// WriteFrame writes v as one length-prefixed JSON frame.
func WriteFrame(w io.Writer, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	buf := make([]byte, 4+len(data))
	binary.BigEndian.PutUint32(buf, uint32(len(data)))
	copy(buf[4:], data)
	_, err = w.Write(buf)
	return err
}

// ReadHeader reads a frame's 4-byte length, refusing one over MaxFrame, so
// that the caller can count the frame's cost before it reads it. It
// returns io.EOF when the child closed its socket cleanly between frames.
func ReadHeader(r io.Reader) (int, error) {
	var head [4]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return 0, err
	}
	n := binary.BigEndian.Uint32(head[:])
	if n > MaxFrame {
		return 0, fmt.Errorf("%w: frame of %d bytes, over the limit of %d", ErrProtocol, n, MaxFrame)
	}
	return int(n), nil
}

// readFrame reads one whole frame.
func readFrame(r io.Reader) ([]byte, error) {
	n, err := ReadHeader(r)
	if err != nil {
		return nil, err
	}
	return ReadBody(r, n)
}

// ReadBody reads the n bytes of a frame whose header said n.
func ReadBody(r io.Reader, n int) ([]byte, error) {
	data := make([]byte, n)
	if _, err := io.ReadFull(r, data); err != nil {
		return nil, fmt.Errorf("%w: short frame: %v", ErrProtocol, err)
	}
	return data, nil
}

// ReadEvent reads and validates one execution frame.
func ReadEvent(r io.Reader) (*Event, error) {
	data, err := readFrame(r)
	if err != nil {
		return nil, err
	}
	return DecodeEvent(data)
}

// ReadSetup reads one set-up frame and checks that it is of type want.
func ReadSetup(r io.Reader, want string) (*Setup, error) {
	data, err := readFrame(r)
	if err != nil {
		return nil, err
	}
	var s Setup
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	if s.Type != want {
		return nil, fmt.Errorf("%w: %q frame where %q was due", ErrProtocol, s.Type, want)
	}
	return &s, nil
}

// DecodeEvent parses and validates one execution frame's JSON.
func DecodeEvent(data []byte) (*Event, error) {
	var ev Event
	if err := json.Unmarshal(data, &ev); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	switch ev.Type {
	case "display":
	case "done", "put":
		if ev.Status != "ok" && ev.Status != "error" {
			return nil, fmt.Errorf("%w: %s with status %q", ErrProtocol, ev.Type, ev.Status)
		}
		if (ev.Status == "error") != (ev.Error != nil) {
			return nil, fmt.Errorf("%w: status %q with error %v", ErrProtocol, ev.Status, ev.Error)
		}
	default:
		return nil, fmt.Errorf("%w: event type %q during an execution", ErrProtocol, ev.Type)
	}
	return &ev, nil
}

// UnmarshalJSON decodes a bundle without multiplying its size: each value
// is kept as a string or as raw JSON, never as a tree of Go values (a
// frame of "[{},{},...]" decoded into map[string]any costs many times its
// bytes). It refuses more than MaxBundleKeys keys. Once data is known
// to be valid JSON (json.Valid allocates nothing), the scan below only has
// to find where each value ends.
func (b *Bundle) UnmarshalJSON(data []byte) error {
	data = bytes.Trim(data, " \t\r\n") // JSON white space only
	if string(data) == "null" {
		*b = nil
		return nil
	}
	if len(data) < 2 || data[0] != '{' || !json.Valid(data) {
		return errors.New("a bundle must be a JSON object")
	}
	m := Bundle{}
	for i, entries := skipSpace(data, 1), 0; data[i] != '}'; entries++ {
		if entries == MaxBundleKeys {
			return errTooManyKeys
		}
		end := valueEnd(data, i)
		key, err := decodeString(data[i:end])
		if err != nil {
			return fmt.Errorf("bundle key: %w", err)
		}
		i = skipSpace(data, end)
		if data[i] != ':' {
			return errors.New("bundle: expected ':'")
		}
		i = skipSpace(data, i+1)
		end = valueEnd(data, i)
		val := data[i:end]
		if val[0] == '"' {
			s, err := decodeString(val)
			if err != nil {
				return fmt.Errorf("bundle value: %w", err)
			}
			m[key] = s
		} else {
			m[key] = json.RawMessage(bytes.Clone(val))
		}
		i = skipSpace(data, end)
		if data[i] == ',' {
			i = skipSpace(data, i+1)
		}
	}
	*b = m
	return nil
}

// errTooManyKeys refuses a bundle of more than MaxBundleKeys entries
// (duplicates included: a real bundle has none).
var errTooManyKeys = fmt.Errorf("a bundle has more than %d entries", MaxBundleKeys)

// decodeString decodes the JSON string raw (quotes included) with a
// single copy when it has no escapes, as text and base64 mostly have not.
func decodeString(raw []byte) (string, error) {
	if inner := raw[1 : len(raw)-1]; bytes.IndexByte(inner, '\\') < 0 && utf8.Valid(inner) {
		return string(inner), nil
	}
	var s string
	err := json.Unmarshal(raw, &s)
	return s, err
}

func skipSpace(data []byte, i int) int {
	for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r') {
		i++
	}
	if i == len(data) {
		return i - 1 // the closing brace of valid input; never past it
	}
	return i
}

// valueEnd returns the index just past the JSON value starting at data[i]
// (valid JSON: a string, an object or array, or a literal).
func valueEnd(data []byte, i int) int {
	switch data[i] {
	case '"':
		for j := i + 1; j < len(data); j++ {
			switch data[j] {
			case '\\':
				j++
			case '"':
				return j + 1
			}
		}
	case '{', '[':
		depth := 0
		for j := i; j < len(data); j++ {
			switch data[j] {
			case '"':
				j = valueEnd(data, j) - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return j + 1
				}
			}
		}
	default:
		for j := i; j < len(data); j++ {
			switch data[j] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return j
			}
		}
	}
	return len(data)
}
