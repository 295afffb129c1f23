package responses

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func seqID() func(string) string {
	n := 0
	return func(prefix string) string { n++; return fmt.Sprintf("%s%d", prefix, n) }
}

// chatOf parses r.Chat.
func chatOf(t *testing.T, r *Request) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.Chat, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestParse(t *testing.T) {
	body := `{"model": "m", "instructions": "Be brief.", "max_output_tokens": 50, "temperature": 0.2,
		"input": [
			{"role": "user", "content": "hi"},
			{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "see "}, {"type": "input_file", "file_id": "file-1"}, {"type": "input_image", "image_url": "data:image/png;base64,AA"}]},
			{"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
			{"type": "function_call_output", "call_id": "c1", "output": "42"}
		],
		"tools": [{"type": "code_interpreter", "container": {"type": "auto", "file_ids": ["file-2"], "memory_limit": "4g"}},
			{"type": "function", "name": "f", "parameters": {"type": "object"}}],
		"tool_choice": {"type": "function", "name": "f"},
		"include": ["code_interpreter_call.outputs"], "store": false}`
	r, err := Parse([]byte(body), nil, seqID())
	if err != nil {
		t.Fatal(err)
	}
	if r.Code == nil || r.Code.MemoryLimit != "4g" || len(r.Code.FileIDs) != 1 || r.Store || !r.IncludeOutputs {
		t.Errorf("request = %+v", r)
	}
	chat := chatOf(t, r)
	want := map[string]any{
		"model": "m", "max_tokens": 50.0, "temperature": 0.2, "stream": true,
		"stream_options": map[string]any{"include_usage": true},
		"tool_choice":    map[string]any{"type": "function", "function": map[string]any{"name": "f"}},
		"tools": []any{map[string]any{"type": "code_execution"},
			map[string]any{"type": "function", "function": map[string]any{"name": "f", "parameters": map[string]any{"type": "object"}}}},
		"messages": []any{
			map[string]any{"role": "system", "content": "Be brief."},
			map[string]any{"role": "user", "content": []any{map[string]any{"type": "text", "text": "hi"}}},
			map[string]any{"role": "user", "content": []any{map[string]any{"type": "text", "text": "see "},
				map[string]any{"type": "file", "file": map[string]any{"file_id": "file-1"}},
				map[string]any{"type": "image_url", "image_url": map[string]any{"url": "data:image/png;base64,AA"}}}},
			map[string]any{"role": "assistant", "content": nil, "tool_calls": []any{map[string]any{"id": "c1", "type": "function",
				"function": map[string]any{"name": "f", "arguments": "{}"}}}},
			map[string]any{"role": "tool", "tool_call_id": "c1", "content": "42"},
		},
	}
	if diff := cmp.Diff(want, chat); diff != "" {
		t.Errorf("chat body (-want +got):\n%s", diff)
	}
	if len(r.Input) != 4 || !strings.Contains(string(r.Input[0]), `"id":"msg_1"`) {
		t.Errorf("input items = %s", r.Input)
	}
}

func TestParseHistory(t *testing.T) {
	history := []json.RawMessage{
		json.RawMessage(`{"id":"msg_a","type":"message","role":"user","content":[{"type":"input_text","text":"compute"}]}`),
		json.RawMessage(`{"id":"ci_1","type":"code_interpreter_call","status":"completed","code":"print(1)","container_id":"sess_1","outputs":[{"type":"logs","logs":"1\n"}]}`),
		json.RawMessage(`{"id":"msg_b","type":"message","role":"assistant","status":"completed","content":[{"type":"output_text","text":"It is 1.","annotations":[]}]}`),
	}
	r, err := Parse([]byte(`{"model":"m","input":"and again"}`), history, seqID())
	if err != nil {
		t.Fatal(err)
	}
	msgs := chatOf(t, r)["messages"].([]any)
	want := []any{
		map[string]any{"role": "user", "content": []any{map[string]any{"type": "text", "text": "compute"}}},
		map[string]any{"role": "assistant", "content": nil, "tool_calls": []any{map[string]any{"id": "ci_1", "type": "code_execution",
			"code_execution": map[string]any{"code": "print(1)", "output": "1\n"}}}},
		map[string]any{"role": "assistant", "content": "It is 1."},
		map[string]any{"role": "user", "content": []any{map[string]any{"type": "text", "text": "and again"}}},
	}
	if diff := cmp.Diff(want, msgs); diff != "" {
		t.Errorf("messages (-want +got):\n%s", diff)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tt := range []struct{ body, param string }{
		{`[]`, ""},
		{`{"input":"x"}`, "model"},
		{`{"model":"m"}`, "input"},
		{`{"model":"m","input":"x","background":true}`, "background"},
		{`{"model":"m","input":"x","frobnicate":1}`, "frobnicate"},
		{`{"model":"m","input":"x","tools":[{"type":"mcp"}]}`, "tools[0]"},
		{`{"model":"m","input":"x","tools":[{"type":"code_interpreter","container":{"type":"manual"}}]}`, "tools[0].container"},
		{`{"model":"m","input":"x","tool_choice":"sometimes"}`, "tool_choice"},
		{`{"model":"m","input":[{"type":"message","role":"user","content":[{"type":"input_file","file_data":"..."}]}]}`, "input[0].content[0]"},
		{`{"model":"m","input":[{"type":"message","role":"robot","content":"x"}]}`, "input[0].role"},
		{`{"model":"m","input":[{"type":"item_reference","id":"x"}]}`, "input[0]"},
		{`{"model":"m","input":"x","max_output_tokens":0}`, "max_output_tokens"},
		{`{"model":"m","input":"x","text":{"format":{"type":"xml"}}}`, "text.format"},
	} {
		_, err := Parse([]byte(tt.body), nil, seqID())
		e, ok := err.(*Error)
		if !ok || e.Param != tt.param {
			t.Errorf("Parse(%s) = %v, want an error on %q", tt.body, err, tt.param)
		}
	}
}

// The builder turns the loop's chunks into OpenAI's items and events:
// text before a tool call is a message of its own, code is announced
// before its output, a created file is cited in the last message, and an
// answer cut by the token limit is incomplete.
func TestBuilder(t *testing.T) {
	r, err := Parse([]byte(`{"model":"m","input":"x","include":["code_interpreter_call.outputs"]}`), nil, seqID())
	if err != nil {
		t.Fatal(err)
	}
	var events []string
	b := NewBuilder("resp_1", r, "", seqID(), func(ev string, data []byte) error {
		var v map[string]any
		json.Unmarshal(data, &v)
		if v["type"] != ev {
			t.Errorf("event %s has type %v", ev, v["type"])
		}
		events = append(events, ev)
		return nil
	})
	b.ContainerID = "sess_1"
	b.Start()
	chunks := []string{
		`{"choices":[{"delta":{"role":"assistant","content":"Let me plot."}}]}`,
		`{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"call_7","type":"code_execution","code_execution":{"code":"plot()"}}]}}]}`,
		`{"choices":[{"delta":{"tool_calls":[{"index":0,"code_execution":{"output":"done\n","status":"ok","displays":[{"image/png":"iVBO"}],"files":[{"id":"file-9","path":"plot.png","bytes":3}]}}]}}]}`,
		`{"choices":[{"delta":{"content":"See plot.png"}}]}`,
		`{"choices":[{"delta":{},"finish_reason":"length"}]}`,
		`{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}`,
	}
	for _, c := range chunks {
		if err := b.Chunk([]byte(c)); err != nil {
			t.Fatal(err)
		}
	}
	resp, history := b.Finish(nil)
	wantEvents := []string{"response.created", "response.in_progress",
		"response.output_item.added", "response.content_part.added", "response.output_text.delta",
		"response.output_text.done", "response.content_part.done", "response.output_item.done",
		"response.output_item.added", "response.code_interpreter_call.in_progress", "response.code_interpreter_call_code.delta",
		"response.code_interpreter_call_code.done", "response.code_interpreter_call.interpreting",
		"response.code_interpreter_call.completed", "response.output_item.done",
		"response.output_item.added", "response.content_part.added", "response.output_text.delta",
		"response.output_text.annotation.added", "response.output_text.done", "response.content_part.done",
		"response.output_item.done", "response.incomplete"}
	if diff := cmp.Diff(wantEvents, events); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	if resp.Status != "incomplete" || resp.IncompleteDetails == nil || !strings.Contains(string(*resp.IncompleteDetails), "max_output_tokens") {
		t.Errorf("status %q details %v", resp.Status, resp.IncompleteDetails)
	}
	if resp.Usage.InputTokens != 3 || resp.Usage.OutputTokens != 4 || resp.Usage.TotalTokens != 7 {
		t.Errorf("usage = %+v", resp.Usage)
	}
	if len(resp.Output) != 3 || len(history) != 3 {
		t.Fatalf("output = %s", resp.Output)
	}
	var ci, msg map[string]any
	json.Unmarshal(resp.Output[1], &ci)
	json.Unmarshal(resp.Output[2], &msg)
	wantCI := map[string]any{"id": "ci_7", "type": "code_interpreter_call", "status": "completed", "code": "plot()",
		"container_id": "sess_1", "outputs": []any{map[string]any{"type": "logs", "logs": "done\n"},
			map[string]any{"type": "image", "url": "data:image/png;base64,iVBO"}}}
	if diff := cmp.Diff(wantCI, ci); diff != "" {
		t.Errorf("code_interpreter_call (-want +got):\n%s", diff)
	}
	ann := msg["content"].([]any)[0].(map[string]any)["annotations"].([]any)
	wantAnn := []any{map[string]any{"type": "container_file_citation", "container_id": "sess_1", "file_id": "file-9",
		"filename": "plot.png", "start_index": 4.0, "end_index": 12.0}}
	if diff := cmp.Diff(wantAnn, ann); diff != "" {
		t.Errorf("annotations (-want +got):\n%s", diff)
	}
	if OutputText(resp) != "Let me plot.See plot.png" {
		t.Errorf("OutputText = %q", OutputText(resp))
	}
}

// Without include, outputs are null in the response but kept in the
// history a following response sees.
func TestBuilderOutputsNotIncluded(t *testing.T) {
	r, _ := Parse([]byte(`{"model":"m","input":"x"}`), nil, seqID())
	b := NewBuilder("resp_1", r, "", seqID(), nil)
	b.Chunk([]byte(`{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"code_execution","code_execution":{"code":"1"}}]}}]}`))
	b.Chunk([]byte(`{"choices":[{"delta":{"tool_calls":[{"index":0,"code_execution":{"output":"1\n","status":"ok"}}]}}]}`))
	resp, history := b.Finish(nil)
	if !strings.Contains(string(resp.Output[0]), `"outputs":null`) {
		t.Errorf("output = %s, want outputs null", resp.Output[0])
	}
	if !strings.Contains(string(history[0]), `"logs":"1\n"`) {
		t.Errorf("history = %s, want the logs", history[0])
	}
}
