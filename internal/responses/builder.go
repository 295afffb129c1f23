package responses

import (
	"encoding/json"
	"path"
	"strings"
	"time"
)

// Response is a Responses API response object.
type Response struct {
	ID                 string            `json:"id"`
	Object             string            `json:"object"`
	CreatedAt          int64             `json:"created_at"`
	Status             string            `json:"status"`
	Error              *ResponseError    `json:"error"`
	IncompleteDetails  *json.RawMessage  `json:"incomplete_details"`
	Instructions       json.RawMessage   `json:"instructions"`
	MaxOutputTokens    json.RawMessage   `json:"max_output_tokens"`
	Model              string            `json:"model"`
	Output             []json.RawMessage `json:"output"`
	ParallelToolCalls  json.RawMessage   `json:"parallel_tool_calls"`
	PreviousResponseID *string           `json:"previous_response_id"`
	Reasoning          json.RawMessage   `json:"reasoning"`
	Store              bool              `json:"store"`
	Temperature        json.RawMessage   `json:"temperature"`
	Text               json.RawMessage   `json:"text"`
	ToolChoice         json.RawMessage   `json:"tool_choice"`
	Tools              json.RawMessage   `json:"tools"`
	TopP               json.RawMessage   `json:"top_p"`
	Truncation         json.RawMessage   `json:"truncation"`
	Usage              *Usage            `json:"usage"`
	User               json.RawMessage   `json:"user,omitempty"`
	Metadata           json.RawMessage   `json:"metadata"`
}

// ResponseError is a failed response's error.
type ResponseError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Usage is a response's token counts, summed over its model calls.
type Usage struct {
	InputTokens         int            `json:"input_tokens"`
	InputTokensDetails  map[string]int `json:"input_tokens_details"`
	OutputTokens        int            `json:"output_tokens"`
	OutputTokensDetails map[string]int `json:"output_tokens_details"`
	TotalTokens         int            `json:"total_tokens"`
}

// Builder builds a response from the tool loop's chat.completion.chunks,
// and, when emit is set, sends its streaming events as it goes.
type Builder struct {
	resp    Response
	emit    func(event string, data []byte) error
	newID   func(prefix string) string
	include bool
	// ContainerID is the container the code runs in; set it before the
	// first execution.
	ContainerID string

	seq     int
	items   []*item       // every output item, in order
	text    *item         // the message item being written, if any
	calls   map[int]*item // chat tool_calls index -> its item
	files   []citation    // files the code created, for the last message
	err     error         // the first failed emit
	finish  string
	usage   *Usage
	started bool
}

// item is an output item being built.
type item struct {
	index int
	v     map[string]any
	text  strings.Builder // a message's text, or a function call's arguments
	logs  string
	imgs  []string
}

type citation struct {
	fileID, filename string
}

// NewBuilder starts the response id of r. emit (nil for a response that
// is not streamed) gets each event's type and JSON.
func NewBuilder(id string, r *Request, previousID string, newID func(string) string, emit func(string, []byte) error) *Builder {
	e := r.Echo
	b := &Builder{emit: emit, newID: newID, include: r.IncludeOutputs, calls: map[int]*item{}}
	b.resp = Response{ID: id, Object: "response", CreatedAt: time.Now().Unix(), Status: "in_progress",
		Instructions: e.Instructions, MaxOutputTokens: e.MaxOutputTokens, Model: e.Model, Output: []json.RawMessage{},
		ParallelToolCalls: e.ParallelToolCalls, Reasoning: mustJSON(map[string]any{"effort": nil, "summary": nil}),
		Store: r.Store, Temperature: e.Temperature, Text: e.Text, ToolChoice: e.ToolChoice, Tools: e.Tools,
		TopP: e.TopP, Truncation: e.Truncation, User: e.User, Metadata: e.Metadata}
	if previousID != "" {
		b.resp.PreviousResponseID = &previousID
	}
	return b
}

// Start sends response.created and response.in_progress.
func (b *Builder) Start() error {
	b.started = true
	b.send("response.created", map[string]any{"response": b.resp})
	b.send("response.in_progress", map[string]any{"response": b.resp})
	return b.err
}

func (b *Builder) send(event string, v map[string]any) {
	if b.emit == nil || b.err != nil {
		return
	}
	v["type"] = event
	v["sequence_number"] = b.seq
	b.seq++
	b.err = b.emit(event, mustJSON(v))
}

// chunk is what Builder reads of a chat.completion.chunk.
type chunk struct {
	Choices []struct {
		Delta struct {
			Content   *string `json:"content"`
			ToolCalls []struct {
				Index         int    `json:"index"`
				ID            string `json:"id"`
				Type          string `json:"type"`
				CodeExecution *struct {
					Code     *string          `json:"code"`
					Output   *string          `json:"output"`
					Status   string           `json:"status"`
					Displays []map[string]any `json:"displays"`
					Files    []map[string]any `json:"files"`
				} `json:"code_execution"`
				WebSearch *struct {
					Query string `json:"query"`
				} `json:"web_search"`
				Function *struct {
					Name      string `json:"name"`
					Arguments string `json:"arguments"`
				} `json:"function"`
			} `json:"tool_calls"`
		} `json:"delta"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
		TotalTokens      int `json:"total_tokens"`
	} `json:"usage"`
}

// Chunk reads one chat.completion.chunk of the tool loop.
func (b *Builder) Chunk(data []byte) error {
	var c chunk
	if err := json.Unmarshal(data, &c); err != nil {
		return err
	}
	if u := c.Usage; u != nil {
		b.usage = &Usage{InputTokens: u.PromptTokens, OutputTokens: u.CompletionTokens, TotalTokens: u.TotalTokens,
			InputTokensDetails: map[string]int{"cached_tokens": 0}, OutputTokensDetails: map[string]int{"reasoning_tokens": 0}}
	}
	for _, ch := range c.Choices {
		if t := ch.Delta.Content; t != nil && *t != "" {
			b.textDelta(*t)
		}
		for _, tc := range ch.Delta.ToolCalls {
			switch {
			case tc.CodeExecution != nil && tc.CodeExecution.Code != nil:
				b.closeText()
				b.codeStart(tc.Index, tc.ID, *tc.CodeExecution.Code)
			case tc.CodeExecution != nil:
				ce := tc.CodeExecution
				out := ""
				if ce.Output != nil {
					out = *ce.Output
				}
				b.codeDone(tc.Index, ce.Status, out, ce.Displays, ce.Files)
			case tc.WebSearch != nil:
				b.closeText()
				b.search(tc.ID, tc.WebSearch.Query)
			case tc.Function != nil:
				b.closeText()
				b.functionCall(tc.ID, tc.Function.Name, tc.Function.Arguments)
			}
		}
		if ch.FinishReason != nil {
			b.finish = *ch.FinishReason
		}
	}
	return b.err
}

func (b *Builder) add(v map[string]any) *item {
	it := &item{index: len(b.items), v: v}
	b.items = append(b.items, it)
	b.send("response.output_item.added", map[string]any{"output_index": it.index, "item": v})
	return it
}

func (b *Builder) textDelta(t string) {
	if b.text == nil {
		b.text = b.add(map[string]any{"id": b.newID("msg_"), "type": "message", "status": "in_progress",
			"role": "assistant", "content": []any{}})
		b.send("response.content_part.added", map[string]any{"item_id": b.text.v["id"], "output_index": b.text.index,
			"content_index": 0, "part": map[string]any{"type": "output_text", "text": "", "annotations": []any{}}})
	}
	if t == "" {
		return
	}
	b.text.text.WriteString(t)
	b.send("response.output_text.delta", map[string]any{"item_id": b.text.v["id"], "output_index": b.text.index,
		"content_index": 0, "delta": t, "logprobs": []any{}})
}

// closeText ends the message being written (a tool call follows it, or
// the response ends), with the annotations ann.
func (b *Builder) closeText(ann ...any) {
	it := b.text
	if it == nil {
		return
	}
	b.text = nil
	text := it.text.String()
	if ann == nil {
		ann = []any{}
	}
	part := map[string]any{"type": "output_text", "text": text, "annotations": ann, "logprobs": []any{}}
	b.send("response.output_text.done", map[string]any{"item_id": it.v["id"], "output_index": it.index,
		"content_index": 0, "text": text, "logprobs": []any{}})
	b.send("response.content_part.done", map[string]any{"item_id": it.v["id"], "output_index": it.index,
		"content_index": 0, "part": part})
	it.v["status"], it.v["content"] = "completed", []any{part}
	b.send("response.output_item.done", map[string]any{"output_index": it.index, "item": it.v})
}

func (b *Builder) codeStart(index int, id, code string) {
	it := b.add(map[string]any{"id": "ci_" + strings.TrimPrefix(id, "call_"), "type": "code_interpreter_call",
		"status": "in_progress", "code": "", "container_id": b.ContainerID, "outputs": nil})
	b.calls[index] = it
	ids := map[string]any{"item_id": it.v["id"], "output_index": it.index}
	b.send("response.code_interpreter_call.in_progress", with(ids, nil))
	b.send("response.code_interpreter_call_code.delta", with(ids, map[string]any{"delta": code}))
	b.send("response.code_interpreter_call_code.done", with(ids, map[string]any{"code": code}))
	it.v["code"], it.v["status"] = code, "interpreting"
	b.send("response.code_interpreter_call.interpreting", with(ids, nil))
}

func (b *Builder) codeDone(index int, status, out string, displays, files []map[string]any) {
	it := b.calls[index]
	if it == nil {
		return
	}
	it.logs = out
	for _, d := range displays {
		if png, ok := d["image/png"].(string); ok {
			it.imgs = append(it.imgs, "data:image/png;base64,"+png)
		}
	}
	for _, f := range files {
		id, _ := f["id"].(string)
		p, _ := f["path"].(string)
		if id != "" {
			b.files = append(b.files, citation{fileID: id, filename: p})
		}
	}
	it.v["status"] = "completed"
	if status == "killed" {
		it.v["status"] = "incomplete"
	}
	it.v["outputs"] = b.outputs(it)
	ids := map[string]any{"item_id": it.v["id"], "output_index": it.index}
	b.send("response.code_interpreter_call.completed", ids)
	b.send("response.output_item.done", map[string]any{"output_index": it.index, "item": it.v})
}

// outputs is a code_interpreter_call's outputs as the response shows
// them: null unless the request included them.
func (b *Builder) outputs(it *item) any {
	if !b.include {
		return nil
	}
	return fullOutputs(it)
}

func fullOutputs(it *item) []any {
	out := []any{map[string]string{"type": "logs", "logs": it.logs}}
	for _, u := range it.imgs {
		out = append(out, map[string]string{"type": "image", "url": u})
	}
	return out
}

func (b *Builder) search(id, query string) {
	it := b.add(map[string]any{"id": "ws_" + strings.TrimPrefix(id, "call_"), "type": "web_search_call", "status": "in_progress",
		"action": map[string]any{"type": "search", "query": query}})
	ids := map[string]any{"item_id": it.v["id"], "output_index": it.index}
	b.send("response.web_search_call.in_progress", ids)
	b.send("response.web_search_call.searching", ids)
	b.send("response.web_search_call.completed", ids)
	it.v["status"] = "completed"
	b.send("response.output_item.done", map[string]any{"output_index": it.index, "item": it.v})
}

func (b *Builder) functionCall(callID, name, args string) {
	it := b.add(map[string]any{"id": b.newID("fc_"), "type": "function_call", "status": "in_progress",
		"call_id": callID, "name": name, "arguments": ""})
	ids := map[string]any{"item_id": it.v["id"], "output_index": it.index}
	b.send("response.function_call_arguments.delta", with(ids, map[string]any{"delta": args}))
	b.send("response.function_call_arguments.done", with(ids, map[string]any{"arguments": args, "name": name}))
	it.v["arguments"], it.v["status"] = args, "completed"
	b.send("response.output_item.done", map[string]any{"output_index": it.index, "item": it.v})
}

func with(a, b map[string]any) map[string]any {
	m := make(map[string]any, len(a)+len(b))
	for k, v := range a {
		m[k] = v
	}
	for k, v := range b {
		m[k] = v
	}
	return m
}

// Finish ends the response: completed, incomplete (the model ran out of
// output tokens) or, with fail set, failed with that error. It sends the
// last events and returns the response and its items as a conversation
// that follows it must see them (code outputs always kept).
func (b *Builder) Finish(fail *ResponseError) (*Response, []json.RawMessage) {
	b.closeTextWithCitations()
	r := &b.resp
	r.Usage = b.usage
	if r.Usage == nil {
		r.Usage = &Usage{InputTokensDetails: map[string]int{"cached_tokens": 0}, OutputTokensDetails: map[string]int{"reasoning_tokens": 0}}
	}
	var history []json.RawMessage
	for _, it := range b.items {
		if it.v["status"] == "in_progress" || it.v["status"] == "interpreting" {
			it.v["status"] = "incomplete"
		}
		r.Output = append(r.Output, mustJSON(it.v))
		if it.v["type"] == "code_interpreter_call" {
			h := with(it.v, map[string]any{"outputs": fullOutputs(it)})
			history = append(history, mustJSON(h))
		} else {
			history = append(history, mustJSON(it.v))
		}
	}
	event := "response.completed"
	switch {
	case fail != nil:
		r.Status, r.Error, event = "failed", fail, "response.failed"
	case b.finish == "length" || b.finish == "content_filter":
		reason := "max_output_tokens"
		if b.finish == "content_filter" {
			reason = "content_filter"
		}
		d := mustJSON(map[string]string{"reason": reason})
		r.Status, r.IncompleteDetails, event = "incomplete", &d, "response.incomplete"
	default:
		r.Status = "completed"
	}
	if b.started {
		b.send(event, map[string]any{"response": r})
	}
	return r, history
}

// closeTextWithCitations ends the last message, citing each file the
// code created: where its name appears in the text, else at its end.
func (b *Builder) closeTextWithCitations() {
	it := b.text
	if it == nil {
		if len(b.files) == 0 {
			return
		}
		// Files but no closing words: a message that only cites them.
		b.textDelta("")
		it = b.text
	}
	text := it.text.String()
	var ann []any
	for _, f := range b.files {
		start, end := len(text), len(text)
		if i := strings.Index(text, f.filename); i >= 0 {
			start, end = i, i+len(f.filename)
		} else if i := strings.Index(text, path.Base(f.filename)); i >= 0 {
			start, end = i, i+len(path.Base(f.filename))
		}
		a := map[string]any{"type": "container_file_citation", "container_id": b.ContainerID, "file_id": f.fileID,
			"filename": path.Base(f.filename), "start_index": start, "end_index": end}
		ann = append(ann, a)
		b.send("response.output_text.annotation.added", map[string]any{"item_id": it.v["id"], "output_index": it.index,
			"content_index": 0, "annotation_index": len(ann) - 1, "annotation": a})
	}
	b.files = nil
	b.closeText(ann...)
}

// OutputText is the text of the response's messages, joined: what the
// SDKs call output_text.
func OutputText(r *Response) string {
	var b strings.Builder
	for _, raw := range r.Output {
		var it struct {
			Type    string `json:"type"`
			Content []struct {
				Type string `json:"type"`
				Text string `json:"text"`
			} `json:"content"`
		}
		if json.Unmarshal(raw, &it) == nil && it.Type == "message" {
			for _, c := range it.Content {
				if c.Type == "output_text" {
					b.WriteString(c.Text)
				}
			}
		}
	}
	return b.String()
}
