// Package toolloop runs the model ⇄ tool loop behind /v1/chat/completions:
// it offers the server-side tools (code_execution, web_search) to the model
// as function tools, runs the calls the model makes, feeds the results
// back, and builds an OpenAI-shaped response holding the answer and every
// execution. Every field of the client's request that the loop does not
// handle goes to the model untouched.
package toolloop

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"codeexec/internal/python"
)

// Names of the server-side tools, as the model sees them.
const (
	CodeTool   = "code_execution"
	SearchTool = "web_search"
)

// RequestError is a client error in the request, with the field it concerns.
type RequestError struct {
	Param string
	Msg   string
}

func (e *RequestError) Error() string { return e.Msg }

// Request is a parsed chat completion request.
type Request struct {
	// Body is the client's request, field by field; the loop rewrites
	// messages, tools, tool_choice and stream per upstream call.
	Body map[string]json.RawMessage
	// Messages are the client's messages with codeexec's own history
	// turned back into the function-call form the upstream understands.
	Messages []json.RawMessage
	// ClientTools are the client's tools other than server-side ones.
	ClientTools []json.RawMessage
	// Code is set when code_execution is enabled.
	Code *CodeSettings
	// Search is set when web_search is enabled.
	Search bool
	// Stream and IncludeUsage are the client's streaming options.
	Stream, IncludeUsage bool
	// FileIDs are files the user attached (file content parts and
	// code_execution.file_ids), in order, without duplicates.
	FileIDs []string
}

// CodeSettings are the optional settings of the code_execution tool.
type CodeSettings struct {
	SessionID string   `json:"session_id,omitempty"`
	Timeout   float64  `json:"timeout,omitempty"`
	FileIDs   []string `json:"file_ids,omitempty"`
}

// ParseRequest parses a chat completion body. Unknown fields stay in Body.
func ParseRequest(data []byte) (*Request, error) {
	var body map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&body); err != nil || body == nil {
		return nil, &RequestError{"", "request body must be a JSON object"}
	}
	if dec.More() {
		return nil, &RequestError{"", "unexpected data after the JSON object"}
	}
	req := &Request{Body: body}
	if raw, ok := body["stream"]; ok {
		if err := json.Unmarshal(raw, &req.Stream); err != nil {
			return nil, &RequestError{"stream", "stream must be a boolean"}
		}
	}
	if raw, ok := body["stream_options"]; ok && string(raw) != "null" {
		var so struct {
			IncludeUsage bool `json:"include_usage"`
		}
		if err := json.Unmarshal(raw, &so); err != nil {
			return nil, &RequestError{"stream_options", "stream_options must be an object"}
		}
		req.IncludeUsage = so.IncludeUsage
	}
	if raw, ok := body["tools"]; ok && string(raw) != "null" {
		var tools []json.RawMessage
		if err := json.Unmarshal(raw, &tools); err != nil {
			return nil, &RequestError{"tools", "tools must be an array"}
		}
		for i, t := range tools {
			if err := req.addTool(i, t); err != nil {
				return nil, err
			}
		}
	}
	raw, ok := body["messages"]
	if !ok {
		return nil, &RequestError{"messages", "messages is required"}
	}
	var msgs []json.RawMessage
	if err := json.Unmarshal(raw, &msgs); err != nil || len(msgs) == 0 {
		return nil, &RequestError{"messages", "messages must be a non-empty array"}
	}
	if err := req.convertHistory(msgs); err != nil {
		return nil, err
	}
	if req.Code != nil {
		for _, id := range req.Code.FileIDs {
			req.addFile(id)
		}
	}
	return req, nil
}

func (r *Request) addTool(i int, raw json.RawMessage) error {
	var t struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(raw, &t); err != nil {
		return &RequestError{fmt.Sprintf("tools[%d]", i), fmt.Sprintf("tools[%d] must be an object with a type", i)}
	}
	switch t.Type {
	case "code_execution", "code_interpreter":
		var opts map[string]json.RawMessage
		json.Unmarshal(raw, &opts)
		r.Code = &CodeSettings{}
		if s, ok := opts[t.Type]; ok && string(s) != "null" {
			dec := json.NewDecoder(bytes.NewReader(s))
			dec.DisallowUnknownFields()
			if err := dec.Decode(r.Code); err != nil {
				return &RequestError{fmt.Sprintf("tools[%d].%s", i, t.Type), fmt.Sprintf("tools[%d].%s: %v", i, t.Type, err)}
			}
			if r.Code.Timeout < 0 {
				return &RequestError{fmt.Sprintf("tools[%d].%s.timeout", i, t.Type), "timeout must be positive"}
			}
		}
	case "web_search", "web_search_preview":
		r.Search = true
	default:
		r.ClientTools = append(r.ClientTools, raw)
	}
	return nil
}

func (r *Request) addFile(id string) {
	for _, have := range r.FileIDs {
		if have == id {
			return
		}
	}
	r.FileIDs = append(r.FileIDs, id)
}

// ExecutionEntry is a tool_calls entry for a server-side execution
// (CodeExecutionCall and WebSearchCall of docs/openapi.yaml).
type ExecutionEntry struct {
	ID            string         `json:"id"`
	Type          string         `json:"type"`
	CodeExecution *CodeExecution `json:"code_execution,omitempty"`
	WebSearch     *WebSearch     `json:"web_search,omitempty"`
}

// CodeExecution is one code_execution that ran.
type CodeExecution struct {
	Code     string           `json:"code"`
	Output   string           `json:"output"`
	Status   string           `json:"status"`
	Displays []map[string]any `json:"displays,omitempty"`
	Files    []map[string]any `json:"files,omitempty"`
}

// WebSearch is one web_search that ran.
type WebSearch struct {
	Query   string         `json:"query"`
	Output  string         `json:"output"`
	Results []SearchResult `json:"results,omitempty"`
}

// convertHistory copies msgs, turning file parts into notes and every
// server-side entry of an assistant message into the function-call form,
// followed by the tool message that carries its output.
func (r *Request) convertHistory(msgs []json.RawMessage) error {
	for i, raw := range msgs {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(raw, &m); err != nil {
			return &RequestError{fmt.Sprintf("messages[%d]", i), fmt.Sprintf("messages[%d] must be an object", i)}
		}
		var role string
		json.Unmarshal(m["role"], &role)
		if role == "user" {
			if content, ok := m["content"]; ok && len(content) > 0 && content[0] == '[' {
				conv, err := r.convertParts(i, content)
				if err != nil {
					return err
				}
				m["content"] = conv
				raw = mustJSON(m)
			}
		}
		if role != "assistant" || len(m["tool_calls"]) == 0 || string(m["tool_calls"]) == "null" {
			r.Messages = append(r.Messages, raw)
			continue
		}
		var calls []json.RawMessage
		if err := json.Unmarshal(m["tool_calls"], &calls); err != nil {
			return &RequestError{fmt.Sprintf("messages[%d].tool_calls", i), "tool_calls must be an array"}
		}
		var out []json.RawMessage
		var results []json.RawMessage
		for j, c := range calls {
			var e ExecutionEntry
			if err := json.Unmarshal(c, &e); err != nil {
				return &RequestError{fmt.Sprintf("messages[%d].tool_calls[%d]", i, j), "tool call must be an object"}
			}
			var name, args, output string
			switch {
			case e.Type == "code_execution" && e.CodeExecution != nil:
				name, args, output = CodeTool, string(mustJSON(map[string]string{"code": e.CodeExecution.Code})), e.CodeExecution.Output
			case e.Type == "web_search" && e.WebSearch != nil:
				name, args, output = SearchTool, string(mustJSON(map[string]string{"query": e.WebSearch.Query})), e.WebSearch.Output
			case e.Type == "code_execution" || e.Type == "web_search" || string(bytes.TrimSpace(c)) == "null":
				// A client library that does not know codeexec's entry
				// types may send one back without its body, or as null
				// (the Go SDK's ChatCompletionMessage.ToParam does): its
				// code and output are lost, so the entry is left out
				// rather than passed on to fail the upstream's validation.
				continue
			default:
				out = append(out, c)
				continue
			}
			out = append(out, mustJSON(map[string]any{"id": e.ID, "type": "function",
				"function": map[string]string{"name": name, "arguments": args}}))
			results = append(results, mustJSON(map[string]string{"role": "tool", "tool_call_id": e.ID, "content": output}))
		}
		if len(out) > 0 {
			m["tool_calls"] = mustJSON(out)
		} else {
			delete(m, "tool_calls") // providers refuse an empty tool_calls array
		}
		r.Messages = append(r.Messages, mustJSON(m))
		r.Messages = append(r.Messages, results...)
	}
	return nil
}

// convertParts replaces {"type":"file","file":{"file_id":...}} parts of a
// user message with a text note and records the file.
func (r *Request) convertParts(i int, content json.RawMessage) (json.RawMessage, error) {
	var parts []map[string]json.RawMessage
	if err := json.Unmarshal(content, &parts); err != nil {
		return nil, &RequestError{fmt.Sprintf("messages[%d].content", i), "content must be a string or an array of parts"}
	}
	changed := false
	for j, p := range parts {
		var typ string
		json.Unmarshal(p["type"], &typ)
		if typ != "file" {
			continue
		}
		var f struct {
			FileID string `json:"file_id"`
		}
		if err := json.Unmarshal(p["file"], &f); err != nil || f.FileID == "" {
			return nil, &RequestError{fmt.Sprintf("messages[%d].content[%d].file", i, j), "a file part needs file.file_id (upload the file with POST /v1/files first)"}
		}
		r.addFile(f.FileID)
		parts[j] = map[string]json.RawMessage{"type": mustJSON("text"), "text": mustJSON("[attached file " + f.FileID + "]")}
		changed = true
	}
	if !changed {
		return content, nil
	}
	return mustJSON(parts), nil
}

// PlaceFiles rewrites the notes of attached files to name their paths in
// the sandbox, once the caller has placed them (paths maps file id to
// path under /mnt/data). The notes are text parts of user messages (see
// convertParts); each is decoded and encoded again, never edited as raw
// JSON, because a path may hold any character a file name can, quotes
// and backslashes included.
func (r *Request) PlaceFiles(paths map[string]string) {
	for i, raw := range r.Messages {
		var m map[string]json.RawMessage
		var parts []map[string]json.RawMessage
		if json.Unmarshal(raw, &m) != nil || json.Unmarshal(m["content"], &parts) != nil {
			continue // not a message with content parts: no notes
		}
		changed := false
		for _, p := range parts {
			var typ, text string
			if json.Unmarshal(p["type"], &typ) != nil || typ != "text" || json.Unmarshal(p["text"], &text) != nil {
				continue
			}
			placed := text
			for id, path := range paths {
				placed = strings.ReplaceAll(placed, "[attached file "+id+"]", "[attached file: /mnt/data/"+path+"]")
			}
			if placed != text {
				p["text"] = mustJSON(placed)
				changed = true
			}
		}
		if changed {
			m["content"] = mustJSON(parts)
			r.Messages[i] = mustJSON(m)
		}
	}
}

func mustJSON(v any) json.RawMessage {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic(err) // only called with values that always encode
	}
	return bytes.TrimRight(buf.Bytes(), "\n")
}

// toolDefs are the function definitions the model sees for the
// server-side tools enabled in r.
func (r *Request) toolDefs(sandbox string) []json.RawMessage {
	var defs []json.RawMessage
	if r.Code != nil {
		defs = append(defs, mustJSON(map[string]any{"type": "function", "function": map[string]any{
			"name": CodeTool, "description": sandbox,
			"parameters": map[string]any{"type": "object", "properties": map[string]any{
				"code": map[string]string{"type": "string", "description": "Python 3 code to run. The value of the last expression is shown, like a notebook cell."},
			}, "required": []string{"code"}},
		}}))
	}
	if r.Search {
		defs = append(defs, mustJSON(map[string]any{"type": "function", "function": map[string]any{
			"name": SearchTool, "description": "Search the web. Returns titles, URLs and snippets of the top results.",
			"parameters": map[string]any{"type": "object", "properties": map[string]any{
				"query": map[string]string{"type": "string", "description": "what to search for"},
			}, "required": []string{"query"}},
		}}))
	}
	return defs
}

// SandboxDescription describes the sandbox to the model.
// network lists the domains reachable over HTTP(S) (nil: no network).
func SandboxDescription(timeout time.Duration, memoryMB int64, files []string, network []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Run Python 3 code in a secure sandbox and get its output. Preinstalled: %s. "+
		"Each run is limited to %g s and %d MiB of memory. The working directory is /mnt/data; files written there are returned to the user. "+
		"Show plots with plt.show(); they are shown to the user as images. "+
		"Variables, imports and files persist across the runs of this conversation turn. "+
		"Shell tools (coreutils, grep, sed, awk, find, unzip, sqlite3, file) can be run with subprocess.", python.LibraryNames(), timeout.Seconds(), memoryMB)
	if len(network) == 0 {
		b.WriteString(" There is no network access.")
	} else {
		fmt.Fprintf(&b, " HTTP(S) requests (e.g. with requests) may reach only: %s; anything else is refused. "+
			"A line %%pip install NAME installs a missing package if its index is among those.", strings.Join(network, ", "))
	}
	if len(files) > 0 {
		fmt.Fprintf(&b, " Files available: %s.", "/mnt/data/"+strings.Join(files, ", /mnt/data/"))
	}
	return b.String()
}
