// Package responses serves OpenAI's Responses API on top of the chat
// completions tool loop (package toolloop): it turns a Responses request
// (input items, instructions, tools with code_interpreter) into the chat
// completion request the loop runs against any OpenAI-compatible provider,
// and the loop's stream of chat.completion.chunks back into Responses
// output items and streaming events, in OpenAI's shapes and order.
//
// It holds no state and does no I/O: the server stores responses, finds
// containers and runs the loop.
package responses

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

// Error is a client error in the request, with the field it concerns.
type Error struct {
	Param string
	Msg   string
}

func (e *Error) Error() string { return e.Msg }

func errorf(param, format string, args ...any) *Error {
	return &Error{Param: param, Msg: fmt.Sprintf(format, args...)}
}

// Request is a parsed Responses request.
type Request struct {
	// Chat is the chat completion body for toolloop.ParseRequest: the
	// history and the input as messages, the tools as chat tools, always
	// streamed with usage (the server always runs the loop streaming, so
	// one path builds streamed and whole responses alike).
	Chat []byte
	// Input is the request's own input as items, each with an id; History
	// and Input together are what a response that follows this one starts
	// from.
	Input []json.RawMessage
	// Code is set when the request offers code_interpreter (or its xAI
	// name code_execution).
	Code *CodeTool
	// Stream, Store, PreviousResponseID and IncludeOutputs are the
	// request's options (Store defaults to true, as OpenAI's).
	Stream             bool
	Store              bool
	PreviousResponseID string
	IncludeOutputs     bool
	// Echo holds the request's fields a Response object repeats.
	Echo Echo
}

// CodeTool is the code_interpreter tool's container: ContainerID, or
// "auto" with FileIDs and MemoryLimit for a container made for it.
type CodeTool struct {
	ContainerID string
	FileIDs     []string
	MemoryLimit string
}

// Echo is what a Response repeats of its request.
type Echo struct {
	Model             string          `json:"model"`
	Instructions      json.RawMessage `json:"instructions"`
	Tools             json.RawMessage `json:"tools"`
	ToolChoice        json.RawMessage `json:"tool_choice"`
	Temperature       json.RawMessage `json:"temperature"`
	TopP              json.RawMessage `json:"top_p"`
	MaxOutputTokens   json.RawMessage `json:"max_output_tokens"`
	ParallelToolCalls json.RawMessage `json:"parallel_tool_calls"`
	Metadata          json.RawMessage `json:"metadata"`
	Text              json.RawMessage `json:"text"`
	Truncation        json.RawMessage `json:"truncation"`
	User              json.RawMessage `json:"user,omitempty"`
}

// ignored are request fields accepted and not acted on: hints a provider
// behind chat completions has no use for.
var ignored = map[string]bool{"service_tier": true, "prompt_cache_key": true, "safety_identifier": true,
	"top_logprobs": true, "stream_options": true, "reasoning": true}

// Parse parses a Responses request body. history is the conversation of
// previous_response_id (its items, oldest first, as Conversation returns
// them), or nil; newID makes the ids of input items that have none.
func Parse(body []byte, history []json.RawMessage, newID func(prefix string) string) (*Request, error) {
	var f map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&f); err != nil || f == nil {
		return nil, errorf("", "request body must be a JSON object")
	}
	if dec.More() {
		return nil, errorf("", "unexpected data after the JSON object")
	}
	r := &Request{Store: true}
	chat := map[string]any{"stream": true, "stream_options": map[string]bool{"include_usage": true}}
	e := &r.Echo
	e.Instructions, e.Temperature, e.TopP, e.MaxOutputTokens = null, null, null, null
	e.ToolChoice, e.Tools, e.ParallelToolCalls = mustJSON("auto"), mustJSON([]any{}), mustJSON(true)
	e.Metadata, e.Text, e.Truncation = mustJSON(map[string]any{}), mustJSON(map[string]any{"format": map[string]string{"type": "text"}}), mustJSON("disabled")
	var messages []json.RawMessage
	for name, raw := range f {
		if string(raw) == "null" && name != "input" {
			continue
		}
		var err error
		switch name {
		case "model":
			if json.Unmarshal(raw, &e.Model) != nil || e.Model == "" {
				return nil, errorf("model", "model must be a non-empty string")
			}
			chat["model"] = e.Model
		case "input":
			r.Input, err = inputItems(raw, newID)
		case "instructions":
			var s string
			if json.Unmarshal(raw, &s) != nil {
				return nil, errorf("instructions", "instructions must be a string")
			}
			e.Instructions = raw
			if s != "" {
				messages = append(messages, mustJSON(map[string]string{"role": "system", "content": s}))
			}
		case "tools":
			err = r.tools(raw, chat)
		case "tool_choice":
			e.ToolChoice = raw
			chat["tool_choice"], err = toolChoice(raw)
		case "temperature", "top_p":
			var v float64
			if json.Unmarshal(raw, &v) != nil {
				return nil, errorf(name, "%s must be a number", name)
			}
			chat[name] = v
			if name == "temperature" {
				e.Temperature = raw
			} else {
				e.TopP = raw
			}
		case "max_output_tokens":
			var v int
			if json.Unmarshal(raw, &v) != nil || v <= 0 {
				return nil, errorf(name, "max_output_tokens must be a positive integer")
			}
			e.MaxOutputTokens, chat["max_tokens"] = raw, v
		case "parallel_tool_calls":
			var v bool
			if json.Unmarshal(raw, &v) != nil {
				return nil, errorf(name, "parallel_tool_calls must be a boolean")
			}
			e.ParallelToolCalls, chat["parallel_tool_calls"] = raw, v
		case "metadata":
			var m map[string]string
			if json.Unmarshal(raw, &m) != nil || len(m) > 16 {
				return nil, errorf(name, "metadata must be an object of at most 16 string values")
			}
			e.Metadata = raw
		case "user":
			var s string
			if json.Unmarshal(raw, &s) != nil {
				return nil, errorf(name, "user must be a string")
			}
			e.User, chat["user"] = raw, s
		case "stream":
			err = boolField(raw, name, &r.Stream)
		case "store":
			err = boolField(raw, name, &r.Store)
		case "background":
			var b bool
			if err = boolField(raw, name, &b); err == nil && b {
				err = errorf(name, "background responses are not supported: leave background out or false")
			}
		case "previous_response_id":
			if json.Unmarshal(raw, &r.PreviousResponseID) != nil || r.PreviousResponseID == "" {
				return nil, errorf(name, "previous_response_id must be a response id")
			}
		case "include":
			var inc []string
			if json.Unmarshal(raw, &inc) != nil {
				return nil, errorf(name, "include must be an array of strings")
			}
			for _, v := range inc {
				if v == "code_interpreter_call.outputs" {
					r.IncludeOutputs = true
				}
			}
		case "text":
			err = textFormat(raw, chat)
			e.Text = raw
		case "truncation":
			var s string
			if json.Unmarshal(raw, &s) != nil || (s != "disabled" && s != "auto") {
				return nil, errorf(name, `truncation must be "disabled" or "auto"`)
			}
			e.Truncation = raw
		default:
			if !ignored[name] {
				return nil, errorf(name, "unknown or unsupported field %q", name)
			}
		}
		if err != nil {
			return nil, err
		}
	}
	if e.Model == "" {
		return nil, errorf("model", "model is required")
	}
	if r.Input == nil {
		return nil, errorf("input", "input is required")
	}
	for _, items := range [][]json.RawMessage{history, r.Input} {
		msgs, err := Messages(items)
		if err != nil {
			return nil, err
		}
		messages = append(messages, msgs...)
	}
	chat["messages"] = messages
	r.Chat = mustJSON(chat)
	return r, nil
}

var null = json.RawMessage("null")

func boolField(raw json.RawMessage, name string, v *bool) error {
	if json.Unmarshal(raw, v) != nil {
		return errorf(name, "%s must be a boolean", name)
	}
	return nil
}

// inputItems turns input (a string, or an array of items) into items
// with ids.
func inputItems(raw json.RawMessage, newID func(string) string) ([]json.RawMessage, error) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return []json.RawMessage{mustJSON(map[string]any{"id": newID("msg_"), "type": "message", "role": "user",
			"content": []any{map[string]string{"type": "input_text", "text": s}}})}, nil
	}
	var items []map[string]json.RawMessage
	if json.Unmarshal(raw, &items) != nil {
		return nil, errorf("input", "input must be a string or an array of input items")
	}
	out := make([]json.RawMessage, 0, len(items))
	for i, it := range items {
		if it == nil {
			return nil, errorf(fmt.Sprintf("input[%d]", i), "input[%d] must be an object", i)
		}
		var typ string
		json.Unmarshal(it["type"], &typ)
		if typ == "" && len(it["role"]) > 0 {
			typ, it["type"] = "message", mustJSON("message")
		}
		if _, ok := it["id"]; !ok {
			prefix := map[string]string{"message": "msg_", "function_call": "fc_", "function_call_output": "fco_",
				"code_interpreter_call": "ci_"}[typ]
			if prefix == "" {
				prefix = "item_"
			}
			it["id"] = mustJSON(newID(prefix))
		}
		if typ == "message" {
			// A string content is a single input_text part, as OpenAI
			// lists it.
			var text string
			if json.Unmarshal(it["content"], &text) == nil {
				var role string
				json.Unmarshal(it["role"], &role)
				part := "input_text"
				if role == "assistant" {
					part = "output_text"
				}
				it["content"] = mustJSON([]any{map[string]any{"type": part, "text": text}})
			}
		}
		out = append(out, mustJSON(it))
	}
	return out, nil
}

// Messages turns items (input items, or the output items of earlier
// responses) into chat messages. A code_interpreter_call becomes
// codeexec's code_execution entry, which the tool loop turns into a
// function call and its result.
func Messages(items []json.RawMessage) ([]json.RawMessage, error) {
	var out []json.RawMessage
	for i, raw := range items {
		param := fmt.Sprintf("input[%d]", i)
		var it struct {
			Type      string          `json:"type"`
			Role      string          `json:"role"`
			Content   json.RawMessage `json:"content"`
			ID        string          `json:"id"`
			CallID    string          `json:"call_id"`
			Name      string          `json:"name"`
			Arguments string          `json:"arguments"`
			Output    json.RawMessage `json:"output"`
			Code      string          `json:"code"`
			Outputs   []struct {
				Type string `json:"type"`
				Logs string `json:"logs"`
			} `json:"outputs"`
			Action struct {
				Query string `json:"query"`
			} `json:"action"`
		}
		if err := json.Unmarshal(raw, &it); err != nil {
			return nil, errorf(param, "%s is not a valid input item: %v", param, err)
		}
		switch it.Type {
		case "message":
			m, err := message(param, it.Role, it.Content)
			if err != nil {
				return nil, err
			}
			out = append(out, m)
		case "function_call":
			if it.CallID == "" || it.Name == "" {
				return nil, errorf(param, "%s: a function_call needs call_id and name", param)
			}
			out = appendCall(out, map[string]any{"id": it.CallID, "type": "function",
				"function": map[string]string{"name": it.Name, "arguments": it.Arguments}})
		case "function_call_output":
			var text string
			if json.Unmarshal(it.Output, &text) != nil {
				text = string(it.Output) // an array of parts: the model gets its JSON
			}
			if it.CallID == "" {
				return nil, errorf(param, "%s: a function_call_output needs call_id", param)
			}
			out = append(out, mustJSON(map[string]string{"role": "tool", "tool_call_id": it.CallID, "content": text}))
		case "code_interpreter_call":
			var logs []string
			for _, o := range it.Outputs {
				if o.Type == "logs" {
					logs = append(logs, o.Logs)
				}
			}
			out = appendCall(out, map[string]any{"id": it.ID, "type": "code_execution",
				"code_execution": map[string]string{"code": it.Code, "output": strings.Join(logs, "\n")}})
		case "web_search_call":
			out = appendCall(out, map[string]any{"id": it.ID, "type": "web_search",
				"web_search": map[string]string{"query": it.Action.Query, "output": "[results not kept]"}})
		case "reasoning":
			// Nothing of it goes to a chat completions provider.
		default:
			return nil, errorf(param, "%s: input items of type %q are not supported", param, it.Type)
		}
	}
	return out, nil
}

// appendCall adds a tool call to the assistant message that ends out, or
// to a new one: the calls of one turn are one message.
func appendCall(out []json.RawMessage, call map[string]any) []json.RawMessage {
	if n := len(out); n > 0 {
		var m map[string]json.RawMessage
		var calls []json.RawMessage
		var role string
		if json.Unmarshal(out[n-1], &m) == nil && json.Unmarshal(m["role"], &role) == nil && role == "assistant" &&
			json.Unmarshal(m["tool_calls"], &calls) == nil && len(calls) > 0 {
			m["tool_calls"] = mustJSON(append(calls, mustJSON(call)))
			out[n-1] = mustJSON(m)
			return out
		}
	}
	return append(out, mustJSON(map[string]any{"role": "assistant", "content": nil, "tool_calls": []any{call}}))
}

// message turns a message item into a chat message: input_text and
// output_text parts into text, input_image into image_url, input_file
// into codeexec's file part (the file is placed in the sandbox).
func message(param, role string, content json.RawMessage) (json.RawMessage, error) {
	switch role {
	case "user", "assistant", "system":
	case "developer":
		role = "system"
	default:
		return nil, errorf(param+".role", "%s.role must be user, assistant, system or developer", param)
	}
	var parts []map[string]json.RawMessage
	if err := json.Unmarshal(content, &parts); err != nil {
		return nil, errorf(param+".content", "%s.content must be a string or an array of content parts", param)
	}
	var chat []any
	var text strings.Builder
	for j, p := range parts {
		var part struct {
			Type     string `json:"type"`
			Text     string `json:"text"`
			ImageURL string `json:"image_url"`
			FileID   string `json:"file_id"`
			Detail   string `json:"detail"`
		}
		json.Unmarshal(mustJSON(p), &part)
		pp := fmt.Sprintf("%s.content[%d]", param, j)
		switch part.Type {
		case "input_text", "output_text", "refusal":
			chat = append(chat, map[string]string{"type": "text", "text": part.Text})
			text.WriteString(part.Text)
		case "input_image":
			if part.ImageURL == "" {
				return nil, errorf(pp, "%s: give input_image an image_url (a URL or a data: URL); file_id images are not supported", pp)
			}
			img := map[string]string{"url": part.ImageURL}
			if part.Detail != "" {
				img["detail"] = part.Detail
			}
			chat = append(chat, map[string]any{"type": "image_url", "image_url": img})
		case "input_file":
			if part.FileID == "" {
				return nil, errorf(pp, "%s: give input_file a file_id (upload the file with POST /v1/files first)", pp)
			}
			chat = append(chat, map[string]any{"type": "file", "file": map[string]string{"file_id": part.FileID}})
		default:
			return nil, errorf(pp, "%s: content parts of type %q are not supported", pp, part.Type)
		}
	}
	if role != "user" {
		// Only user messages take parts everywhere; the others are text.
		return mustJSON(map[string]string{"role": role, "content": text.String()}), nil
	}
	return mustJSON(map[string]any{"role": role, "content": chat}), nil
}

// tools turns the Responses tools into chat tools.
func (r *Request) tools(raw json.RawMessage, chat map[string]any) error {
	var tools []map[string]json.RawMessage
	if json.Unmarshal(raw, &tools) != nil {
		return errorf("tools", "tools must be an array")
	}
	r.Echo.Tools = raw
	var out []any
	for i, t := range tools {
		param := fmt.Sprintf("tools[%d]", i)
		var typ string
		json.Unmarshal(t["type"], &typ)
		switch typ {
		case "code_interpreter", "code_execution":
			if r.Code != nil {
				return errorf(param, "%s: code_interpreter is given twice", param)
			}
			c, err := container(param, t["container"])
			if err != nil {
				return err
			}
			r.Code = c
			out = append(out, map[string]string{"type": "code_execution"})
		case "function":
			var fn struct {
				Name        string          `json:"name"`
				Description string          `json:"description"`
				Parameters  json.RawMessage `json:"parameters"`
				Strict      *bool           `json:"strict"`
			}
			if json.Unmarshal(mustJSON(t), &fn) != nil || fn.Name == "" {
				return errorf(param, "%s: a function tool needs a name", param)
			}
			f := map[string]any{"name": fn.Name}
			if fn.Description != "" {
				f["description"] = fn.Description
			}
			if len(fn.Parameters) > 0 && string(fn.Parameters) != "null" {
				f["parameters"] = fn.Parameters
			}
			if fn.Strict != nil {
				f["strict"] = *fn.Strict
			}
			out = append(out, map[string]any{"type": "function", "function": f})
		case "web_search", "web_search_preview":
			out = append(out, map[string]string{"type": "web_search"})
		default:
			return errorf(param, "%s: tools of type %q are not supported (code_interpreter, function and web_search are)", param, typ)
		}
	}
	if len(out) > 0 {
		chat["tools"] = out
	}
	return nil
}

// container reads code_interpreter's container: an id, or an object of
// type auto.
func container(param string, raw json.RawMessage) (*CodeTool, error) {
	c := &CodeTool{}
	if len(raw) == 0 || string(raw) == "null" {
		return c, nil // xAI's code_execution has none: auto
	}
	if json.Unmarshal(raw, &c.ContainerID) == nil {
		if c.ContainerID == "" {
			return nil, errorf(param+".container", "%s.container must be a container id or {\"type\": \"auto\"}", param)
		}
		return c, nil
	}
	var auto struct {
		Type        string   `json:"type"`
		FileIDs     []string `json:"file_ids"`
		MemoryLimit string   `json:"memory_limit"`
		// The sandbox's network is the server's egress policy.
		NetworkPolicy json.RawMessage `json:"network_policy"`
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&auto); err != nil || auto.Type != "auto" {
		return nil, errorf(param+".container", "%s.container must be a container id or {\"type\": \"auto\", \"file_ids\": [...], \"memory_limit\": \"1g\"}", param)
	}
	c.FileIDs, c.MemoryLimit = auto.FileIDs, auto.MemoryLimit
	return c, nil
}

// toolChoice turns a Responses tool_choice into the chat form.
func toolChoice(raw json.RawMessage) (any, error) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		if s != "auto" && s != "none" && s != "required" {
			return nil, errorf("tool_choice", `tool_choice must be "auto", "none", "required" or a tool`)
		}
		return s, nil
	}
	var tc struct {
		Type string `json:"type"`
		Name string `json:"name"`
	}
	if json.Unmarshal(raw, &tc) != nil {
		return nil, errorf("tool_choice", "tool_choice must be a string or an object")
	}
	switch tc.Type {
	case "function":
		if tc.Name == "" {
			return nil, errorf("tool_choice", "tool_choice of type function needs a name")
		}
		return map[string]any{"type": "function", "function": map[string]string{"name": tc.Name}}, nil
	case "code_interpreter", "code_execution":
		return map[string]string{"type": "code_interpreter"}, nil
	case "web_search", "web_search_preview":
		return map[string]string{"type": "web_search"}, nil
	}
	return nil, errorf("tool_choice", "tool_choice of type %q is not supported", tc.Type)
}

// textFormat turns text.format into the chat response_format.
func textFormat(raw json.RawMessage, chat map[string]any) error {
	var t struct {
		Format *struct {
			Type   string          `json:"type"`
			Name   string          `json:"name"`
			Schema json.RawMessage `json:"schema"`
			Strict *bool           `json:"strict"`
		} `json:"format"`
	}
	if json.Unmarshal(raw, &t) != nil {
		return errorf("text", "text must be an object")
	}
	if t.Format == nil {
		return nil
	}
	switch t.Format.Type {
	case "text":
	case "json_object":
		chat["response_format"] = map[string]string{"type": "json_object"}
	case "json_schema":
		js := map[string]any{"name": t.Format.Name, "schema": t.Format.Schema}
		if t.Format.Strict != nil {
			js["strict"] = *t.Format.Strict
		}
		chat["response_format"] = map[string]any{"type": "json_schema", "json_schema": js}
	default:
		return errorf("text.format", "text.format.type must be text, json_object or json_schema")
	}
	return nil
}

func mustJSON(v any) json.RawMessage {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic(err) // only values that always encode are passed
	}
	return bytes.TrimRight(buf.Bytes(), "\n")
}
