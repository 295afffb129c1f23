// Package python holds the in-sandbox Python side of codeexec (the zygote
// and the cell runner, embedded .py files) and the wire protocol Go speaks
// with them.
//
// Everything that arrives from a child is untrusted: user code runs in the
// same process as the runner and can forge any frame. Decoding is strict and
// bounded; a malformed frame is a protocol violation that ends the child.
package python

import (
	"embed"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
	// Env is set in os.environ before the code runs (the egress proxy's
	// variables); keys not given are left as they are.
	Env map[string]string `json:"env,omitempty"`
}

// Bundle is a MIME bundle: MIME type to content (base64 for binary types,
// any JSON value for application/json).
type Bundle map[string]any

// Error describes an exception raised by user code.
type Error struct {
	Name      string `json:"name"`
	Value     string `json:"value"`
	Traceback string `json:"traceback,omitempty"`
}

// Event is one frame from a child: "ready", "warmed", "warmed_data",
// "display" or "done".
type Event struct {
	Type   string `json:"type"`
	Bundle Bundle `json:"bundle,omitempty"` // display
	Status string `json:"status,omitempty"` // done: ok or error
	Result Bundle `json:"result,omitempty"` // done
	Error  *Error `json:"error,omitempty"`  // done
	// Pages, on the "warmed" frame of a child asked to probe, are the
	// ranges of memory it wrote while it set itself up and warmed up.
	Pages []PageRange `json:"pages,omitempty"`
}

// MaxFrame bounds one frame from a child (a display with a large PNG fits).
const MaxFrame = 64 << 20

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

// ReadEvent reads and validates one frame from a child. It returns io.EOF
// when the child closed its socket cleanly between frames.
func ReadEvent(r io.Reader) (*Event, error) {
	var head [4]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(head[:])
	if n > MaxFrame {
		return nil, fmt.Errorf("%w: frame of %d bytes", ErrProtocol, n)
	}
	data := make([]byte, n)
	if _, err := io.ReadFull(r, data); err != nil {
		return nil, fmt.Errorf("%w: short frame: %v", ErrProtocol, err)
	}
	return DecodeEvent(data)
}

// DecodeEvent parses and validates one frame's JSON.
func DecodeEvent(data []byte) (*Event, error) {
	var ev Event
	if err := json.Unmarshal(data, &ev); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	switch ev.Type {
	case "ready", "warmed", "warmed_data", "display":
	case "done":
		if ev.Status != "ok" && ev.Status != "error" {
			return nil, fmt.Errorf("%w: done with status %q", ErrProtocol, ev.Status)
		}
		if (ev.Status == "error") != (ev.Error != nil) {
			return nil, fmt.Errorf("%w: status %q with error %v", ErrProtocol, ev.Status, ev.Error)
		}
	default:
		return nil, fmt.Errorf("%w: event type %q", ErrProtocol, ev.Type)
	}
	return &ev, nil
}
