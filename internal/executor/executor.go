// Package executor runs code in sandboxes: it owns the pools of warm
// children, sessions, limits and the files going in and out. It is the only
// user of package sandbox.
//
// A user program that fails (exception, timeout, memory limit, output limit)
// is a Result with a Status, never a Go error; an error means the service
// itself failed or the request was invalid (see InputError).
package executor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"path"
	"strings"
	"time"
	"unicode/utf8"

	"codeexec/internal/egress"
	"codeexec/internal/python"
)

// Status is how an execution ended.
type Status string

// The statuses of docs/openapi.yaml.
const (
	StatusOK          Status = "ok"
	StatusError       Status = "error"        // the code raised an exception
	StatusTimeout     Status = "timeout"      // wall-time limit
	StatusMemoryLimit Status = "memory_limit" // the memory cgroup's OOM killer fired
	StatusOutputLimit Status = "output_limit" // stdout or stderr over its byte limit
	StatusKilled      Status = "killed"       // died by a signal (e.g. a forbidden system call) or cancelled
)

// Limits are the resource limits of one execution. In a Request a zero field
// means the configured default.
type Limits struct {
	// Timeout is the wall-time limit.
	Timeout time.Duration
	// MemoryBytes caps the sandbox's memory (resident plus swap, plus its
	// tmpfs pages) through its cgroup.
	MemoryBytes int64
	// OutputBytes caps stdout and stderr, each.
	OutputBytes int64
	// FileBytes caps the size of any one file the code writes (RLIMIT_FSIZE).
	FileBytes int64
	// Procs caps processes plus threads (pids cgroup).
	Procs int64
	// CPUMillis is the CPU bandwidth in thousandths of a core.
	CPUMillis int64
}

// DefaultLimits are the defaults of the issue that introduced them: 30 s,
// 512 MiB, 1 MiB of each output stream, 64 processes, one core.
var DefaultLimits = Limits{
	Timeout:     30 * time.Second,
	MemoryBytes: 512 << 20,
	OutputBytes: 1 << 20,
	FileBytes:   100 << 20,
	Procs:       64,
	CPUMillis:   1000,
}

// MaxLimits are the default maxima a request may ask for.
var MaxLimits = Limits{
	Timeout:     10 * time.Minute,
	MemoryBytes: 4 << 30,
	OutputBytes: 16 << 20,
	FileBytes:   1 << 30,
	Procs:       512,
	CPUMillis:   2000,
}

// InputFile is a file placed in /mnt/data before the code runs. Its
// content is streamed into the sandbox, never held whole by the executor:
// a stored file goes from its store to the sandbox.
type InputFile struct {
	// Path is relative to /mnt/data; see CheckPath.
	Path string
	// Size is the content's length in bytes.
	Size int64
	// Open opens the content, which must hold at least Size bytes (only
	// Size are read). It is called once, when the file is placed, before
	// anything of the request's files is sent.
	Open func() (io.ReadCloser, error)
}

// DataFile is the InputFile whose content is data.
func DataFile(path string, data []byte) InputFile {
	return InputFile{Path: path, Size: int64(len(data)), Open: func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}}
}

// File describes a file the code created or changed in /mnt/data.
type File struct {
	ID       string `json:"id,omitempty"` // set when a FileSink stored it
	Path     string `json:"path"`
	Bytes    int64  `json:"bytes"`
	MIMEType string `json:"mime_type"`
	// Error says why the FileSink did not store the file (ID is then
	// empty): its error's text.
	Error string `json:"error,omitempty"`
}

// FileSink stores files that an execution produced. Put reads exactly size
// bytes from r and returns an id the file can be fetched by. The text of
// its error is shown to the user (File.Error): it must say what the user
// can do, and hold nothing internal.
type FileSink interface {
	Put(ctx context.Context, path string, size int64, r io.Reader) (id string, err error)
}

// Event is a piece of output streamed while code runs.
type Event struct {
	// Kind is "stdout", "stderr" or "display".
	Kind string
	// Text is the bytes written, for stdout and stderr.
	Text []byte
	// Bundle is the MIME bundle of a display.
	Bundle python.Bundle
}

// The languages of Request.Language.
const (
	LanguagePython = "python"
	LanguageBash   = "bash"
)

// CheckLanguage validates a request's language: empty (Python), "python"
// or "bash".
func CheckLanguage(lang string) error {
	switch lang {
	case "", LanguagePython, LanguageBash:
		return nil
	}
	return &InputError{"language", fmt.Sprintf("language %q is not supported: use %q or %q", lang, LanguagePython, LanguageBash)}
}

// Request is one execution.
type Request struct {
	Code string
	// Language is LanguagePython (the default when empty) or
	// LanguageBash: a shell script run by /bin/bash in the same sandbox,
	// with the same limits and files; Result.ExitCode is its exit status.
	Language string
	Limits   Limits
	Files    []InputFile
	// OnEvent, when set, is called from the executing goroutine for each
	// piece of output as it arrives. It must not block for long.
	OnEvent func(Event)
	// Sink, when set, receives the created and changed files; otherwise
	// Result.Files only lists them.
	Sink FileSink
	// Network, when set, lets the code reach the web through a filtering
	// proxy with this policy (HTTP_PROXY and HTTPS_PROXY point at it);
	// nil means no network at all.
	Network *egress.Policy
}

// Result is the outcome of an execution, ExecutionResult of docs/openapi.yaml.
type Result struct {
	ID        string          `json:"id"`
	Status    Status          `json:"status"`
	Stdout    string          `json:"stdout"`
	Stderr    string          `json:"stderr"`
	Truncated Truncated       `json:"truncated"`
	Result    python.Bundle   `json:"result,omitempty"`
	Displays  []python.Bundle `json:"displays"`
	Error     *python.Error   `json:"error,omitempty"`
	// ExitCode is the exit status of a bash execution that finished (128
	// plus the signal's number when a signal ended it); a non-zero one
	// makes the status error. Absent for Python.
	ExitCode *int   `json:"exit_code,omitempty"`
	Files    []File `json:"files"`
	// DurationMS is the wall time of the run, from handing the code to the
	// sandbox to its last output.
	DurationMS float64 `json:"duration_ms"`
	// Network lists the connections the code asked the egress proxy
	// for, allowed or denied; absent when the execution had no network.
	Network []egress.Access `json:"network,omitempty"`
	// SessionEnded is set when the execution ended its session's process
	// (a limit that could not be met by interrupting the code).
	SessionEnded bool `json:"session_ended,omitempty"`
}

// Truncated says which output streams were cut at the output limit.
type Truncated struct {
	Stdout bool `json:"stdout"`
	Stderr bool `json:"stderr"`
}

// InputError is an invalid request: the message is fit for the client and
// Param names the offending field.
type InputError struct {
	Param string
	Msg   string
}

func (e *InputError) Error() string { return e.Msg }

// Errors of the executor.
var (
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("executor closed")
	// ErrSessionEnded is returned by a session that has ended.
	ErrSessionEnded = errors.New("session ended")
	// ErrProcessEnded is wrapped in the ErrSessionEnded of a session
	// whose process ended or was killed.
	ErrProcessEnded = errors.New("the session's process ended")
	// ErrUnavailable is returned when no sandbox can be had (the pool is
	// broken); it is a service failure, not the user's.
	ErrUnavailable = errors.New("no sandbox available")
	// ErrCapacity is returned when the service runs as many sandboxes as
	// it can hold: it refuses a new one rather than risk the ones it has.
	// It is temporary; retrying later may succeed.
	ErrCapacity = errors.New("the service is at its sandbox capacity")
)

// MaxCodeBytes is the default largest program accepted.
const MaxCodeBytes = 1 << 20

// CheckCode validates program text: non-empty, valid UTF-8, no NUL bytes,
// at most max bytes.
func CheckCode(code string, max int) error {
	switch {
	case strings.TrimSpace(code) == "":
		return &InputError{"code", "code is empty"}
	case len(code) > max:
		return &InputError{"code", fmt.Sprintf("code is %d bytes, over the limit of %d", len(code), max)}
	case !utf8.ValidString(code):
		return &InputError{"code", "code is not valid UTF-8"}
	case strings.ContainsRune(code, 0):
		return &InputError{"code", "code contains a NUL byte"}
	}
	return nil
}

// CheckPath validates a path relative to /mnt/data: not empty, not
// absolute, no "..", ".", empty or over-long elements, no NUL, at most 1024
// bytes, valid UTF-8.
func CheckPath(p string) error {
	bad := func(why string) error { return &InputError{"path", fmt.Sprintf("invalid file path %q: %s", p, why)} }
	switch {
	case p == "":
		return bad("empty")
	case len(p) > 1024:
		return bad("longer than 1024 bytes")
	case !utf8.ValidString(p):
		return bad("not valid UTF-8")
	case strings.ContainsRune(p, 0):
		return bad("contains a NUL byte")
	case strings.HasPrefix(p, "/"):
		return bad("absolute; give it relative to /mnt/data")
	}
	for _, el := range strings.Split(p, "/") {
		switch {
		case el == "" || el == ".":
			return bad("empty or '.' element")
		case el == "..":
			return bad("contains '..'")
		case len(el) > 255:
			return bad("an element is longer than 255 bytes")
		}
	}
	return nil
}

// resolve fills zero fields of l from def and checks every field against
// max; which names the set of limits for messages.
func (l Limits) resolve(def, max Limits) (Limits, error) {
	type field struct {
		name      string
		v         *int64
		def, max  int64
		formatMax string
	}
	t, dt, mt := int64(l.Timeout), int64(def.Timeout), int64(max.Timeout)
	fields := []field{
		{"timeout", &t, dt, mt, max.Timeout.String()},
		{"memory_limit_mb", &l.MemoryBytes, def.MemoryBytes, max.MemoryBytes, fmt.Sprintf("%d MiB", max.MemoryBytes>>20)},
		{"output_limit_bytes", &l.OutputBytes, def.OutputBytes, max.OutputBytes, fmt.Sprint(max.OutputBytes)},
		{"file_limit_bytes", &l.FileBytes, def.FileBytes, max.FileBytes, fmt.Sprint(max.FileBytes)},
		{"max_processes", &l.Procs, def.Procs, max.Procs, fmt.Sprint(max.Procs)},
		{"cpu_millis", &l.CPUMillis, def.CPUMillis, max.CPUMillis, fmt.Sprint(max.CPUMillis)},
	}
	for _, f := range fields {
		switch {
		case *f.v < 0:
			return l, &InputError{f.name, fmt.Sprintf("%s must be positive", f.name)}
		case *f.v == 0:
			*f.v = f.def
		case *f.v > f.max:
			return l, &InputError{f.name, fmt.Sprintf("%s is over the server's maximum of %s", f.name, f.formatMax)}
		}
	}
	l.Timeout = time.Duration(t)
	if l.MemoryBytes < 16<<20 {
		return l, &InputError{"memory_limit_mb", "memory_limit_mb must be at least 16"}
	}
	if l.Procs < 4 {
		return l, &InputError{"max_processes", "max_processes must be at least 4"}
	}
	return l, nil
}

// MIMEType is the media type of a file named p, from its extension
// (mime.TypeByExtension); application/octet-stream when it has none known.
// Every file the service stores or serves is typed by it.
func MIMEType(p string) string {
	if t := mime.TypeByExtension(path.Ext(p)); t != "" {
		return t
	}
	return "application/octet-stream"
}
