package toolloop

import (
	"encoding/json"
	"time"

	"codeexec/internal/ids"
)

// state accumulates what the client gets: the entries in order, the
// summed usage, and, when streaming, the chunks already sent.
type state struct {
	req     *Request
	emit    func([]byte) error
	entries []ExecutionEntry
	total   usage
	last    *turnResult
	codeN   int
	searchN int

	// streaming
	id         string
	model      json.RawMessage
	created    json.RawMessage
	roleSent   bool
	nextIndex  int
	emitFailed error
}

func (st *state) meta(t *turnResult) {
	if st.id == "" {
		st.id, st.model, st.created = t.id, t.model, t.created
		if st.id == "" {
			st.id = ids.New("chatcmpl-")
		}
	}
}

// chunk sends one chat.completion.chunk with the given delta.
func (st *state) chunk(delta map[string]any, finish any) error {
	if st.emitFailed != nil {
		return st.emitFailed
	}
	if !st.roleSent {
		delta["role"] = "assistant"
		st.roleSent = true
	}
	c := map[string]any{"id": st.id, "object": "chat.completion.chunk", "created": st.created, "model": st.model,
		"choices": []map[string]any{{"index": 0, "delta": delta, "finish_reason": finish}}}
	if len(st.created) == 0 {
		c["created"] = time.Now().Unix()
	}
	if len(st.model) == 0 {
		c["model"] = ""
	}
	st.emitFailed = st.emit(mustJSON(c))
	return st.emitFailed
}

func (st *state) content(s string) error {
	return st.chunk(map[string]any{"content": s}, nil)
}

// begin tells a streaming client that the code execution id is about to
// run: a tool_calls delta with its code, before it runs.
func (st *state) begin(id, code string) {
	if st.emit == nil {
		return
	}
	st.chunk(map[string]any{"tool_calls": []map[string]any{{"index": st.nextIndex, "id": id, "type": CodeTool,
		"code_execution": map[string]any{"code": code}}}}, nil)
	st.nextIndex++
}

// entry records an execution; streaming clients got its code from begin
// and now get its output, as a tool_calls delta of the same index.
func (st *state) entry(e ExecutionEntry) {
	st.entries = append(st.entries, e)
	if e.Type == CodeTool {
		st.codeN++
	} else {
		st.searchN++
	}
	if st.emit == nil {
		return
	}
	switch e.Type {
	case CodeTool:
		i := st.nextIndex - 1 // begin's
		st.chunk(map[string]any{"tool_calls": []map[string]any{{"index": i, "code_execution": map[string]any{
			"output": e.CodeExecution.Output, "status": e.CodeExecution.Status,
			"displays": e.CodeExecution.Displays, "files": e.CodeExecution.Files}}}}, nil)
	default:
		st.chunk(map[string]any{"tool_calls": []map[string]any{{"index": st.nextIndex, "id": e.ID, "type": e.Type,
			"web_search": e.WebSearch}}}, nil)
		st.nextIndex++
	}
}

func (st *state) toolUsage() map[string]int {
	u := map[string]int{}
	if st.req.Code != nil || st.codeN > 0 {
		u[CodeTool] = st.codeN
	}
	if st.searchN > 0 || st.req.Search {
		u[SearchTool] = st.searchN
	}
	return u
}

// finish ends the answer: the last content, every entry, and the client's
// own tool calls (which stop the loop with finish_reason tool_calls).
func (st *state) finish(content string, clientCalls []call, reason string) (json.RawMessage, error) {
	var calls []any
	for _, e := range st.entries {
		calls = append(calls, e)
	}
	for _, c := range clientCalls {
		calls = append(calls, map[string]any{"id": c.ID, "type": "function", "function": map[string]string{"name": c.Name, "arguments": c.Args}})
	}
	if st.emit != nil {
		if len(clientCalls) > 0 {
			var deltas []map[string]any
			for _, c := range clientCalls {
				deltas = append(deltas, map[string]any{"index": st.nextIndex, "id": c.ID, "type": "function",
					"function": map[string]string{"name": c.Name, "arguments": c.Args}})
				st.nextIndex++
			}
			st.chunk(map[string]any{"tool_calls": deltas}, nil)
		}
		st.chunk(map[string]any{}, reason)
		if st.req.IncludeUsage {
			c := map[string]any{"id": st.id, "object": "chat.completion.chunk", "created": st.created, "model": st.model,
				"choices": []any{}, "usage": st.total, "server_side_tool_usage": st.toolUsage()}
			if st.emitFailed == nil {
				st.emitFailed = st.emit(mustJSON(c))
			}
		}
		return nil, st.emitFailed
	}
	resp := st.last.resp
	msg := map[string]any{"role": "assistant", "content": content}
	if content == "" && len(calls) > 0 {
		msg["content"] = nil
	}
	if len(calls) > 0 {
		msg["tool_calls"] = calls
	}
	var choices []map[string]json.RawMessage
	json.Unmarshal(resp["choices"], &choices)
	choice := map[string]json.RawMessage{"index": mustJSON(0)}
	if len(choices) > 0 {
		choice = choices[0]
	}
	choice["message"] = mustJSON(msg)
	choice["finish_reason"] = mustJSON(reason)
	out := make(map[string]json.RawMessage, len(resp)+1)
	for k, v := range resp {
		out[k] = v
	}
	out["choices"] = mustJSON([]any{choice})
	out["usage"] = mustJSON(st.total)
	out["server_side_tool_usage"] = mustJSON(st.toolUsage())
	return mustJSON(out), nil
}
