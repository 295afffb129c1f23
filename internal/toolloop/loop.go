package toolloop

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"codeexec/internal/executor"
	"codeexec/internal/ids"
)

// Model is the upstream provider (upstream.Client implements it).
type Model interface {
	Chat(ctx context.Context, body []byte) ([]byte, error)
	ChatStream(ctx context.Context, body []byte, onChunk func(data []byte) error) error
}

// Sandbox runs the code of one request; all its executions share state.
type Sandbox interface {
	Run(ctx context.Context, code string) (*executor.Result, error)
}

// Searcher is a web search provider.
type Searcher interface {
	Search(ctx context.Context, query string) ([]SearchResult, error)
}

// SearchResult is one hit of a web search.
type SearchResult struct {
	Title   string `json:"title"`
	URL     string `json:"url"`
	Snippet string `json:"snippet,omitempty"`
}

// Loop runs requests against one model. Zero fields of its settings get
// defaults.
type Loop struct {
	Model  Model
	Search Searcher // nil: web_search is not available
	// MaxTurns bounds the model calls that may use tools (default 10);
	// TimeBudget bounds the time for them (default 5 minutes), counted
	// from the start of the request: each tool call gets what is left as
	// its deadline, and calls of a turn that find it spent are not started
	// (their results say so). When either is spent the model is asked for
	// its answer without tools.
	MaxTurns   int
	TimeBudget time.Duration
	// OutputBudget is the most characters of one tool's output the model
	// is shown (default 12,000); the cut is marked.
	OutputBudget int
}

func (l *Loop) defaults() (int, time.Duration, int) {
	turns, budget, out := l.MaxTurns, l.TimeBudget, l.OutputBudget
	if turns <= 0 {
		turns = 10
	}
	if budget <= 0 {
		budget = 5 * time.Minute
	}
	if out <= 0 {
		out = 12_000
	}
	return turns, budget, out
}

// ErrSearchUnavailable is returned for web_search when no provider is
// configured.
var ErrSearchUnavailable = errors.New("web_search is not available: no search provider is configured on this server (set CODEEXEC_SEARXNG_URL)")

// usage sums the token counts of every upstream call.
type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

func (u *usage) add(raw json.RawMessage) {
	var v usage
	if json.Unmarshal(raw, &v) == nil {
		u.PromptTokens += v.PromptTokens
		u.CompletionTokens += v.CompletionTokens
		u.TotalTokens += v.TotalTokens
	}
}

// call is a tool call of the model.
type call struct {
	ID, Name, Args string
}

// turnResult is one upstream call's outcome.
type turnResult struct {
	content string
	calls   []call
	finish  string
	usage   json.RawMessage
	resp    map[string]json.RawMessage // non-streaming: the whole response
	id      string
	model   json.RawMessage
	created json.RawMessage
}

// Run answers req. sb runs code (it may be nil when code_execution is not
// enabled). With emit set (a streaming request) it sends each
// chat.completion.chunk as it is ready and returns nil; otherwise it
// returns the chat.completion.
func (l *Loop) Run(ctx context.Context, req *Request, sb Sandbox, description string, emit func([]byte) error) (json.RawMessage, error) {
	if req.Search && l.Search == nil {
		return nil, ErrSearchUnavailable
	}
	maxTurns, budget, outBudget := l.defaults()
	// Tools run under toolCtx, the model's calls under ctx: the answer
	// after the budget is spent still needs one.
	toolCtx, cancel := context.WithTimeoutCause(ctx, budget, errBudgetSpent)
	defer cancel()
	st := &state{req: req, emit: emit}
	msgs := append([]json.RawMessage(nil), req.Messages...)
	for n := 0; ; n++ {
		withTools := n < maxTurns && toolCtx.Err() == nil
		if !withTools && n > 0 {
			msgs = noMoreTools(msgs)
		}
		t, err := l.turn(ctx, req, msgs, withTools, description, st)
		if err != nil {
			return nil, err
		}
		st.total.add(t.usage)
		st.last = t
		var ours, theirs []call
		for i, c := range t.calls {
			if c.ID == "" {
				c.ID = ids.New("call_")
				t.calls[i] = c
			}
			if (c.Name == CodeTool && req.Code != nil) || (c.Name == SearchTool && req.Search) {
				ours = append(ours, c)
			} else {
				theirs = append(theirs, c)
			}
		}
		if !withTools || len(t.calls) == 0 {
			return st.finish(t.content, nil, "stop")
		}
		msgs = append(msgs, assistantMessage(t.content, t.calls))
		for _, c := range ours {
			if c.Name == CodeTool {
				st.begin(c.ID, codeArg(c.Args))
			}
			entry, output, err := l.runTool(toolCtx, c, sb, outBudget)
			if err != nil {
				return nil, err
			}
			st.entry(entry)
			msgs = append(msgs, mustJSON(map[string]string{"role": "tool", "tool_call_id": c.ID, "content": output}))
		}
		if len(theirs) > 0 {
			return st.finish(t.content, theirs, "tool_calls")
		}
	}
}

// errBudgetSpent is the cause of the tool context's end when the time
// budget is spent; an execution it cancels reports it in its output.
var errBudgetSpent = errors.New("the time budget for this request's tool calls is spent")

// notRunNote is the result of a tool call that the time budget left no
// time for.
const notRunNote = "Error: the time budget for this request's tool calls is spent; this call was not run."

// budgetSpent reports whether ctx ended because the time budget is spent
// (and not because the request was cancelled).
func budgetSpent(ctx context.Context) bool {
	return errors.Is(context.Cause(ctx), errBudgetSpent)
}

// noMoreToolsNote tells the model that the turn or time budget is spent.
const noMoreToolsNote = "[You have used all the tool calls available for this request. Answer now, without tools, with what you have.]"

// noMoreTools adds noMoreToolsNote to the conversation for the final call
// without tools. The note goes at the end of the last tool result (the
// loop only goes on after running tools, so that is the last message)
// rather than in a message of its own: a made-up "user" message would
// become the latest user turn, which models answer ("OK, I will answer
// without tools") instead of the user's real question, and a late
// "system" message is refused by some chat templates. Only when the last
// message is not a tool result (which the loop never produces) does the
// note go in a user message.
func noMoreTools(msgs []json.RawMessage) []json.RawMessage {
	if n := len(msgs); n > 0 {
		var m map[string]json.RawMessage
		var role, content string
		if json.Unmarshal(msgs[n-1], &m) == nil && json.Unmarshal(m["role"], &role) == nil && role == "tool" &&
			json.Unmarshal(m["content"], &content) == nil {
			m["content"] = mustJSON(content + "\n\n" + noMoreToolsNote)
			out := append([]json.RawMessage(nil), msgs[:n-1]...)
			return append(out, mustJSON(m))
		}
	}
	return append(msgs, mustJSON(map[string]string{"role": "user", "content": noMoreToolsNote}))
}

func assistantMessage(content string, calls []call) json.RawMessage {
	var tc []map[string]any
	for _, c := range calls {
		tc = append(tc, map[string]any{"id": c.ID, "type": "function", "function": map[string]string{"name": c.Name, "arguments": c.Args}})
	}
	m := map[string]any{"role": "assistant", "tool_calls": tc}
	if content != "" {
		m["content"] = content
	} else {
		m["content"] = nil
	}
	return mustJSON(m)
}

// body builds the upstream request for one turn.
func (l *Loop) body(req *Request, msgs []json.RawMessage, withTools, stream bool, description string) []byte {
	b := make(map[string]json.RawMessage, len(req.Body)+2)
	for k, v := range req.Body {
		b[k] = v
	}
	b["messages"] = mustJSON(msgs)
	tools := append(append([]json.RawMessage(nil), req.ClientTools...), req.toolDefs(description)...)
	if withTools && len(tools) > 0 {
		b["tools"] = mustJSON(tools)
		if tc, ok := b["tool_choice"]; ok {
			b["tool_choice"] = convertToolChoice(tc)
		}
	} else {
		delete(b, "tools")
		delete(b, "tool_choice")
		delete(b, "parallel_tool_calls")
	}
	if stream {
		b["stream"] = mustJSON(true)
		b["stream_options"] = mustJSON(map[string]bool{"include_usage": true})
	} else {
		delete(b, "stream")
		delete(b, "stream_options")
	}
	return mustJSON(b)
}

// convertToolChoice turns {"type":"code_execution"} into the function form.
func convertToolChoice(raw json.RawMessage) json.RawMessage {
	var tc struct {
		Type string `json:"type"`
	}
	if json.Unmarshal(raw, &tc) == nil {
		switch tc.Type {
		case "code_execution", "code_interpreter":
			return mustJSON(map[string]any{"type": "function", "function": map[string]string{"name": CodeTool}})
		case "web_search":
			return mustJSON(map[string]any{"type": "function", "function": map[string]string{"name": SearchTool}})
		}
	}
	return raw
}

// turn makes one upstream call, streaming content deltas to st when the
// client streams.
func (l *Loop) turn(ctx context.Context, req *Request, msgs []json.RawMessage, withTools bool, description string, st *state) (*turnResult, error) {
	body := l.body(req, msgs, withTools, st.emit != nil, description)
	if st.emit == nil {
		data, err := l.Model.Chat(ctx, body)
		if err != nil {
			return nil, err
		}
		return parseCompletion(data)
	}
	t := &turnResult{}
	acc := map[int]*call{}
	var order []int
	err := l.Model.ChatStream(ctx, body, func(data []byte) error {
		var ch wireResponse
		if err := json.Unmarshal(data, &ch); err != nil {
			return &upstreamProtocolError{"the model's stream sent a malformed chunk"}
		}
		if t.id == "" {
			t.id, t.model, t.created = ch.ID, ch.Model, ch.Created
			st.meta(t)
		}
		if len(ch.Usage) > 0 && string(ch.Usage) != "null" {
			t.usage = ch.Usage
		}
		for _, c := range ch.Choices {
			if c.Delta.Content != nil && *c.Delta.Content != "" {
				t.content += *c.Delta.Content
				if err := st.content(*c.Delta.Content); err != nil {
					return err
				}
			}
			for _, tc := range c.Delta.ToolCalls {
				a := acc[tc.Index]
				if a == nil {
					a = &call{}
					acc[tc.Index] = a
					order = append(order, tc.Index)
				}
				if tc.ID != "" {
					a.ID = tc.ID
				}
				a.Name += tc.Function.Name
				a.Args += tc.Function.Arguments
			}
			if c.FinishReason != nil {
				t.finish = *c.FinishReason
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, i := range order {
		t.calls = append(t.calls, *acc[i])
	}
	return t, nil
}

// wireResponse is what the loop reads of a chat.completion or of a
// chat.completion.chunk (choices carry a message or a delta).
type wireResponse struct {
	ID      string          `json:"id"`
	Model   json.RawMessage `json:"model"`
	Created json.RawMessage `json:"created"`
	Usage   json.RawMessage `json:"usage"`
	Choices []struct {
		Message      wireMessage `json:"message"`
		Delta        wireMessage `json:"delta"`
		FinishReason *string     `json:"finish_reason"`
	} `json:"choices"`
}

type wireMessage struct {
	Content   *string `json:"content"`
	ToolCalls []struct {
		Index    int    `json:"index"` // chunks only
		ID       string `json:"id"`
		Function struct {
			Name      string `json:"name"`
			Arguments string `json:"arguments"`
		} `json:"function"`
	} `json:"tool_calls"`
}

// upstreamProtocolError is a malformed answer of the model provider.
type upstreamProtocolError struct{ msg string }

func (e *upstreamProtocolError) Error() string { return e.msg }

// IsUpstreamProtocolError reports whether err is a malformed upstream answer.
func IsUpstreamProtocolError(err error) bool {
	var e *upstreamProtocolError
	return errors.As(err, &e)
}

func parseCompletion(data []byte) (*turnResult, error) {
	var resp map[string]json.RawMessage
	if err := json.Unmarshal(data, &resp); err != nil {
		return nil, &upstreamProtocolError{"the model's answer is not a JSON object"}
	}
	var v wireResponse
	if err := json.Unmarshal(data, &v); err != nil || len(v.Choices) == 0 {
		return nil, &upstreamProtocolError{"the model's answer has no choices"}
	}
	c := v.Choices[0]
	t := &turnResult{usage: resp["usage"], resp: resp, id: v.ID, model: v.Model, created: v.Created}
	if c.FinishReason != nil {
		t.finish = *c.FinishReason
	}
	if c.Message.Content != nil {
		t.content = *c.Message.Content
	}
	for _, tc := range c.Message.ToolCalls {
		t.calls = append(t.calls, call{ID: tc.ID, Name: tc.Function.Name, Args: tc.Function.Arguments})
	}
	return t, nil
}

// runTool runs one server-side call and returns its entry and the text the
// model is shown. Failures of the code are output, not errors; an error
// means the service failed. A call that the time budget (the end of ctx)
// leaves no time for is not started, or if it was, ends with ctx; its
// result says so.
func (l *Loop) runTool(ctx context.Context, c call, sb Sandbox, budget int) (ExecutionEntry, string, error) {
	if c.Name == SearchTool {
		var args struct {
			Query string `json:"query"`
		}
		if json.Unmarshal([]byte(c.Args), &args) != nil || strings.TrimSpace(args.Query) == "" {
			out := `Error: web_search needs JSON arguments {"query": "..."}`
			return ExecutionEntry{ID: c.ID, Type: SearchTool, WebSearch: &WebSearch{Output: out}}, out, nil
		}
		var results []SearchResult
		out := notRunNote
		if !budgetSpent(ctx) {
			var err error
			results, err = l.Search.Search(ctx, args.Query)
			out = formatSearch(results, err, budget)
		}
		return ExecutionEntry{ID: c.ID, Type: SearchTool, WebSearch: &WebSearch{Query: args.Query, Output: out, Results: results}}, out, nil
	}
	code := codeArg(c.Args)
	entry := ExecutionEntry{ID: c.ID, Type: CodeTool, CodeExecution: &CodeExecution{Code: code}}
	if budgetSpent(ctx) {
		entry.CodeExecution.Output, entry.CodeExecution.Status = notRunNote, string(executor.StatusKilled)
		return entry, notRunNote, nil
	}
	res, err := sb.Run(ctx, code)
	if err != nil && budgetSpent(ctx) {
		// Still waiting for a sandbox or its turn: it never ran.
		entry.CodeExecution.Output, entry.CodeExecution.Status = notRunNote, string(executor.StatusKilled)
		return entry, notRunNote, nil
	}
	if err != nil {
		var ie *executor.InputError
		if !errors.As(err, &ie) {
			return entry, "", err
		}
		out := "Error: " + ie.Msg
		entry.CodeExecution.Output, entry.CodeExecution.Status = out, "error"
		return entry, out, nil
	}
	out := FormatOutput(res, budget)
	ce := entry.CodeExecution
	ce.Output, ce.Status = out, string(res.Status)
	for _, d := range res.Displays {
		ce.Displays = append(ce.Displays, map[string]any(d))
	}
	for _, f := range res.Files {
		ce.Files = append(ce.Files, map[string]any{"id": f.ID, "path": f.Path, "bytes": f.Bytes, "mime_type": f.MIMEType})
	}
	return entry, out, nil
}

// codeArg takes the code out of the call's arguments; a model that sent
// the code itself instead of a JSON object still gets it run.
func codeArg(args string) string {
	var v struct {
		Code *string `json:"code"`
	}
	if json.Unmarshal([]byte(args), &v) == nil && v.Code != nil {
		return *v.Code
	}
	return args
}

// FormatOutput is what the model is shown of an execution: stdout, then
// stderr, then the result or the error, then a note per image and file,
// cut to budget characters with a marker.
func FormatOutput(res *executor.Result, budget int) string {
	var b strings.Builder
	b.WriteString(res.Stdout)
	if res.Stderr != "" {
		if b.Len() > 0 && !strings.HasSuffix(b.String(), "\n") {
			b.WriteString("\n")
		}
		b.WriteString("[stderr]\n" + res.Stderr)
	}
	if t, ok := res.Result["text/plain"].(string); ok {
		if b.Len() > 0 && !strings.HasSuffix(b.String(), "\n") {
			b.WriteString("\n")
		}
		b.WriteString(t + "\n")
	}
	if res.Error != nil {
		if b.Len() > 0 && !strings.HasSuffix(b.String(), "\n") {
			b.WriteString("\n")
		}
		if res.Error.Traceback != "" {
			b.WriteString(res.Error.Traceback)
		} else {
			fmt.Fprintf(&b, "%s: %s\n", res.Error.Name, res.Error.Value)
		}
	}
	out := b.String()
	if len(out) > budget {
		out = out[:budget] + fmt.Sprintf("\n[output truncated: %d more characters not shown]\n", len(out)-budget)
	}
	var notes strings.Builder
	images := 0
	for _, d := range res.Displays {
		if _, ok := d["image/png"]; ok {
			images++
			fmt.Fprintf(&notes, "[image %d was displayed to the user]\n", images)
		} else if t, ok := d["text/plain"].(string); ok && len(t) < 2000 {
			notes.WriteString(t + "\n")
		}
	}
	for _, f := range res.Files {
		fmt.Fprintf(&notes, "[file /mnt/data/%s (%d bytes) is available to the user]\n", f.Path, f.Bytes)
	}
	if res.Status != executor.StatusOK && res.Status != executor.StatusError && res.Error != nil {
		fmt.Fprintf(&notes, "[execution stopped: %s]\n", res.Error.Value)
	}
	if res.Truncated.Stdout || res.Truncated.Stderr {
		notes.WriteString("[output was cut at the output limit]\n")
	}
	out += notes.String()
	if out == "" {
		out = "[no output]"
	}
	return out
}

func formatSearch(results []SearchResult, err error, budget int) string {
	if err != nil {
		return "Error: the search failed: " + err.Error()
	}
	if len(results) == 0 {
		return "No results."
	}
	var b strings.Builder
	for i, r := range results {
		fmt.Fprintf(&b, "%d. %s — %s\n", i+1, r.Title, r.URL)
		if r.Snippet != "" {
			fmt.Fprintf(&b, "   %s\n", r.Snippet)
		}
	}
	out := b.String()
	if len(out) > budget {
		out = out[:budget] + "\n[results truncated]\n"
	}
	return out
}
