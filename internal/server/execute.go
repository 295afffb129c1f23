//go:build linux

package server

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"codeexec/internal/executor"
	"codeexec/internal/store"
)

// execRequest is the body of POST /v1/execute and of a session's execute.
// Pointers tell an absent limit (the default) from a zero one (invalid).
type execRequest struct {
	Code          *string  `json:"code"`
	Language      string   `json:"language"`
	Timeout       *float64 `json:"timeout"`
	MemoryLimitMB *int64   `json:"memory_limit_mb"`
	// OutputLimitBytes is the limit of stdout and of stderr.
	OutputLimitBytes *int64      `json:"output_limit_bytes"`
	Files            []inputFile `json:"files"`
	SessionID        *string     `json:"session_id"`
	Stream           bool        `json:"stream"`
	Network          *struct {
		Allow []string `json:"allow"`
	} `json:"network"`
}

type inputFile struct {
	Path          string  `json:"path"`
	ContentBase64 *string `json:"content_base64"`
	FileID        string  `json:"file_id"`
}

// toRequest validates body and builds the executor request, fetching
// referenced files of owner from the store.
func (s *Server) toRequest(ctx context.Context, body *execRequest, owner string) (executor.Request, *apiError) {
	var req executor.Request
	if body.Code == nil {
		return req, invalid("code", "code is required")
	}
	req.Code = *body.Code
	if err := executor.CheckCode(req.Code, executor.MaxCodeBytes); err != nil {
		return req, inputError(err)
	}
	if err := executor.CheckLanguage(body.Language); err != nil {
		return req, inputError(err)
	}
	req.Language = body.Language
	if t := body.Timeout; t != nil {
		if *t <= 0 {
			return req, invalid("timeout", "timeout must be a positive number of seconds")
		}
		if d := time.Duration(*t * float64(time.Second)); d > s.cfg.MaxTimeout || *t > 1e6 {
			return req, invalid("timeout", "timeout is over the server's maximum of %g s", s.cfg.MaxTimeout.Seconds())
		} else {
			req.Limits.Timeout = d
		}
	}
	if m := body.MemoryLimitMB; m != nil {
		if *m <= 0 {
			return req, invalid("memory_limit_mb", "memory_limit_mb must be positive")
		}
		if *m > s.cfg.MaxMemoryMB {
			return req, invalid("memory_limit_mb", "memory_limit_mb is over the server's maximum of %d", s.cfg.MaxMemoryMB)
		}
		req.Limits.MemoryBytes = *m << 20
	}
	if o := body.OutputLimitBytes; o != nil {
		if *o <= 0 || *o > s.cfg.MaxOutputBytes {
			return req, invalid("output_limit_bytes", "output_limit_bytes must be between 1 and the server's maximum of %d", s.cfg.MaxOutputBytes)
		}
		req.Limits.OutputBytes = *o
	}
	if e := s.network(body, &req); e != nil {
		return req, e
	}
	files, e := s.inputFiles(ctx, owner, body.Files, func(i int) string { return fmt.Sprintf("files[%d]", i) })
	if e != nil {
		return req, e
	}
	req.Files = files
	return req, nil
}

// maxInputFiles is how many input files one request may name.
const maxInputFiles = 1000

// inputFiles checks the input files of a request of owner (execute, a
// session's execute, a chat's attachments) and makes them
// executor.InputFiles; param names the i-th in errors. It adds up their
// bytes from metadata before anything is read or decoded, and refuses
// more than a sandbox's work directory holds: a small body naming one
// large stored file many times must not make the server read it many
// times. A stored file is streamed from the store into the sandbox when
// it is placed, never held in memory.
func (s *Server) inputFiles(ctx context.Context, owner string, files []inputFile, param func(int) string) ([]executor.InputFile, *apiError) {
	if len(files) > maxInputFiles {
		return nil, invalid(param(0), "at most %d files per request", maxInputFiles)
	}
	max := s.exec.Config().WorkdirBytes
	var total int64
	metas := make([]store.File, len(files))
	for i, f := range files {
		switch {
		case f.ContentBase64 != nil && f.FileID != "":
			return nil, invalid(param(i), "%s: give content_base64 or file_id, not both", param(i))
		case f.ContentBase64 != nil:
			total += int64(base64.StdEncoding.DecodedLen(len(*f.ContentBase64)))
		case f.FileID != "":
			meta, err := s.store.File(ctx, owner, f.FileID)
			if err != nil {
				return nil, notFound("file", f.FileID)
			}
			metas[i] = meta
			total += meta.Bytes
		default:
			return nil, invalid(param(i), "%s needs content_base64 or file_id", param(i))
		}
		if total > max {
			return nil, invalid(param(i), "the input files add up to more than a sandbox's work directory holds (%d MiB)", max>>20)
		}
	}
	out := make([]executor.InputFile, 0, len(files))
	for i, f := range files {
		p := f.Path
		if p == "" && f.FileID != "" {
			p = metas[i].Filename
		}
		if err := executor.CheckPath(p); err != nil {
			return nil, invalid(param(i)+".path", "%s: %v", param(i), err)
		}
		if f.ContentBase64 == nil {
			out = append(out, s.storedFile(ctx, p, metas[i]))
			continue
		}
		data, err := base64.StdEncoding.DecodeString(*f.ContentBase64)
		if err != nil {
			return nil, invalid(param(i)+".content_base64", "%s.content_base64 is not valid base64", param(i))
		}
		out = append(out, executor.DataFile(p, data))
	}
	return out, nil
}

// storedFile is the InputFile at path p whose content is the stored file
// meta, read from the store as it is placed.
func (s *Server) storedFile(ctx context.Context, p string, meta store.File) executor.InputFile {
	return executor.InputFile{Path: p, Size: meta.Bytes, Open: func() (io.ReadCloser, error) {
		rc, _, err := s.store.OpenFile(ctx, meta.Owner, meta.ID)
		if errors.Is(err, store.ErrNotFound) {
			return nil, &executor.InputError{Param: "files", Msg: "file " + meta.ID + " was deleted before it could be placed"}
		}
		if err != nil {
			s.log.Error("open input file", "file_id", meta.ID, "err", err)
			return nil, fmt.Errorf("the store cannot read file %s", meta.ID)
		}
		return rc, nil
	}}
}

func inputError(err error) *apiError {
	var ie *executor.InputError
	if errors.As(err, &ie) {
		return invalid(ie.Param, "%s", ie.Msg)
	}
	return nil
}

// storeSink stores an execution's output files for their owner.
type storeSink struct {
	s         *Server
	owner     string
	sessionID string
}

func (k storeSink) Put(ctx context.Context, path string, size int64, r io.Reader) (string, error) {
	f := store.File{Owner: k.owner, Filename: path, Purpose: "execution_output", SessionID: k.sessionID,
		MIMEType: executor.MIMEType(path)}
	if k.s.cfg.FileTTL > 0 {
		f.ExpiresAt = time.Now().Add(k.s.cfg.FileTTL)
	}
	f, err := k.s.putFile(ctx, f, r)
	switch {
	case errors.Is(err, store.ErrQuota):
		return "", errors.New(k.s.quotaFull().Message)
	case errors.Is(err, store.ErrTooLarge):
		return "", fmt.Errorf("it is over the limit of %d MiB for a stored file", k.s.cfg.MaxUploadBytes>>20)
	case err != nil:
		k.s.log.Error("store output file", "err", err)
		return "", errors.New("the server could not store it")
	}
	k.s.metrics.fileBytes.WithLabelValues("generated").Add(float64(f.Bytes))
	return f.ID, nil
}

// putFile stores a file of f.Owner read from r, within the upload limit
// and the owner's storage quota (store.ErrTooLarge, store.ErrQuota).
func (s *Server) putFile(ctx context.Context, f store.File, r io.Reader) (store.File, error) {
	return s.store.PutFile(ctx, f, r, store.Limits{MaxBytes: s.cfg.MaxUploadBytes,
		OwnerBytes: s.cfg.KeyStorageMB << 20, OwnerFiles: s.cfg.KeyFiles})
}

// quotaFull answers a file that would take its key past its storage
// quota.
func (s *Server) quotaFull() *apiError {
	return &apiError{Status: http.StatusRequestEntityTooLarge, Type: "invalid_request_error", Code: "storage_quota",
		Message: fmt.Sprintf("this API key's stored files would exceed its quota of %d files and %d MiB; delete files (DELETE /v1/files/{id}) or wait for them to expire",
			s.cfg.KeyFiles, s.cfg.KeyStorageMB)}
}

func (s *Server) handleExecute(w http.ResponseWriter, r *http.Request, owner string) *apiError {
	var body execRequest
	if e := s.decode(r, owner, &body); e != nil {
		return e
	}
	if body.SessionID != nil {
		ls, e := s.liveSession(r.Context(), owner, *body.SessionID)
		if e != nil {
			return e
		}
		return s.runInSession(w, r, owner, ls, &body)
	}
	// Admitted before the request is built: what building costs (reading
	// metadata, decoding inline files) is only paid within the limits.
	release, e := s.admit(owner)
	if e != nil {
		return e
	}
	defer release()
	req, e := s.toRequest(r.Context(), &body, owner)
	if e != nil {
		return e
	}
	req.Sink = storeSink{s: s, owner: owner}
	return s.run(w, r, &req, body.Stream, release, func(ctx context.Context) (*executor.Result, error) {
		queued := time.Now()
		res, err := s.exec.Execute(ctx, req)
		if res != nil {
			s.metrics.queueWait.Observe(time.Since(queued).Seconds() - res.DurationMS/1000)
		}
		return res, err
	})
}

// admit enforces the bounded queue and the per-key concurrency; release
// must be called when the execution is over, and may be called again.
func (s *Server) admit(owner string) (release func(), e *apiError) {
	if n := s.inflight.Add(1); n > int64(s.cfg.PoolSize+s.cfg.QueueSize) {
		s.inflight.Add(-1)
		s.metrics.rejected.WithLabelValues("queue_full").Inc()
		return nil, &apiError{Status: http.StatusTooManyRequests, Type: "rate_limit_error", Code: "queue_full",
			Message: "all sandboxes are busy and the queue is full; retry after the time in Retry-After"}
	}
	s.mu.Lock()
	if s.perKey[owner] >= s.cfg.KeyConcurrency {
		s.mu.Unlock()
		s.inflight.Add(-1)
		s.metrics.rejected.WithLabelValues("key_concurrency").Inc()
		return nil, &apiError{Status: http.StatusTooManyRequests, Type: "rate_limit_error", Code: "concurrency_limit",
			Message: fmt.Sprintf("this API key already runs %d executions, its limit", s.cfg.KeyConcurrency)}
	}
	s.perKey[owner]++
	s.mu.Unlock()
	return sync.OnceFunc(func() {
		s.mu.Lock()
		if s.perKey[owner]--; s.perKey[owner] <= 0 {
			delete(s.perKey, owner)
		}
		s.mu.Unlock()
		s.inflight.Add(-1)
	}), nil
}

// streamQueue is how many events a streaming client may fall behind
// before it is dropped.
const streamQueue = 256

// errClientBehind is the cause of executions killed because their client
// did not read its stream.
var errClientBehind = errors.New("the client did not read its stream in time")

// run executes through do and writes the result as JSON or, when stream
// is set, as Server-Sent Events. Events go through a bounded queue to a
// writer of their own, each write with a deadline: a client that does not
// read can never block the execution, and one that falls behind is
// dropped and its execution killed. released is called once the
// execution is over, before the result is written: a client slow to read
// its result does not keep its admission.
func (s *Server) run(w http.ResponseWriter, r *http.Request, req *executor.Request, stream bool, released func(), do func(context.Context) (*executor.Result, error)) *apiError {
	ctx, cancel := context.WithCancelCause(r.Context())
	defer cancel(nil)
	defer context.AfterFunc(s.hardStop, func() { cancel(errShutdown) })()
	var sse *sseWriter
	drain := func() {} // waits until every queued event is written or dropped
	if stream {
		sse = newSSE(w, s.cfg.StreamWriteTimeout)
		events := make(chan executor.Event, streamQueue)
		written := make(chan struct{})
		go func() {
			defer close(written)
			for ev := range events {
				var err error
				switch ev.Kind {
				case "stdout", "stderr":
					err = sse.event(ev.Kind, map[string]string{"text": string(ev.Text)})
				case "display":
					err = sse.event("display", ev.Bundle)
				}
				if err != nil {
					cancel(errClientBehind)
				}
			}
		}()
		var once sync.Once
		drain = func() { once.Do(func() { close(events); <-written }) }
		defer drain()
		req.OnEvent = func(ev executor.Event) {
			select {
			case events <- ev:
			default:
				cancel(errClientBehind)
			}
		}
	}
	res, err := do(ctx)
	released()
	drain() // the last events follow every queued one
	if err != nil {
		if r.Context().Err() != nil {
			return nil // the client left; nothing to answer
		}
		if ctx.Err() != nil {
			// Stopped by us while it waited (for a sandbox, or its
			// session's turn): answered, never an empty 200.
			if errors.Is(context.Cause(ctx), errClientBehind) {
				return nil
			}
			return s.streamErr(sse, shuttingDown())
		}
		if e := inputError(err); e != nil {
			return s.streamErr(sse, e)
		}
		if errors.Is(err, executor.ErrSessionEnded) {
			return s.streamErr(sse, sessionExpired())
		}
		if errors.Is(err, executor.ErrCapacity) {
			s.metrics.rejected.WithLabelValues("capacity").Inc()
			return s.streamErr(sse, atCapacity())
		}
		if errors.Is(err, executor.ErrUnavailable) || errors.Is(err, executor.ErrClosed) {
			return s.streamErr(sse, &apiError{Status: http.StatusServiceUnavailable, Type: "server_error", Code: "unavailable",
				Message: "no sandbox is available; the service is starting, stopping or broken"})
		}
		return s.streamErr(sse, s.internal(r, "execute", err))
	}
	s.metrics.observe(res)
	if sse == nil {
		http.NewResponseController(w).SetWriteDeadline(time.Now().Add(s.cfg.StreamWriteTimeout))
		writeJSON(w, http.StatusOK, res)
		return nil
	}
	if res.Result != nil {
		sse.event("result", res.Result)
	}
	if res.Error != nil {
		sse.event("error", res.Error)
	}
	sse.event("done", res)
	return nil
}

func (s *Server) streamErr(sse *sseWriter, e *apiError) *apiError {
	if sse == nil || !sse.started {
		return e
	}
	sse.event("error", map[string]any{"error": e})
	return nil
}

// network sets req's egress policy: the server's, narrowed to the
// request's allow list when it gives one (an empty list: no network).
func (s *Server) network(body *execRequest, req *executor.Request) *apiError {
	if s.egress == nil {
		if body.Network != nil && len(body.Network.Allow) > 0 {
			return invalid("network.allow", "network access is not enabled on this server (the operator sets --egress-allow)")
		}
		return nil
	}
	p := *s.egress
	if body.Network != nil {
		if len(body.Network.Allow) == 0 {
			return nil
		}
		n, err := p.Narrow(body.Network.Allow)
		if err != nil {
			return invalid("network.allow", "%v", err)
		}
		p = n
	}
	req.Network = &p
	return nil
}
