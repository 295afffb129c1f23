package fakellm

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// Request is a decoded chat completions request body.
type Request struct {
	Model             string          `json:"model"`
	Messages          []Message       `json:"messages"`
	Tools             []Tool          `json:"tools,omitempty"`
	ToolChoice        json.RawMessage `json:"tool_choice,omitempty"`
	ParallelToolCalls *bool           `json:"parallel_tool_calls,omitempty"`
	Stream            bool            `json:"stream,omitempty"`
	StreamOptions     *StreamOptions  `json:"stream_options,omitempty"`

	// Fields holds every top-level field of the body as sent, including
	// the ones above (to check that unknown fields were passed through).
	Fields map[string]json.RawMessage `json:"-"`
}

// StreamOptions is the stream_options field.
type StreamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

// Message is one chat message.
type Message struct {
	Role       string          `json:"role"`
	Content    json.RawMessage `json:"content,omitempty"`
	Name       string          `json:"name,omitempty"`
	ToolCalls  []ToolCall      `json:"tool_calls,omitempty"`
	ToolCallID string          `json:"tool_call_id,omitempty"`
}

// ToolCall is an assistant message's tool call. An entry that is not of
// type "function" (like codeexec's own code_execution entries) decodes with
// an empty Function and fails Validate.
type ToolCall struct {
	ID       string       `json:"id"`
	Type     string       `json:"type"`
	Function FunctionCall `json:"function"`
}

// FunctionCall is the function of a ToolCall; Arguments is a JSON text
// encoded as a string, as OpenAI sends it.
type FunctionCall struct {
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

// Tool is an entry of the tools field.
type Tool struct {
	Type     string       `json:"type"`
	Function *FunctionDef `json:"function,omitempty"`
}

// FunctionDef is a function tool's definition.
type FunctionDef struct {
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	Parameters  json.RawMessage `json:"parameters,omitempty"`
}

// Decode parses a chat completions request body.
func Decode(body []byte) (*Request, error) {
	var r Request
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(body, &r.Fields); err != nil {
		return nil, err
	}
	return &r, nil
}

// Text is the message's text: the content string, or its text parts
// joined by newlines.
func (m Message) Text() string {
	return contentText(m.Content)
}

func contentText(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if json.Unmarshal(raw, &parts) != nil {
		return ""
	}
	var texts []string
	for _, p := range parts {
		if p.Type == "text" || p.Type == "input_text" {
			texts = append(texts, p.Text)
		}
	}
	return strings.Join(texts, "\n")
}

// ToolNames lists the names of the function tools offered, in order.
func (r *Request) ToolNames() []string {
	var names []string
	for _, t := range r.Tools {
		if t.Function != nil {
			names = append(names, t.Function.Name)
		}
	}
	return names
}

// Offers reports whether the model may call the function tool name: it is
// in tools and tool_choice is not "none".
func (r *Request) Offers(name string) bool {
	if strings.TrimSpace(string(r.ToolChoice)) == `"none"` {
		return false
	}
	for _, t := range r.Tools {
		if t.Type == "function" && t.Function != nil && t.Function.Name == name {
			return true
		}
	}
	return false
}

var knownRoles = map[string]bool{"system": true, "developer": true, "user": true, "assistant": true, "tool": true}

func invalid(param, format string, args ...any) *APIError {
	e := &APIError{Message: fmt.Sprintf(format, args...), Type: "invalid_request_error"}
	if param != "" {
		e.Param = &param
	}
	return e
}

// Validate checks r like a strict provider does and returns the error it
// would answer with 400, or nil:
//   - model and messages are required, each message has a known role;
//   - every tools entry has type "function" and a function name;
//   - tool_choice and parallel_tool_calls only with tools, stream_options
//     only with stream;
//   - every assistant tool_calls entry has an id, type "function", a name;
//   - a "tool" message answers a tool_call_id of the assistant message
//     right before it (only tool messages in between), and every tool call
//     of an assistant message is answered before the next other message.
func (r *Request) Validate() *APIError {
	if r.Model == "" {
		return invalid("model", "you must provide a model parameter")
	}
	if len(r.Messages) == 0 {
		return invalid("messages", "[] is too short - 'messages'")
	}
	for i, t := range r.Tools {
		if t.Type != "function" {
			return invalid(fmt.Sprintf("tools[%d].type", i), "Invalid value: '%s'. Supported values are: 'function' and 'custom'.", t.Type)
		}
		if t.Function == nil || t.Function.Name == "" {
			return invalid(fmt.Sprintf("tools[%d].function.name", i), "Missing required parameter: 'tools[%d].function.name'.", i)
		}
	}
	if len(r.Tools) == 0 {
		if len(r.ToolChoice) > 0 && string(r.ToolChoice) != "null" {
			return invalid("tool_choice", "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.")
		}
		if r.ParallelToolCalls != nil {
			return invalid("parallel_tool_calls", "Invalid value for 'parallel_tool_calls': 'parallel_tool_calls' is only allowed when 'tools' are specified.")
		}
	}
	if r.StreamOptions != nil && !r.Stream {
		return invalid("stream_options", "The 'stream_options' parameter is only allowed when 'stream' is enabled.")
	}

	var pending []string     // tool call ids of the last assistant message not yet answered
	var open map[string]bool // ids of the assistant message the current tool messages answer
	unanswered := func(i int) *APIError {
		if len(pending) == 0 {
			return nil
		}
		return invalid(fmt.Sprintf("messages.[%d].role", i), "An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. The following tool_call_ids did not have response messages: %s", strings.Join(pending, ", "))
	}
	for i, m := range r.Messages {
		if !knownRoles[m.Role] {
			return invalid(fmt.Sprintf("messages.[%d].role", i), "Invalid value: '%s'. Supported values are: 'system', 'assistant', 'user', 'tool', and 'developer'.", m.Role)
		}
		if m.Role == "tool" {
			if m.ToolCallID == "" {
				return invalid(fmt.Sprintf("messages.[%d].tool_call_id", i), "Missing parameter 'tool_call_id': messages with role 'tool' must have a 'tool_call_id'.")
			}
			if open == nil || !open[m.ToolCallID] {
				return invalid(fmt.Sprintf("messages.[%d].role", i), "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'.")
			}
			for j, id := range pending {
				if id == m.ToolCallID {
					pending = slices.Delete(pending, j, j+1)
					break
				}
			}
			continue
		}
		if err := unanswered(i); err != nil {
			return err
		}
		open = nil
		if m.Role != "assistant" {
			if len(m.ToolCalls) > 0 {
				return invalid(fmt.Sprintf("messages.[%d].tool_calls", i), "Only assistant messages may have 'tool_calls'.")
			}
			continue
		}
		if len(m.ToolCalls) == 0 {
			continue
		}
		open = map[string]bool{}
		for j, tc := range m.ToolCalls {
			p := fmt.Sprintf("messages.[%d].tool_calls.[%d]", i, j)
			if tc.Type != "function" {
				return invalid(p+".type", "Invalid value: '%s'. Supported values are: 'function' and 'custom'.", tc.Type)
			}
			if tc.ID == "" {
				return invalid(p+".id", "Missing required parameter: '%s.id'.", p)
			}
			if tc.Function.Name == "" {
				return invalid(p+".function.name", "Missing required parameter: '%s.function.name'.", p)
			}
			open[tc.ID] = true
			pending = append(pending, tc.ID)
		}
	}
	return unanswered(len(r.Messages))
}
