//go:build linux

package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"codeexec/internal/ids"
	"codeexec/internal/responses"
	"codeexec/internal/store"
	"codeexec/internal/toolloop"
)

// handleResponses serves POST /v1/responses: the request becomes a chat
// completion request the tool loop runs (always streamed from the
// provider, so that one builder makes streamed and whole responses), its
// code runs in a container, and the loop's chunks become output items.
func (s *Server) handleResponses(w http.ResponseWriter, r *http.Request, owner string) *apiError {
	if s.chat == nil {
		return s.noUpstream()
	}
	var body []byte
	if e := s.readBody(r, owner, func(data []byte) *apiError { body = data; return nil }); e != nil {
		return e
	}
	var prev struct {
		ID string `json:"previous_response_id"`
	}
	json.Unmarshal(body, &prev)
	var history []json.RawMessage
	if prev.ID != "" {
		rec, err := s.store.Response(r.Context(), owner, prev.ID)
		if err != nil {
			return &apiError{Status: http.StatusNotFound, Type: "invalid_request_error", Param: "previous_response_id", Code: "not_found",
				Message: fmt.Sprintf("previous response with id %q not found (it was not stored, was deleted, or has expired)", prev.ID)}
		}
		if err := json.Unmarshal(rec.History, &history); err != nil {
			return s.internal(r, "read stored response", err)
		}
	}
	req, err := responses.Parse(body, history, ids.New)
	if err != nil {
		if re, ok := errors.AsType[*responses.Error](err); ok {
			return invalid(re.Param, "%s", re.Msg)
		}
		return invalid("", "%v", err)
	}
	chatReq, err := toolloop.ParseRequest(req.Chat)
	if err != nil {
		if re, ok := errors.AsType[*toolloop.RequestError](err); ok {
			return invalid("input", "%s", re.Msg)
		}
		return invalid("input", "%v", err)
	}
	if chatReq.Search && s.chat.Loop.Search == nil {
		return invalid("tools", "%v", toolloop.ErrSearchUnavailable)
	}
	if req.Code == nil && len(chatReq.FileIDs) > 0 {
		return invalid("input", "input files need the code_interpreter tool: add {\"type\": \"code_interpreter\", \"container\": {\"type\": \"auto\"}} to tools")
	}

	sb := &chatSandbox{s: s, owner: owner}
	defer sb.close()
	var fileNames []string
	containerID := ""
	if req.Code != nil {
		ls, fresh, e := s.responseContainer(r.Context(), owner, req.Code, history)
		if e != nil {
			return e
		}
		if ls == nil {
			return nil // the client left
		}
		sb.live, containerID = ls, ls.rec.ID
		ids := chatReq.FileIDs
		if !fresh { // a new container has the tool's files already
			ids = append(append([]string(nil), req.Code.FileIDs...), ids...)
		}
		fileNames, err = s.placeAttached(r, sb, ids, "input", chatReq)
		if err != nil {
			return s.attachError(r, err)
		}
		if fresh {
			for _, id := range req.Code.FileIDs {
				if f, err := s.store.File(r.Context(), owner, id); err == nil {
					fileNames = append(fileNames, f.Filename)
				}
			}
		}
	}
	var allow []string
	if s.egress != nil {
		allow = s.egress.Allow
	}
	desc := toolloop.SandboxDescription(s.cfg.Timeout, s.cfg.MemoryMB, fileNames, allow)

	ctx, cancel := context.WithCancelCause(r.Context())
	defer cancel(nil)
	defer context.AfterFunc(s.hardStop, func() { cancel(errShutdown) })()
	var sse *sseWriter
	var emit func(string, []byte) error
	if req.Stream {
		sse = newSSE(w, s.cfg.StreamWriteTimeout)
		emit = func(event string, data []byte) error { return sse.event(event, json.RawMessage(data)) }
	}
	id := ids.New("resp_")
	b := responses.NewBuilder(id, req, req.PreviousResponseID, ids.New, emit)
	b.ContainerID = containerID
	if err := b.Start(); err != nil {
		return nil // the client does not read
	}
	_, err = s.chat.Loop.Run(ctx, chatReq, sb, desc, b.Chunk)
	var fail *responses.ResponseError
	if err != nil {
		stopped := ctx.Err() != nil && r.Context().Err() == nil
		switch {
		case isGone(r.Context(), err) && !stopped:
			return nil
		case sse == nil && stopped:
			return shuttingDown()
		case sse == nil:
			return s.upstreamError(r, err)
		}
		e := s.upstreamError(r, err)
		if stopped {
			e = shuttingDown()
		}
		fail = &responses.ResponseError{Code: "server_error", Message: e.Message}
	}
	resp, items := b.Finish(fail)
	if req.Store && fail == nil {
		all := append(append(append([]json.RawMessage(nil), history...), req.Input...), items...)
		rec := store.Response{Owner: owner, ID: id, Response: mustMarshal(resp), Input: mustMarshal(req.Input),
			History: mustMarshal(all), CreatedAt: time.Unix(resp.CreatedAt, 0)}
		if s.cfg.FileTTL > 0 {
			rec.ExpiresAt = time.Now().Add(s.cfg.FileTTL)
		}
		if err := s.store.PutResponse(context.WithoutCancel(r.Context()), rec); err != nil {
			s.log.Error("store response", "response_id", id, "err", err)
		}
	}
	if sse == nil {
		http.NewResponseController(w).SetWriteDeadline(time.Now().Add(s.cfg.StreamWriteTimeout))
		writeJSON(w, http.StatusOK, resp)
	}
	return nil
}

// responseContainer is the container code_interpreter runs in: the one
// it names, else (auto) the container of the conversation's latest
// code_interpreter_call while it lives, else a new one with the tool's
// file_ids and memory_limit. fresh says it was made now, its files
// placed.
func (s *Server) responseContainer(ctx context.Context, owner string, c *responses.CodeTool, history []json.RawMessage) (ls *liveSession, fresh bool, e *apiError) {
	if c.ContainerID != "" {
		ls, e := s.containerSession(ctx, owner, c.ContainerID)
		return ls, false, e
	}
	for i := len(history) - 1; i >= 0; i-- {
		var it struct {
			Type        string `json:"type"`
			ContainerID string `json:"container_id"`
		}
		if json.Unmarshal(history[i], &it) == nil && it.Type == "code_interpreter_call" && it.ContainerID != "" {
			ls, e := s.containerSession(ctx, owner, it.ContainerID)
			if e == nil || e.forward != nil {
				return ls, false, e
			}
			break // expired: a new container, as the conversation goes on
		}
	}
	ls, e = s.newContainer(ctx, owner, containerOptions{MemoryLimit: c.MemoryLimit, FileIDs: c.FileIDs})
	return ls, true, e
}

func (s *Server) handleGetResponse(w http.ResponseWriter, r *http.Request, owner string) *apiError {
	rec, e := s.storedResponse(r, owner)
	if e != nil {
		return e
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(append(rec.Response, '\n'))
	return nil
}

func (s *Server) storedResponse(r *http.Request, owner string) (store.Response, *apiError) {
	id := r.PathValue("id")
	rec, err := s.store.Response(r.Context(), owner, id)
	if errors.Is(err, store.ErrNotFound) {
		return rec, &apiError{Status: http.StatusNotFound, Type: "invalid_request_error", Code: "not_found",
			Message: fmt.Sprintf("response with id %q not found", id)}
	}
	if err != nil {
		return rec, s.internal(r, "get response", err)
	}
	return rec, nil
}

func (s *Server) handleDeleteResponse(w http.ResponseWriter, r *http.Request, owner string) *apiError {
	id := r.PathValue("id")
	if err := s.store.DeleteResponse(r.Context(), owner, id); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return &apiError{Status: http.StatusNotFound, Type: "invalid_request_error", Code: "not_found",
				Message: fmt.Sprintf("response with id %q not found", id)}
		}
		return s.internal(r, "delete response", err)
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": id, "object": "response", "deleted": true})
	return nil
}

// handleResponseInputItems lists a stored response's input items as
// OpenAI does: newest first unless order=asc, limit (1..100, default 20)
// after the item id after.
func (s *Server) handleResponseInputItems(w http.ResponseWriter, r *http.Request, owner string) *apiError {
	rec, e := s.storedResponse(r, owner)
	if e != nil {
		return e
	}
	var items []json.RawMessage
	if err := json.Unmarshal(rec.Input, &items); err != nil {
		return s.internal(r, "read stored response", err)
	}
	q := r.URL.Query()
	switch q.Get("order") {
	case "", "desc":
		for i, j := 0, len(items)-1; i < j; i, j = i+1, j-1 {
			items[i], items[j] = items[j], items[i]
		}
	case "asc":
	default:
		return invalid("order", `order must be "asc" or "desc"`)
	}
	limit := 20
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			return invalid("limit", "limit must be between 1 and 100")
		}
		limit = n
	}
	idOf := func(raw json.RawMessage) string {
		var it struct {
			ID string `json:"id"`
		}
		json.Unmarshal(raw, &it)
		return it.ID
	}
	if after := q.Get("after"); after != "" {
		for i, it := range items {
			if idOf(it) == after {
				items = items[i+1:]
				break
			}
		}
	}
	more := len(items) > limit
	if more {
		items = items[:limit]
	}
	list := map[string]any{"object": "list", "data": items, "has_more": more, "first_id": nil, "last_id": nil}
	if len(items) > 0 {
		list["first_id"], list["last_id"] = idOf(items[0]), idOf(items[len(items)-1])
	}
	if items == nil {
		list["data"] = []any{}
	}
	writeJSON(w, http.StatusOK, list)
	return nil
}
