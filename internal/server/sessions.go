//go:build linux

package server

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
	"time"

	"codeexec/internal/executor"
	"codeexec/internal/ids"
	"codeexec/internal/python"
	"codeexec/internal/store"
)

// liveSession is a session whose process runs in this server.
type liveSession struct {
	rec      store.Session
	sess     *executor.Session
	memoryMB int64         // the session's default memory limit (0: the server's)
	idle     time.Duration // it ends after this long without an execution
	stop     chan struct{} // closed by endSession
	slot     func()        // gives back its place in the owner's session limit
	// container is set when the session is a container (containers.go).
	container *containerState
}

// reserveSession takes one of owner's live-session places (see
// Config.KeySessions) before a session's process is made, so concurrent
// creations cannot pass the limit; sessions a chat request makes for
// itself take one too. The returned func gives it back; calling it again
// does nothing.
func (s *Server) reserveSession(owner string) (func(), *apiError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sessionsOf[owner] >= s.cfg.KeySessions {
		s.metrics.rejected.WithLabelValues("session_limit").Inc()
		return nil, &apiError{Status: http.StatusTooManyRequests, Type: "rate_limit_error", Code: "session_limit",
			Message: "this API key has reached its limit of live sessions; delete one first"}
	}
	s.sessionsOf[owner]++
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			if s.sessionsOf[owner]--; s.sessionsOf[owner] <= 0 {
				delete(s.sessionsOf, owner)
			}
			s.mu.Unlock()
		})
	}, nil
}

type sessionJSON struct {
	ID        string  `json:"id"`
	Object    string  `json:"object"`
	Status    string  `json:"status"` // active or expired
	CreatedAt int64   `json:"created_at"`
	ExpiresAt int64   `json:"expires_at"`
	EndedAt   *int64  `json:"ended_at,omitempty"`
	EndReason string  `json:"end_reason,omitempty"`
	IdleSecs  float64 `json:"idle_timeout"`
}

// sessionView is the session rec: live when ls (its live session) is
// set, with its own idle timeout; an ended one shows the server's.
func (s *Server) sessionView(rec store.Session, ls *liveSession) sessionJSON {
	v := sessionJSON{ID: rec.ID, Object: "session", Status: "active", CreatedAt: rec.CreatedAt.Unix(),
		ExpiresAt: rec.ExpiresAt.Unix(), IdleSecs: s.cfg.SessionIdle.Seconds()}
	if ls != nil && ls.idle > 0 {
		v.IdleSecs = ls.idle.Seconds()
	}
	if ls == nil {
		v.Status = "expired"
		if !rec.EndedAt.IsZero() {
			t := rec.EndedAt.Unix()
			v.EndedAt = &t
		}
		v.EndReason = rec.EndReason
	}
	return v
}

func sessionExpired() *apiError {
	return &apiError{Status: http.StatusGone, Type: "invalid_request_error", Code: "session_expired",
		Message: "the session has ended (idle timeout, lifetime, deletion or a server restart) and its variables are gone; its files stay downloadable until they expire; create a new session"}
}

type createSessionRequest struct {
	IdleTimeout   *float64 `json:"idle_timeout"`
	MemoryLimitMB *int64   `json:"memory_limit_mb"`
}

func (s *Server) handleCreateSession(w http.ResponseWriter, r *http.Request, owner string) *apiError {
	var body createSessionRequest
	if r.ContentLength != 0 {
		if e := s.decode(r, owner, &body); e != nil {
			return e
		}
	}
	o := sessionOptions{prefix: "sess_", idle: s.cfg.SessionIdle}
	if body.IdleTimeout != nil {
		if *body.IdleTimeout <= 0 || *body.IdleTimeout > s.cfg.SessionMaxLifetime.Seconds() {
			return invalid("idle_timeout", "idle_timeout must be between 0 and %g seconds", s.cfg.SessionMaxLifetime.Seconds())
		}
		o.idle = time.Duration(*body.IdleTimeout * float64(time.Second))
	}
	if m := body.MemoryLimitMB; m != nil && (*m < 16 || *m > s.cfg.MaxMemoryMB) {
		return invalid("memory_limit_mb", "memory_limit_mb must be between 16 and %d", s.cfg.MaxMemoryMB)
	}
	if body.MemoryLimitMB != nil {
		o.memoryMB = *body.MemoryLimitMB
	}
	ls, e := s.startSession(r.Context(), owner, o)
	if e != nil {
		return e
	}
	if ls == nil {
		return nil // the client left
	}
	writeJSON(w, http.StatusOK, s.sessionView(ls.rec, ls))
	return nil
}

// sessionOptions are what startSession makes a session with.
type sessionOptions struct {
	prefix   string        // of its id: "sess_", or "cntr_" for a container
	idle     time.Duration // it ends after this long without an execution
	memoryMB int64         // its executions' default memory limit (0: the server's)
	// container makes it a container, recorded as one (newContainer).
	container *containerState
}

// startSession makes a live session of owner: a place under its session
// limit, then a sandbox (admitted like an execution, so a burst of
// creations cannot bypass the queue), then its record (a container's
// with it), then its reaper. Every session and container is made here.
// It returns nil, nil when the client left.
func (s *Server) startSession(ctx context.Context, owner string, o sessionOptions) (*liveSession, *apiError) {
	slot, e := s.reserveSession(owner)
	if e != nil {
		return nil, e
	}
	kept := false
	defer func() {
		if !kept {
			slot()
		}
	}()
	admitted, e := s.admit(owner)
	if e != nil {
		return nil, e
	}
	sess, err := s.exec.NewSession(ctx, o.idle)
	admitted()
	if err != nil {
		if isGone(ctx, err) {
			return nil, nil
		}
		if errors.Is(err, executor.ErrCapacity) {
			s.metrics.rejected.WithLabelValues("capacity").Inc()
			return nil, atCapacity()
		}
		return nil, s.internalCtx(ctx, "create session", err)
	}
	now := time.Now()
	rec := store.Session{ID: ids.New(o.prefix), Owner: owner, CreatedAt: now, ExpiresAt: now.Add(s.cfg.SessionMaxLifetime), Node: s.nodeID()}
	ls := &liveSession{rec: rec, sess: sess, stop: make(chan struct{}), slot: slot, memoryMB: o.memoryMB, idle: o.idle, container: o.container}
	if ls.container != nil {
		ls.container.lastActive.Store(now.UnixMicro())
	}
	if err := s.putRecord(ctx, ls); err != nil {
		sess.Close()
		return nil, s.internalCtx(ctx, "store session", err)
	}
	kept = true
	s.mu.Lock()
	s.sessions[rec.ID] = ls
	s.mu.Unlock()
	s.metrics.sessions.Inc()
	s.wg.Add(1)
	go s.reap(ls, rec.ExpiresAt)
	return ls, nil
}

// reap ends ls when its process ends (idle timeout, death) or its
// lifetime is over at end. (endSession rewrites ls.rec, so the lifetime is
// passed in rather than read here.)
func (s *Server) reap(ls *liveSession, end time.Time) {
	defer s.wg.Done()
	life := time.NewTimer(time.Until(end))
	defer life.Stop()
	select {
	case <-ls.sess.Done():
		reason := "idle_timeout"
		switch err := ls.sess.Err(); {
		case errors.Is(err, python.ErrProtocol):
			reason = "protocol_violation"
		case errors.Is(err, executor.ErrProcessEnded):
			reason = "killed"
		}
		s.endSession(ls, reason)
	case <-life.C:
		s.endSession(ls, "max_lifetime")
	case <-ls.stop:
	}
}

// endSession ends a live session once and records why.
func (s *Server) endSession(ls *liveSession, reason string) {
	s.mu.Lock()
	if s.sessions[ls.rec.ID] != ls {
		s.mu.Unlock()
		return
	}
	delete(s.sessions, ls.rec.ID)
	s.mu.Unlock()
	close(ls.stop)
	ls.sess.Close()
	if ls.slot != nil {
		ls.slot()
	}
	s.metrics.sessions.Dec()
	// The record and the session's files now live as long as files do.
	ls.rec.EndedAt, ls.rec.EndReason = time.Now(), reason
	ls.rec.ExpiresAt = s.endedExpiry(ls.rec.EndedAt)
	if err := s.putRecord(context.Background(), ls); err != nil {
		s.log.Error("record session end", "session_id", ls.rec.ID, "err", err)
	}
}

// errSessionEnded is findSession's answer for a session of the owner
// that has ended: its record and files remain.
var errSessionEnded = errors.New("the session has ended")

// findSession finds owner's live session id. An ended one is
// errSessionEnded; an unknown one (or another owner's) is
// store.ErrNotFound.
func (s *Server) findSession(ctx context.Context, owner, id string) (*liveSession, error) {
	s.mu.Lock()
	ls := s.sessions[id]
	s.mu.Unlock()
	if ls != nil && ls.rec.Owner == owner {
		return ls, nil
	}
	if _, err := s.store.Session(ctx, owner, id); err == nil {
		return nil, errSessionEnded
	}
	return nil, store.ErrNotFound
}

// liveSession is findSession for the calls that need a live session: an
// ended one is 410, an unknown one 404, one on another node the
// apiError that forwards the request there.
func (s *Server) liveSession(ctx context.Context, owner, id string) (*liveSession, *apiError) {
	if e := s.elsewhere(ctx, owner, id); e != nil {
		return nil, e
	}
	ls, err := s.findSession(ctx, owner, id)
	switch {
	case errors.Is(err, errSessionEnded):
		return nil, sessionExpired()
	case err != nil:
		return nil, notFound("session", id)
	}
	return ls, nil
}

func (s *Server) handleGetSession(w http.ResponseWriter, r *http.Request, owner string) *apiError {
	id := r.PathValue("id")
	s.mu.Lock()
	ls := s.sessions[id]
	s.mu.Unlock()
	if ls != nil && ls.rec.Owner == owner {
		writeJSON(w, http.StatusOK, s.sessionView(ls.rec, ls))
		return nil
	}
	rec, err := s.store.Session(r.Context(), owner, id)
	if err != nil {
		return notFound("session", id)
	}
	writeJSON(w, http.StatusOK, s.sessionView(rec, nil))
	return nil
}

func (s *Server) handleDeleteSession(w http.ResponseWriter, r *http.Request, owner string) *apiError {
	id := r.PathValue("id")
	ls, err := s.findSession(r.Context(), owner, id)
	if err != nil && !errors.Is(err, errSessionEnded) {
		return notFound("session", id)
	}
	if ls != nil {
		s.endSession(ls, "deleted")
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": id, "object": "session.deleted", "deleted": true})
	return nil
}

func (s *Server) handleSessionExecute(w http.ResponseWriter, r *http.Request, owner string) *apiError {
	var body execRequest
	if e := s.decode(r, owner, &body); e != nil {
		return e
	}
	if body.SessionID != nil && *body.SessionID != r.PathValue("id") {
		return invalid("session_id", "session_id differs from the session in the URL")
	}
	ls, e := s.liveSession(r.Context(), owner, r.PathValue("id"))
	if e != nil {
		return e
	}
	return s.runInSession(w, r, owner, ls, &body)
}

func (s *Server) runInSession(w http.ResponseWriter, r *http.Request, owner string, ls *liveSession, body *execRequest) *apiError {
	if body.MemoryLimitMB == nil && ls.memoryMB > 0 {
		body.MemoryLimitMB = &ls.memoryMB
	}
	release, e := s.admit(owner)
	if e != nil {
		return e
	}
	defer release()
	req, e := s.toRequest(r.Context(), body, owner)
	if e != nil {
		return e
	}
	// Files placed in the session are kept in the store too, so they
	// outlive its process like the files its code writes.
	for _, f := range req.Files {
		s.keepSessionFile(r.Context(), owner, ls.rec.ID, f)
	}
	req.Sink = storeSink{s: s, owner: owner, sessionID: ls.rec.ID}
	e = s.run(w, r, &req, body.Stream, release, func(ctx context.Context) (*executor.Result, error) {
		return s.execInSession(ctx, ls, req)
	})
	return e
}

type fileJSON struct {
	ID        string `json:"id,omitempty"`
	Object    string `json:"object"`
	Path      string `json:"path"`
	Bytes     int64  `json:"bytes"`
	MIMEType  string `json:"mime_type"`
	CreatedAt int64  `json:"created_at,omitempty"`
}

func (s *Server) handleSessionFiles(w http.ResponseWriter, r *http.Request, owner string) *apiError {
	id := r.PathValue("id")
	ls, err := s.findSession(r.Context(), owner, id)
	out := []fileJSON{}
	switch {
	case ls != nil:
		files, err := ls.sess.Files()
		if err != nil && !errors.Is(err, executor.ErrSessionEnded) {
			return s.internal(r, "list session files", err)
		}
		for _, f := range files {
			out = append(out, fileJSON{Object: "session.file", Path: f.Path, Bytes: f.Bytes, MIMEType: f.MIMEType})
		}
	case errors.Is(err, errSessionEnded):
		files, err := s.store.ListFiles(r.Context(), owner, id)
		if err != nil {
			return s.internal(r, "list session files", err)
		}
		seen := map[string]bool{}
		for _, f := range files { // newest first: keep each path's newest
			if !seen[f.Filename] {
				seen[f.Filename] = true
				out = append(out, fileJSON{ID: f.ID, Object: "session.file", Path: f.Filename, Bytes: f.Bytes, MIMEType: f.MIMEType, CreatedAt: f.CreatedAt.Unix()})
			}
		}
	default:
		return notFound("session", id)
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": out})
	return nil
}

func (s *Server) handleSessionDownload(w http.ResponseWriter, r *http.Request, owner string) *apiError {
	id, p := r.PathValue("id"), r.PathValue("path")
	if err := executor.CheckPath(p); err != nil {
		return inputError(err)
	}
	ls, err := s.findSession(r.Context(), owner, id)
	if ls != nil {
		f, size, err := ls.sess.Open(p)
		if err != nil {
			return &apiError{Status: http.StatusNotFound, Type: "invalid_request_error", Code: "not_found",
				Message: "no regular file " + p + " in the session's /mnt/data"}
		}
		defer f.Close()
		setDownloadHeaders(w, p, executor.MIMEType(p))
		http.ServeContent(w, r, "", time.Time{}, io.NewSectionReader(f, 0, size))
		s.metrics.fileBytes.WithLabelValues("download").Add(float64(size))
		return nil
	}
	if !errors.Is(err, errSessionEnded) {
		return notFound("session", id)
	}
	meta, err := s.store.SessionFile(r.Context(), owner, id, p)
	if err != nil {
		return &apiError{Status: http.StatusNotFound, Type: "invalid_request_error", Code: "not_found",
			Message: "the ended session kept no file " + p}
	}
	return s.serveStored(w, r, owner, meta.ID)
}

func (s *Server) handleSessionUpload(w http.ResponseWriter, r *http.Request, owner string) *apiError {
	id, p := r.PathValue("id"), r.PathValue("path")
	if err := executor.CheckPath(p); err != nil {
		return inputError(err)
	}
	ls, e := s.liveSession(r.Context(), owner, id)
	if e != nil {
		return e
	}
	meta, e := s.uploadToSession(r.Context(), owner, ls, p, r.Body)
	if e != nil {
		return answered(e)
	}
	writeJSON(w, http.StatusOK, fileJSON{Object: "session.file", Path: p, Bytes: meta.Bytes, MIMEType: meta.MIMEType})
	return nil
}

// errGone is what uploadToSession returns when the client left before it
// was done; handlers answer nothing for it (see answered).
var errGone = &apiError{Status: 499, Type: "invalid_request_error", Message: "the client closed the request"}

// answered is what a handler returns for e: nothing when the client left.
func answered(e *apiError) *apiError {
	if e == errGone {
		return nil
	}
	return e
}

// uploadToSession writes the content read from body at path p of owner's
// live session ls (a container's too). It is stored first, streamed from
// body, and placed in the session from the store: the kept copy that
// outlives the session's process is the one placed, and the server never
// holds it in memory. The stored File is returned.
func (s *Server) uploadToSession(ctx context.Context, owner string, ls *liveSession, p string, body io.Reader) (store.File, *apiError) {
	meta := s.sessionFileRecord(owner, ls.rec.ID, p)
	meta, err := s.putFile(ctx, meta, body)
	if err != nil {
		var mbe *http.MaxBytesError
		switch {
		case errors.Is(err, store.ErrQuota):
			return meta, s.quotaFull()
		case errors.Is(err, store.ErrTooLarge) || errors.As(err, &mbe):
			return meta, &apiError{Status: http.StatusRequestEntityTooLarge, Type: "invalid_request_error", Code: "file_too_large",
				Message: "the file is over the upload limit"}
		case isGone(ctx, err):
			return meta, errGone
		case errors.Is(err, store.ErrNotFound): // the session's record went meanwhile
			return meta, sessionExpired()
		}
		return meta, s.internalCtx(ctx, "store session upload", err)
	}
	if err := ls.sess.WriteFile(ctx, s.storedFile(ctx, p, meta)); err != nil {
		s.store.DeleteFile(context.WithoutCancel(ctx), owner, meta.ID)
		if ae := inputError(err); ae != nil {
			return meta, ae
		}
		if errors.Is(err, executor.ErrSessionEnded) {
			return meta, sessionExpired()
		}
		if isGone(ctx, err) {
			return meta, errGone
		}
		return meta, s.internalCtx(ctx, "session upload", err)
	}
	s.metrics.fileBytes.WithLabelValues("upload").Add(float64(meta.Bytes))
	return meta, nil
}

// sessionFileRecord is the metadata of a file placed at p in owner's
// session sessionID.
func (s *Server) sessionFileRecord(owner, sessionID, p string) store.File {
	f := store.File{Owner: owner, Filename: p, Purpose: "session_input", SessionID: sessionID, MIMEType: executor.MIMEType(p)}
	if s.cfg.FileTTL > 0 {
		f.ExpiresAt = time.Now().Add(s.cfg.FileTTL)
	}
	return f
}

// keepSessionFile stores a copy of an input file placed in a session,
// streamed from its content; a failure is logged, the session itself has
// the file.
func (s *Server) keepSessionFile(ctx context.Context, owner, sessionID string, in executor.InputFile) {
	rc, err := in.Open()
	if err == nil {
		_, err = s.putFile(ctx, s.sessionFileRecord(owner, sessionID, in.Path), io.LimitReader(rc, in.Size))
		rc.Close()
	}
	if err != nil {
		s.log.Warn("keep session file", "session_id", sessionID, "err", err)
	}
}
