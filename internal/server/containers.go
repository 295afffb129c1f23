//go:build linux

package server

// OpenAI's Containers API over sessions. A container is a session (its
// live process, in s.sessions like any other) whose id is "cntr_...",
// plus its record in the store (store.Container): a name, an idle expiry
// (expires_after minutes, anchored at last_active_at) and a memory limit.
// Its files are the session's stored files: what is uploaded to it
// (source "user") and what its code writes (source "assistant", stored by
// storeSink), all with the container's id as their session id, so they
// outlive its process and a restart like any stored file.
//
// For the Responses API (code_interpreter), the Go API is:
//
//   - s.newContainer(ctx, owner, containerOptions{...}) makes a container,
//     as POST /v1/containers does (nil, nil: the client left);
//   - s.containerSession(ctx, owner, id) finds a live one: an ended one is
//     OpenAI's 400 "Container is expired.", an unknown one 404;
//   - s.execInSession(ctx, ls, req) runs code in it (the container's
//     memory limit is the default, last_active_at moves, a process the
//     code killed ends it); output files land in the container when
//     req.Sink is storeSink{s, owner, ls.rec.ID}.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"codeexec/internal/executor"
	"codeexec/internal/store"
)

// defaultContainerIdle is OpenAI's default expiry: 20 minutes after
// last_active_at.
const defaultContainerIdle = 20 * time.Minute

// containerMemory is the memory limit, in MiB, of each of OpenAI's
// memory_limit values.
var containerMemory = map[string]int64{"1g": 1 << 10, "4g": 4 << 10, "16g": 16 << 10, "64g": 64 << 10}

// containerState is what a live container has beyond its session.
type containerState struct {
	name         string
	expiresAfter time.Duration
	memoryLimit  string
	lastActive   atomic.Int64 // Unix microseconds
}

// used records that code ran in ls now: a container's last_active_at,
// which, like the session's idle timer, moves with executions.
func (ls *liveSession) used() {
	if ls.container != nil {
		ls.container.lastActive.Store(time.Now().UnixMicro())
	}
}

// record is the store's record of ls.
func (ls *liveSession) record() store.Container {
	c := ls.container
	return store.Container{Session: ls.rec, Name: c.name, ExpiresAfter: c.expiresAfter, MemoryLimit: c.memoryLimit,
		LastActiveAt: time.UnixMicro(c.lastActive.Load())}
}

// liveRecord is record without the session fields endSession changes:
// what a view of a live container reads, safely beside endSession.
func (ls *liveSession) liveRecord() store.Container {
	c := ls.container
	return store.Container{Session: store.Session{ID: ls.rec.ID, Owner: ls.rec.Owner, CreatedAt: ls.rec.CreatedAt},
		Name: c.name, ExpiresAfter: c.expiresAfter, MemoryLimit: c.memoryLimit, LastActiveAt: time.UnixMicro(c.lastActive.Load())}
}

// putRecord records ls in the store: a container with its own record.
func (s *Server) putRecord(ctx context.Context, ls *liveSession) error {
	if ls.container == nil {
		return s.store.PutSession(ctx, ls.rec)
	}
	return s.store.PutContainer(ctx, ls.record())
}

// containerExpired is OpenAI's answer for a container that has ended
// (idle past its expiry, its lifetime, its code killed it, or a restart).
func containerExpired() *apiError {
	return &apiError{Status: http.StatusBadRequest, Type: "invalid_request_error", Code: "container_expired",
		Message: "Container is expired."}
}

// containerOptions are what newContainer makes a container with.
type containerOptions struct {
	Name string
	// ExpiresAfter is how long it lives without an execution; 0 is
	// OpenAI's default, 20 minutes (or the session lifetime if shorter).
	ExpiresAfter time.Duration
	// MemoryLimit is "1g" (the default when ""), "4g", "16g" or "64g",
	// at most --max-memory-mb.
	MemoryLimit string
	// FileIDs are stored files of the owner copied into its /mnt/data.
	FileIDs []string
}

// newContainer makes a container of owner: a session made by
// startSession, recorded as a container, with opts.FileIDs copied in. Its
// errors name the fields of POST /v1/containers in param (memory_limit,
// expires_after.minutes, file_ids[i]). Like startSession it returns
// nil, nil when the client left.
func (s *Server) newContainer(ctx context.Context, owner string, opts containerOptions) (*liveSession, *apiError) {
	o := sessionOptions{prefix: "cntr_", idle: opts.ExpiresAfter}
	if o.idle == 0 {
		o.idle = min(defaultContainerIdle, s.cfg.SessionMaxLifetime)
	}
	if o.idle <= 0 || o.idle > s.cfg.SessionMaxLifetime {
		return nil, invalid("expires_after.minutes", "expires_after.minutes must be between 1 and %d (the server's session lifetime)",
			int64(s.cfg.SessionMaxLifetime/time.Minute))
	}
	limit := opts.MemoryLimit
	if limit == "" {
		limit = "1g"
	}
	mb, ok := containerMemory[limit]
	switch {
	case !ok:
		return nil, invalid("memory_limit", "memory_limit must be one of 1g, 4g, 16g and 64g")
	case mb > s.cfg.MaxMemoryMB && opts.MemoryLimit == "":
		mb = s.cfg.MaxMemoryMB // the default, on a server that allows less
	case mb > s.cfg.MaxMemoryMB:
		return nil, invalid("memory_limit", "memory_limit %s is over this server's maximum of %d MiB (--max-memory-mb)", limit, s.cfg.MaxMemoryMB)
	}
	o.memoryMB = mb
	o.container = &containerState{name: opts.Name, expiresAfter: o.idle, memoryLimit: limit}
	// The files are checked before a sandbox is taken.
	ids := make([]inputFile, len(opts.FileIDs))
	for i, id := range opts.FileIDs {
		if id == "" {
			return nil, invalid(fmt.Sprintf("file_ids[%d]", i), "file_ids[%d] is empty", i)
		}
		ids[i].FileID = id
	}
	files, e := s.inputFiles(ctx, owner, ids, func(i int) string { return fmt.Sprintf("file_ids[%d]", i) })
	if e != nil {
		return nil, e
	}
	ls, e := s.startSession(ctx, owner, o)
	if ls == nil {
		return nil, e
	}
	for _, f := range files {
		if _, e := s.copyToSession(ctx, owner, ls, f); e != nil {
			s.removeContainer(context.WithoutCancel(ctx), owner, ls.rec.ID)
			return nil, answered(e)
		}
	}
	return ls, nil
}

// copyToSession copies the stored file in (from inputFiles) into the live
// session ls, as a file of its own.
func (s *Server) copyToSession(ctx context.Context, owner string, ls *liveSession, in executor.InputFile) (store.File, *apiError) {
	rc, err := in.Open()
	if err != nil {
		if ae := inputError(err); ae != nil {
			return store.File{}, ae
		}
		return store.File{}, s.internalCtx(ctx, "open input file", err)
	}
	defer rc.Close()
	return s.uploadToSession(ctx, owner, ls, in.Path, io.LimitReader(rc, in.Size))
}

// containerSession finds owner's live container id. An ended one is
// OpenAI's 400 "Container is expired."; an unknown one, another owner's,
// a deleted one or a session that is not a container is 404.
func (s *Server) containerSession(ctx context.Context, owner, id string) (*liveSession, *apiError) {
	if !strings.HasPrefix(id, "cntr_") {
		return nil, notFound("container", id)
	}
	if e := s.elsewhere(ctx, owner, id); e != nil {
		return nil, e
	}
	ls, err := s.findSession(ctx, owner, id)
	switch {
	case ls != nil && ls.container != nil:
		return ls, nil
	case errors.Is(err, errSessionEnded):
		if _, err := s.store.Container(ctx, owner, id); err == nil {
			return nil, containerExpired()
		}
	}
	return nil, notFound("container", id)
}

// execInSession runs req in the live session ls (a container's too): its
// memory limit is the default, a container's last_active_at moves, and
// an execution that killed the session's process ends it. It is what
// the session endpoints run code with.
func (s *Server) execInSession(ctx context.Context, ls *liveSession, req executor.Request) (*executor.Result, error) {
	if req.Limits.MemoryBytes == 0 && ls.memoryMB > 0 {
		req.Limits.MemoryBytes = ls.memoryMB << 20
	}
	res, err := ls.sess.Execute(ctx, req)
	ls.used()
	if res != nil && res.SessionEnded {
		s.endSession(ls, "killed")
	}
	return res, err
}

// findContainer finds owner's container id, live or ended: its record
// (with a live one's last_active_at) and, if it lives, its session.
func (s *Server) findContainer(ctx context.Context, owner, id string) (store.Container, *liveSession, *apiError) {
	if !strings.HasPrefix(id, "cntr_") {
		return store.Container{}, nil, notFound("container", id)
	}
	s.mu.Lock()
	ls := s.sessions[id]
	s.mu.Unlock()
	if ls != nil && ls.rec.Owner == owner && ls.container != nil {
		return ls.liveRecord(), ls, nil
	}
	c, err := s.store.Container(ctx, owner, id)
	if errors.Is(err, store.ErrNotFound) {
		return c, nil, notFound("container", id)
	}
	if err != nil {
		return c, nil, s.internalCtx(ctx, "get container", err)
	}
	return c, nil, nil
}

// removeContainer ends owner's container id if it lives, deletes its
// files and hides its record (DeleteExpired removes it): a deleted
// container is not found, as OpenAI has it.
func (s *Server) removeContainer(ctx context.Context, owner, id string) error {
	s.mu.Lock()
	ls := s.sessions[id]
	s.mu.Unlock()
	if ls != nil && ls.rec.Owner == owner {
		s.endSession(ls, "deleted")
	}
	c, err := s.store.Container(ctx, owner, id)
	if err != nil {
		return err
	}
	files, err := s.store.ListFiles(ctx, owner, id)
	if err != nil {
		return err
	}
	for _, f := range files {
		if err := s.store.DeleteFile(ctx, owner, f.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
	}
	c.ExpiresAt = time.Now()
	return s.store.PutContainer(ctx, c)
}

type containerJSON struct {
	ID           string `json:"id"`
	Object       string `json:"object"`
	CreatedAt    int64  `json:"created_at"`
	Status       string `json:"status"` // running or expired
	ExpiresAfter struct {
		Anchor  string `json:"anchor"`
		Minutes int64  `json:"minutes"`
	} `json:"expires_after"`
	LastActiveAt int64  `json:"last_active_at"`
	MemoryLimit  string `json:"memory_limit"`
	Name         string `json:"name"`
}

func containerView(c store.Container, live bool) containerJSON {
	v := containerJSON{ID: c.ID, Object: "container", CreatedAt: c.CreatedAt.Unix(), Status: "running",
		LastActiveAt: c.LastActiveAt.Unix(), MemoryLimit: c.MemoryLimit, Name: c.Name}
	if !live {
		v.Status = "expired"
	}
	v.ExpiresAfter.Anchor = "last_active_at"
	v.ExpiresAfter.Minutes = int64(c.ExpiresAfter / time.Minute)
	return v
}

// listJSON is OpenAI's cursor page.
type listJSON[T any] struct {
	Object  string `json:"object"`
	Data    []T    `json:"data"`
	FirstID string `json:"first_id,omitempty"`
	LastID  string `json:"last_id,omitempty"`
	HasMore bool   `json:"has_more"`
}

func newList[T any](data []T, more bool, id func(T) string) listJSON[T] {
	l := listJSON[T]{Object: "list", Data: data, HasMore: more}
	if len(data) > 0 {
		l.FirstID, l.LastID = id(data[0]), id(data[len(data)-1])
	}
	if l.Data == nil {
		l.Data = []T{}
	}
	return l
}

// listQuery reads OpenAI's list parameters: after, limit (1 to 100, 20 by
// default) and order (asc or desc, the default).
func listQuery(r *http.Request) (after string, limit int, asc bool, e *apiError) {
	q := r.URL.Query()
	after, limit = q.Get("after"), 20
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			return "", 0, false, invalid("limit", "limit must be an integer from 1 to 100")
		}
		limit = n
	}
	switch q.Get("order") {
	case "", "desc":
	case "asc":
		asc = true
	default:
		return "", 0, false, invalid("order", "order must be asc or desc")
	}
	return after, limit, asc, nil
}

type createContainerRequest struct {
	Name         *string `json:"name"`
	ExpiresAfter *struct {
		Anchor  *string `json:"anchor"`
		Minutes *int64  `json:"minutes"`
	} `json:"expires_after"`
	FileIDs     []string `json:"file_ids"`
	MemoryLimit *string  `json:"memory_limit"`
}

func (s *Server) handleCreateContainer(w http.ResponseWriter, r *http.Request, owner string) *apiError {
	var body createContainerRequest
	if e := s.decode(r, owner, &body); e != nil {
		return e
	}
	if body.Name == nil {
		return invalid("name", "name is required")
	}
	opts := containerOptions{Name: *body.Name, FileIDs: body.FileIDs}
	if ea := body.ExpiresAfter; ea != nil {
		if ea.Anchor == nil || *ea.Anchor != "last_active_at" {
			return invalid("expires_after.anchor", "expires_after.anchor must be last_active_at")
		}
		if ea.Minutes == nil {
			return invalid("expires_after.minutes", "expires_after.minutes is required")
		}
		if m := *ea.Minutes; m < 1 || m > int64(s.cfg.SessionMaxLifetime/time.Minute) {
			return invalid("expires_after.minutes", "expires_after.minutes must be between 1 and %d (the server's session lifetime)",
				int64(s.cfg.SessionMaxLifetime/time.Minute))
		}
		opts.ExpiresAfter = time.Duration(*ea.Minutes) * time.Minute
	}
	if body.MemoryLimit != nil {
		opts.MemoryLimit = *body.MemoryLimit
		if opts.MemoryLimit == "" {
			return invalid("memory_limit", "memory_limit must be one of 1g, 4g, 16g and 64g")
		}
	}
	ls, e := s.newContainer(r.Context(), owner, opts)
	if ls == nil {
		return e // nil: the client left
	}
	writeJSON(w, http.StatusOK, containerView(ls.liveRecord(), true))
	return nil
}

func (s *Server) handleListContainers(w http.ResponseWriter, r *http.Request, owner string) *apiError {
	after, limit, asc, e := listQuery(r)
	if e != nil {
		return e
	}
	cs, more, err := s.store.ListContainers(r.Context(), owner, store.ContainerQuery{After: after, Limit: limit, Ascending: asc,
		Name: r.URL.Query().Get("name")})
	if err != nil {
		return s.internal(r, "list containers", err)
	}
	out := make([]containerJSON, 0, len(cs))
	s.mu.Lock()
	for _, c := range cs {
		ls := s.sessions[c.ID]
		if ls != nil && ls.rec.Owner == owner && ls.container != nil {
			out = append(out, containerView(ls.liveRecord(), true))
		} else {
			// One live on another node runs there; the lease keeper ends
			// those of lost nodes.
			out = append(out, containerView(c, s.node != nil && c.EndedAt.IsZero() && c.Node != s.node.id))
		}
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, newList(out, more, func(c containerJSON) string { return c.ID }))
	return nil
}

func (s *Server) handleGetContainer(w http.ResponseWriter, r *http.Request, owner string) *apiError {
	c, ls, e := s.findContainer(r.Context(), owner, r.PathValue("id"))
	if e != nil {
		return e
	}
	writeJSON(w, http.StatusOK, containerView(c, ls != nil))
	return nil
}

func (s *Server) handleDeleteContainer(w http.ResponseWriter, r *http.Request, owner string) *apiError {
	id := r.PathValue("id")
	if _, _, e := s.findContainer(r.Context(), owner, id); e != nil {
		return e
	}
	if err := s.removeContainer(context.WithoutCancel(r.Context()), owner, id); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return notFound("container", id)
		}
		return s.internal(r, "delete container", err)
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": id, "object": "container.deleted", "deleted": true})
	return nil
}

type containerFileJSON struct {
	ID          string `json:"id"`
	Object      string `json:"object"`
	Bytes       int64  `json:"bytes"`
	ContainerID string `json:"container_id"`
	CreatedAt   int64  `json:"created_at"`
	Path        string `json:"path"`
	Source      string `json:"source"` // user or assistant
}

// containerFileView is stored file f of a container: the path its code
// sees, and who made it (its code: assistant; an upload: user).
func containerFileView(f store.File) containerFileJSON {
	v := containerFileJSON{ID: f.ID, Object: "container.file", Bytes: f.Bytes, ContainerID: f.SessionID,
		CreatedAt: f.CreatedAt.Unix(), Path: path.Join("/mnt/data", f.Filename), Source: "user"}
	if f.Purpose == "execution_output" {
		v.Source = "assistant"
	}
	return v
}

// handleContainerUpload puts a file in a live container: multipart with
// the field file (the file, its base name the path in /mnt/data) or
// file_id (a stored file to copy), or a JSON body {"file_id"}.
func (s *Server) handleContainerUpload(w http.ResponseWriter, r *http.Request, owner string) *apiError {
	ls, e := s.containerSession(r.Context(), owner, r.PathValue("id"))
	if e != nil {
		return e
	}
	var meta store.File
	if strings.HasPrefix(r.Header.Get("Content-Type"), "multipart/form-data") {
		meta, e = s.containerUploadPart(r, owner, ls)
	} else {
		// A JSON body is held by the JSON limit, not the upload's.
		r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes)
		var body struct {
			FileID *string `json:"file_id"`
		}
		if e := s.decode(r, owner, &body); e != nil {
			return e
		}
		if body.FileID == nil || *body.FileID == "" {
			return invalid("file_id", "send a file as multipart/form-data (field file), or the id of a stored file in file_id")
		}
		meta, e = s.copyByID(r.Context(), owner, ls, *body.FileID)
	}
	if e != nil {
		if e.Code == "session_expired" {
			e = containerExpired()
		}
		return answered(e)
	}
	writeJSON(w, http.StatusOK, containerFileView(meta))
	return nil
}

// containerUploadPart reads a multipart upload to a container.
func (s *Server) containerUploadPart(r *http.Request, owner string, ls *liveSession) (store.File, *apiError) {
	mr, err := r.MultipartReader()
	if err != nil {
		return store.File{}, invalid("file", "bad multipart body: %v", err)
	}
	for {
		part, err := mr.NextPart()
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return store.File{}, &apiError{Status: http.StatusRequestEntityTooLarge, Type: "invalid_request_error", Code: "body_too_large", Message: "upload is over the limit"}
			}
			return store.File{}, invalid("file", "the multipart body has neither a field 'file' nor 'file_id'")
		}
		switch part.FormName() {
		case "file":
			name := path.Base(part.FileName())
			if name == "" || name == "." || name == "/" {
				return store.File{}, invalid("file", "the file part needs a filename")
			}
			if err := executor.CheckPath(name); err != nil {
				return store.File{}, invalid("file", "%v", err)
			}
			return s.uploadToSession(r.Context(), owner, ls, name, part)
		case "file_id":
			b, _ := io.ReadAll(io.LimitReader(part, 256))
			return s.copyByID(r.Context(), owner, ls, strings.TrimSpace(string(b)))
		default:
			return store.File{}, invalid(part.FormName(), "unknown field %q", part.FormName())
		}
	}
}

// copyByID copies owner's stored file id into the container ls.
func (s *Server) copyByID(ctx context.Context, owner string, ls *liveSession, id string) (store.File, *apiError) {
	files, e := s.inputFiles(ctx, owner, []inputFile{{FileID: id}}, func(int) string { return "file_id" })
	if e != nil {
		return store.File{}, e
	}
	return s.copyToSession(ctx, owner, ls, files[0])
}

func (s *Server) handleContainerFiles(w http.ResponseWriter, r *http.Request, owner string) *apiError {
	id := r.PathValue("id")
	after, limit, asc, e := listQuery(r)
	if e != nil {
		return e
	}
	if _, _, e := s.findContainer(r.Context(), owner, id); e != nil {
		return e
	}
	files, err := s.store.ListFiles(r.Context(), owner, id)
	if err != nil {
		return s.internal(r, "list container files", err)
	}
	// Newest first: each path's newest version is the container's file.
	var all []containerFileJSON
	seen := map[string]bool{}
	for _, f := range files {
		if !seen[f.Filename] {
			seen[f.Filename] = true
			all = append(all, containerFileView(f))
		}
	}
	if asc {
		slices.Reverse(all)
	}
	if after != "" {
		if i := slices.IndexFunc(all, func(f containerFileJSON) bool { return f.ID == after }); i >= 0 {
			all = all[i+1:]
		} else {
			all = nil // as the store answers an unknown cursor
		}
	}
	more := len(all) > limit
	if more {
		all = all[:limit]
	}
	writeJSON(w, http.StatusOK, newList(all, more, func(f containerFileJSON) string { return f.ID }))
	return nil
}

// containerFile finds file fid of owner's container id (live or ended).
func (s *Server) containerFile(r *http.Request, owner string) (store.File, *apiError) {
	id, fid := r.PathValue("id"), r.PathValue("file_id")
	if _, _, e := s.findContainer(r.Context(), owner, id); e != nil {
		return store.File{}, e
	}
	f, err := s.store.File(r.Context(), owner, fid)
	if err != nil || f.SessionID != id {
		return store.File{}, &apiError{Status: http.StatusNotFound, Type: "invalid_request_error", Code: "not_found",
			Message: fmt.Sprintf("no file with id %q in container %q", fid, id)}
	}
	return f, nil
}

func (s *Server) handleGetContainerFile(w http.ResponseWriter, r *http.Request, owner string) *apiError {
	f, e := s.containerFile(r, owner)
	if e != nil {
		return e
	}
	writeJSON(w, http.StatusOK, containerFileView(f))
	return nil
}

func (s *Server) handleContainerFileContent(w http.ResponseWriter, r *http.Request, owner string) *apiError {
	f, e := s.containerFile(r, owner)
	if e != nil {
		return e
	}
	return s.serveStored(w, r, owner, f.ID)
}

// handleDeleteContainerFile deletes the stored file; a live container's
// /mnt/data keeps its copy until the container ends.
func (s *Server) handleDeleteContainerFile(w http.ResponseWriter, r *http.Request, owner string) *apiError {
	f, e := s.containerFile(r, owner)
	if e != nil {
		return e
	}
	if err := s.store.DeleteFile(r.Context(), owner, f.ID); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return notFound("file", f.ID)
		}
		return s.internal(r, "delete container file", err)
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": f.ID, "object": "container.file.deleted", "deleted": true})
	return nil
}
