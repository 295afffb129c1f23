package fakellm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
	"time"

	"codeexec/internal/testenv"
	"codeexec/internal/upstream"
)

// --- helpers -------------------------------------------------------------

func codeTool() map[string]any {
	return map[string]any{"type": "function", "function": map[string]any{
		"name": "code_execution", "description": "Run Python in a sandbox.",
		"parameters": map[string]any{"type": "object", "properties": map[string]any{"code": map[string]any{"type": "string"}}, "required": []string{"code"}},
	}}
}

func searchTool() map[string]any {
	return map[string]any{"type": "function", "function": map[string]any{
		"name":       "web_search",
		"parameters": map[string]any{"type": "object", "properties": map[string]any{"query": map[string]any{"type": "string"}}, "required": []string{"query"}},
	}}
}

func weatherTool() map[string]any {
	return map[string]any{"type": "function", "function": map[string]any{
		"name":       "get_weather",
		"parameters": map[string]any{"type": "object", "properties": map[string]any{"city": map[string]any{"type": "string"}}},
	}}
}

type msg = map[string]any

func user(text string) msg { return msg{"role": "user", "content": text} }

func assistantCalls(calls ...ToolCall) msg {
	return msg{"role": "assistant", "content": nil, "tool_calls": calls}
}

func toolMsg(id, content string) msg {
	return msg{"role": "tool", "tool_call_id": id, "content": content}
}

func body(messages []msg, tools ...map[string]any) map[string]any {
	b := map[string]any{"model": "fake-model", "messages": messages}
	if len(tools) > 0 {
		b["tools"] = tools
	}
	return b
}

func post(t *testing.T, url string, b any) (int, http.Header, []byte) {
	t.Helper()
	data, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(url+"/v1/chat/completions", "application/json", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, out
}

type completionResp struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Model   string `json:"model"`
	Choices []struct {
		Message struct {
			Role      string     `json:"role"`
			Content   *string    `json:"content"`
			ToolCalls []ToolCall `json:"tool_calls"`
		} `json:"message"`
		FinishReason string `json:"finish_reason"`
	} `json:"choices"`
	Usage Usage `json:"usage"`
}

func complete(t *testing.T, url string, b any) completionResp {
	t.Helper()
	status, _, data := post(t, url, b)
	if status != http.StatusOK {
		t.Fatalf("status %d: %s", status, data)
	}
	var c completionResp
	if err := json.Unmarshal(data, &c); err != nil {
		t.Fatalf("decode %s: %v", data, err)
	}
	if c.Object != "chat.completion" || len(c.Choices) != 1 || c.Choices[0].Message.Role != "assistant" {
		t.Fatalf("bad completion: %s", data)
	}
	return c
}

func content(t *testing.T, c completionResp) string {
	t.Helper()
	m := c.Choices[0].Message
	if len(m.ToolCalls) > 0 || m.Content == nil || c.Choices[0].FinishReason != "stop" {
		t.Fatalf("want an answer, got tool calls %+v, finish %q", m.ToolCalls, c.Choices[0].FinishReason)
	}
	return *m.Content
}

func toolCalls(t *testing.T, c completionResp) []ToolCall {
	t.Helper()
	m := c.Choices[0].Message
	if len(m.ToolCalls) == 0 || c.Choices[0].FinishReason != "tool_calls" {
		content := ""
		if m.Content != nil {
			content = *m.Content
		}
		t.Fatalf("want tool calls, got content %q, finish %q", content, c.Choices[0].FinishReason)
	}
	for _, tc := range m.ToolCalls {
		if tc.Type != "function" || !strings.HasPrefix(tc.ID, "call_") {
			t.Fatalf("bad tool call %+v", tc)
		}
	}
	return m.ToolCalls
}

func codeOf(t *testing.T, tc ToolCall) string {
	t.Helper()
	if tc.Function.Name != CodeTool {
		t.Fatalf("want a code_execution call, got %+v", tc)
	}
	var args struct {
		Code string `json:"code"`
	}
	if err := json.Unmarshal([]byte(tc.Function.Arguments), &args); err != nil {
		t.Fatalf("arguments %q: %v", tc.Function.Arguments, err)
	}
	return args.Code
}

func newServer(t *testing.T, opts ...Option) (*Handler, string) {
	t.Helper()
	h := New(opts...)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return h, srv.URL
}

// --- scenarios -----------------------------------------------------------

const csvPrompt = "Analyze this CSV data and find trends:\nmonth,sales\n1,100\n2,120\n3,150"

func TestScenarios(t *testing.T) {
	_, url := newServer(t)
	cases := []struct {
		name, prompt, code, output, answer string
	}{
		{"interest", "Calculate the compound interest on $10,000 at 5% for 10 years", CompoundInterestCode, "16288.95\n",
			"The amount after 10 years is $16288.95."},
		{"fibonacci", "Calculate the first 20 Fibonacci numbers", FibonacciCode, "[0, 1, 1, 2, 3]\n",
			"The first 20 Fibonacci numbers are: [0, 1, 1, 2, 3]"},
		{"csv", csvPrompt, CSVCode("month,sales\n1,100\n2,120\n3,150"), "sales trend: increasing, mean change 25.0\n",
			"The analysis shows: sales trend: increasing, mean change 25.0"},
		{"trend without data", "Find the trend in my sales", CSVCode(DefaultCSV), "sales trend: increasing, mean change 25.0",
			"The analysis shows: sales trend: increasing, mean change 25.0"},
		{"chart", "Create a bar chart showing the top 5 programming languages by popularity", BarChartCode,
			"[image 1 was displayed to the user]\n", ChartAnswer},
		{"chart without image", "Create a bar chart of languages", BarChartCode, "[no output]", NoChartAnswer},
		{"attached", "Analyze the attached CSV [attached file: /mnt/data/sales.csv]", AttachedFileCode("/mnt/data/sales.csv"),
			"rows: 3, sales sum: 370\n", "Analysis of /mnt/data/sales.csv: rows: 3, sales sum: 370"},
		{"attached without path", "What is in the attached files?", ListFilesCode, "['a.csv']\n",
			"The files in /mnt/data are: ['a.csv']"},
		{"set variable", "Remember this: set x to 41", "x = 41\nprint('stored')", "stored\n", "I set x = 41 (output: stored)."},
		{"use variable", "What is x plus one?", "print(x + 1)", "42\n", "x plus one is 42."},
		{"failure", "Calculate the compound interest on $10,000", CompoundInterestCode,
			"Traceback (most recent call last):\n  File \"<cell>\", line 1, in <module>\nZeroDivisionError: division by zero\n",
			"The code failed: ZeroDivisionError: division by zero"},
		{"failure without exception line", "fibonacci please", FibonacciCode, "Error: the sandbox is gone\n",
			"The code failed: Error: the sandbox is gone"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			msgs := []msg{{"role": "system", "content": "You are helpful."}, user(tc.prompt)}
			calls := toolCalls(t, complete(t, url, body(msgs, codeTool())))
			if len(calls) != 1 {
				t.Fatalf("want 1 call, got %+v", calls)
			}
			if got := codeOf(t, calls[0]); got != tc.code {
				t.Fatalf("code:\n%s\nwant:\n%s", got, tc.code)
			}
			msgs = append(msgs, assistantCalls(calls[0]), toolMsg(calls[0].ID, tc.output))
			if got := content(t, complete(t, url, body(msgs, codeTool()))); got != tc.answer {
				t.Fatalf("answer %q, want %q", got, tc.answer)
			}
		})
	}
}

func TestPlainAndNoTools(t *testing.T) {
	_, url := newServer(t)
	if got := content(t, complete(t, url, body([]msg{user("Hello there")}, codeTool()))); got != PlainAnswer {
		t.Fatalf("plain: %q", got)
	}
	if got := content(t, complete(t, url, body([]msg{user("Calculate the first 20 Fibonacci numbers")}))); got != NoCodeTool {
		t.Fatalf("no tools: %q", got)
	}
	b := body([]msg{user("Calculate the first 20 Fibonacci numbers")}, codeTool())
	b["tool_choice"] = "none"
	if got := content(t, complete(t, url, b)); got != NoCodeTool {
		t.Fatalf("tool_choice none: %q", got)
	}
}

func TestContentParts(t *testing.T) {
	_, url := newServer(t)
	m := msg{"role": "user", "content": []any{
		map[string]any{"type": "text", "text": "Please analyze"},
		map[string]any{"type": "text", "text": "[attached file: /mnt/data/data.csv]"},
	}}
	calls := toolCalls(t, complete(t, url, body([]msg{m}, codeTool())))
	if got := codeOf(t, calls[0]); got != AttachedFileCode("/mnt/data/data.csv") {
		t.Fatalf("code %q", got)
	}
}

func TestAttachedPathFromNoteOrDescription(t *testing.T) {
	_, url := newServer(t)
	msgs := []msg{{"role": "system", "content": "Files: /mnt/data/report.csv."}, user("Summarize the attached file")}
	calls := toolCalls(t, complete(t, url, body(msgs, codeTool())))
	if got := codeOf(t, calls[0]); got != AttachedFileCode("/mnt/data/report.csv") {
		t.Fatalf("from system note: %q", got)
	}
	tool := codeTool()
	tool["function"].(map[string]any)["description"] = "Run Python. Files available: /mnt/data/x.csv, /mnt/data/y.csv."
	calls = toolCalls(t, complete(t, url, body([]msg{user("Summarize the attached file")}, tool)))
	if got := codeOf(t, calls[0]); got != AttachedFileCode("/mnt/data/x.csv") {
		t.Fatalf("from description: %q", got)
	}
}

func TestLoopForever(t *testing.T) {
	_, url := newServer(t)
	msgs := []msg{user("Please loop forever")}
	for i := 0; i < 4; i++ {
		calls := toolCalls(t, complete(t, url, body(msgs, codeTool())))
		if codeOf(t, calls[0]) != LoopCode {
			t.Fatalf("turn %d: %+v", i, calls)
		}
		msgs = append(msgs, assistantCalls(calls[0]), toolMsg(calls[0].ID, "again\n"))
	}
	if got := content(t, complete(t, url, body(msgs))); got != OutOfTurns {
		t.Fatalf("without tools: %q", got)
	}
}

func TestWeatherMixedTools(t *testing.T) {
	_, url := newServer(t)
	msgs := []msg{user("What's the weather in Paris, and what is 2+2?")}
	calls := toolCalls(t, complete(t, url, body(msgs, codeTool(), weatherTool())))
	if len(calls) != 2 || codeOf(t, calls[0]) != WeatherCode || calls[1].Function.Name != WeatherTool || calls[1].Function.Arguments != WeatherArgs {
		t.Fatalf("calls %+v", calls)
	}
	if calls[0].ID == calls[1].ID {
		t.Fatalf("ids repeat: %+v", calls)
	}
	// Tool results in the reverse order: the fake must match them by id.
	msgs = append(msgs, assistantCalls(calls...), toolMsg(calls[1].ID, "sunny, 21°C"), toolMsg(calls[0].ID, "4\n"))
	if got := content(t, complete(t, url, body(msgs, codeTool(), weatherTool()))); got != "Paris is sunny, 21°C and 2+2 is 4" {
		t.Fatalf("answer %q", got)
	}
}

func TestSearchThenCode(t *testing.T) {
	_, url := newServer(t)
	msgs := []msg{user("Search for Bitcoin price history and plot it")}
	calls := toolCalls(t, complete(t, url, body(msgs, searchTool(), codeTool())))
	if calls[0].Function.Name != SearchTool || calls[0].Function.Arguments != `{"query":"Bitcoin price history"}` {
		t.Fatalf("search call %+v", calls)
	}
	results := "1. Bitcoin history — https://example.com/btc\n   Price was 100 then 200\n"
	msgs = append(msgs, assistantCalls(calls[0]), toolMsg(calls[0].ID, results))
	calls = toolCalls(t, complete(t, url, body(msgs, searchTool(), codeTool())))
	if got := codeOf(t, calls[0]); got != SearchCode(results, true) {
		t.Fatalf("code %q", got)
	}
	msgs = append(msgs, assistantCalls(calls[0]), toolMsg(calls[0].ID, "2 lines of search results, 3 values plotted\n[image 1 was displayed to the user]\n"))
	got := content(t, complete(t, url, body(msgs, searchTool(), codeTool())))
	want := "Search found: 1. Bitcoin history — https://example.com/btc. Code output: 2 lines of search results, 3 values plotted\n[image 1 was displayed to the user]"
	if got != want {
		t.Fatalf("answer %q\nwant   %q", got, want)
	}
	// Without web_search offered the message is not the search scenario.
	if got := content(t, complete(t, url, body([]msg{user("Search for cats")}, codeTool()))); got != PlainAnswer {
		t.Fatalf("no web_search: %q", got)
	}
}

func TestSearchQuery(t *testing.T) {
	for in, want := range map[string]string{
		"Search for Bitcoin price history and plot it": "Bitcoin price history",
		"search the web for Go 1.26 release notes.":    "Go 1.26 release notes",
		"Please search cats":                           "Please search cats",
		"What does the search say?":                    "What does the search say?",
	} {
		if got := SearchQuery(in); got != want {
			t.Errorf("SearchQuery(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestExtractCSV(t *testing.T) {
	for in, want := range map[string]string{
		csvPrompt: "month,sales\n1,100\n2,120\n3,150",
		"Analyze this CSV data and find trends: month,sales\n1,100\n2,90\n\nThanks": "month,sales\n1,100\n2,90",
		"csv please": DefaultCSV,
	} {
		if got := extractCSV(in); got != want {
			t.Errorf("extractCSV(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestToolCallIDsCount(t *testing.T) {
	_, url := newServer(t)
	for i, want := range []string{"call_1", "call_2", "call_3"} {
		calls := toolCalls(t, complete(t, url, body([]msg{user("fibonacci")}, codeTool())))
		if calls[0].ID != want {
			t.Fatalf("request %d: id %q, want %q", i, calls[0].ID, want)
		}
	}
}

// --- streaming -----------------------------------------------------------

type sseChunk struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Choices []struct {
		Delta struct {
			Role      string  `json:"role"`
			Content   *string `json:"content"`
			ToolCalls []struct {
				Index    int    `json:"index"`
				ID       string `json:"id"`
				Type     string `json:"type"`
				Function struct {
					Name      *string `json:"name"`
					Arguments *string `json:"arguments"`
				} `json:"function"`
			} `json:"tool_calls"`
		} `json:"delta"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *Usage `json:"usage"`
}

// readSSE reads the data-only events of a stream, with the reader codeexec
// reads a provider's streams with, until [DONE]; it fails if [DONE] is
// missing or anything follows it.
func readSSE(t *testing.T, r io.Reader) []sseChunk {
	t.Helper()
	var chunks []sseChunk
	events := upstream.NewSSEReader(r)
	for {
		name, data, err := events.Next()
		if err != nil {
			t.Fatalf("stream ended without [DONE] (%v)", err)
		}
		if name != "" {
			t.Fatalf("unexpected event type %q", name)
		}
		if string(data) == "[DONE]" {
			if _, more, err := events.Next(); err != io.EOF {
				t.Fatalf("data after [DONE]: %q (%v)", more, err)
			}
			return chunks
		}
		var c sseChunk
		if err := json.Unmarshal(data, &c); err != nil {
			t.Fatalf("chunk %q: %v", data, err)
		}
		if c.Object != "chat.completion.chunk" {
			t.Fatalf("object %q", c.Object)
		}
		chunks = append(chunks, c)
	}
}

type assembled struct {
	role, content, finish string
	calls                 []ToolCall
	argDeltas             []int
	contentDeltas         int
	usage                 *Usage
}

func assemble(t *testing.T, chunks []sseChunk) assembled {
	t.Helper()
	var a assembled
	for i, c := range chunks {
		if c.Usage != nil {
			if len(c.Choices) != 0 || i != len(chunks)-1 {
				t.Fatalf("usage chunk %d of %d has %d choices", i, len(chunks), len(c.Choices))
			}
			a.usage = c.Usage
		}
		for _, ch := range c.Choices {
			d := ch.Delta
			if i == 0 && d.Role != "assistant" {
				t.Fatalf("first delta has role %q", d.Role)
			}
			if d.Role != "" {
				a.role = d.Role
			}
			if d.Content != nil && *d.Content != "" {
				a.content += *d.Content
				a.contentDeltas++
			}
			for _, tc := range d.ToolCalls {
				if tc.Index == len(a.calls) {
					if tc.ID == "" || tc.Type != "function" || tc.Function.Name == nil || tc.Function.Arguments == nil || *tc.Function.Arguments != "" {
						t.Fatalf("first delta of tool call %d incomplete: %+v", tc.Index, tc)
					}
					a.calls = append(a.calls, ToolCall{ID: tc.ID, Type: tc.Type, Function: FunctionCall{Name: *tc.Function.Name}})
					a.argDeltas = append(a.argDeltas, 0)
					continue
				}
				if tc.Index >= len(a.calls) || tc.ID != "" || tc.Function.Name != nil {
					t.Fatalf("bad tool call delta %+v", tc)
				}
				a.calls[tc.Index].Function.Arguments += *tc.Function.Arguments
				a.argDeltas[tc.Index]++
			}
			if ch.FinishReason != nil {
				a.finish = *ch.FinishReason
			}
		}
	}
	return a
}

func stream(t *testing.T, url string, b map[string]any, includeUsage bool) assembled {
	t.Helper()
	b["stream"] = true
	if includeUsage {
		b["stream_options"] = map[string]any{"include_usage": true}
	}
	data, _ := json.Marshal(b)
	resp, err := http.Post(url+"/chat/completions", "application/json", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		out, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d %s: %s", resp.StatusCode, resp.Header.Get("Content-Type"), out)
	}
	return assemble(t, readSSE(t, resp.Body))
}

func TestStreamingToolCalls(t *testing.T) {
	_, url := newServer(t)
	msgs := []msg{user("What's the weather in Paris?")}
	want := toolCalls(t, complete(t, url, body(msgs, codeTool(), weatherTool())))
	got := stream(t, url, body(msgs, codeTool(), weatherTool()), true)
	if got.finish != "tool_calls" || got.content != "" || len(got.calls) != len(want) {
		t.Fatalf("stream %+v", got)
	}
	for i := range want {
		if got.calls[i].Function != want[i].Function {
			t.Fatalf("call %d: %+v, want %+v", i, got.calls[i], want[i])
		}
		if got.argDeltas[i] < 3 {
			t.Fatalf("call %d: %d argument deltas, want 3+", i, got.argDeltas[i])
		}
	}
	if got.usage == nil || got.usage.TotalTokens != got.usage.PromptTokens+got.usage.CompletionTokens || got.usage.PromptTokens == 0 {
		t.Fatalf("usage %+v", got.usage)
	}

	// The streamed calls are a valid history for the next turn.
	msgs = append(msgs, assistantCalls(got.calls...), toolMsg(got.calls[0].ID, "4"), toolMsg(got.calls[1].ID, "rainy"))
	ans := stream(t, url, body(msgs, codeTool(), weatherTool()), false)
	if ans.content != "Paris is rainy and 2+2 is 4" || ans.finish != "stop" || ans.usage != nil || ans.contentDeltas < 3 {
		t.Fatalf("answer %+v", ans)
	}
}

func TestStreamingCodeArgumentsMatch(t *testing.T) {
	_, url := newServer(t)
	b := body([]msg{user(csvPrompt)}, codeTool())
	want := toolCalls(t, complete(t, url, b))
	got := stream(t, url, body([]msg{user(csvPrompt)}, codeTool()), true)
	if len(got.calls) != 1 || got.calls[0].Function != want[0].Function || codeOf(t, got.calls[0]) != CSVCode("month,sales\n1,100\n2,120\n3,150") {
		t.Fatalf("stream %+v, want %+v", got.calls, want)
	}
}

func TestStreamingUnicodeSplit(t *testing.T) {
	for _, s := range []string{"", "a", "ab", "abc", "héllo wörld ✓ 日本語 and more text to split"} {
		parts := split(s)
		if strings.Join(parts, "") != s {
			t.Fatalf("split(%q) = %q", s, parts)
		}
		if n := len([]rune(s)); n >= 3 && len(parts) < 3 {
			t.Fatalf("split(%q) gives %d parts", s, len(parts))
		}
		for _, p := range parts {
			if len([]rune(p)) > 8 {
				t.Fatalf("piece %q too long", p)
			}
		}
	}
}

// --- faults ---------------------------------------------------------------

func TestFaults(t *testing.T) {
	h, url := newServer(t, WithFaults(Fault{Status: 500}))
	h.QueueFaults(Fault{Status: 429, RetryAfter: "0"}, Fault{Malformed: true}, Fault{Malformed: true})
	b := body([]msg{user("fibonacci")}, codeTool())

	status, _, data := post(t, url, b)
	var e struct {
		Error APIError `json:"error"`
	}
	if status != 500 || json.Unmarshal(data, &e) != nil || e.Error.Message == "" || e.Error.Type != "server_error" {
		t.Fatalf("500: %d %s", status, data)
	}
	status, hdr, data := post(t, url, b)
	if status != 429 || hdr.Get("Retry-After") != "0" || json.Unmarshal(data, &e) != nil || e.Error.Message == "" {
		t.Fatalf("429: %d %v %s", status, hdr, data)
	}
	status, hdr, data = post(t, url, b)
	if status != 200 || hdr.Get("Content-Type") != "application/json" || json.Valid(data) {
		t.Fatalf("malformed: %d %s", status, data)
	}
	// Malformed while streaming: an event whose data is not JSON.
	sb := body([]msg{user("fibonacci")}, codeTool())
	sb["stream"] = true
	status, _, data = post(t, url, sb)
	_, first, err := upstream.NewSSEReader(bytes.NewReader(data)).Next()
	if status != 200 || err != nil || json.Valid(first) {
		t.Fatalf("malformed stream: %d %q", status, data)
	}
	if h.PendingFaults() != 0 {
		t.Fatalf("%d faults left", h.PendingFaults())
	}
	// Faults used up: normal again.
	toolCalls(t, complete(t, url, b))
	if n := len(h.Requests()); n != 5 {
		t.Fatalf("%d requests recorded, want 5", n)
	}
}

func TestFaultDelay(t *testing.T) {
	h, url := newServer(t)
	h.QueueFaults(Fault{Delay: 5 * time.Second})
	data, _ := json.Marshal(body([]msg{user("fibonacci")}, codeTool()))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", url+"/chat/completions", bytes.NewReader(data))
	start := time.Now()
	_, err := http.DefaultClient.Do(req)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("want a timeout, got %v", err)
	}
	if time.Since(start) > 2*time.Second {
		t.Fatal("the delay did not end with the client")
	}
	// A short delay, then the normal answer.
	h.QueueFaults(Fault{Delay: 20 * time.Millisecond})
	start = time.Now()
	toolCalls(t, complete(t, url, body([]msg{user("fibonacci")}, codeTool())))
	if time.Since(start) < 20*time.Millisecond {
		t.Fatal("no delay")
	}
}

// --- validation ------------------------------------------------------------

func TestValidation(t *testing.T) {
	_, url := newServer(t)
	call := ToolCall{ID: "call_9", Type: "function", Function: FunctionCall{Name: "code_execution", Arguments: `{"code":"print(1)"}`}}
	unconverted := msg{"role": "assistant", "content": nil, "tool_calls": []any{map[string]any{
		"id": "call_9", "type": "code_execution", "code_execution": map[string]any{"code": "print(1)", "output": "1\n"}}}}
	cases := []struct {
		name  string
		body  map[string]any
		param string
	}{
		{"unconverted code_execution entry", body([]msg{user("fibonacci"), unconverted, toolMsg("call_9", "1")}, codeTool()), "messages.[1].tool_calls.[0].type"},
		{"tool without matching id", body([]msg{user("fibonacci"), assistantCalls(call), toolMsg("call_8", "1")}, codeTool()), "messages.[2].role"},
		{"tool without assistant", body([]msg{user("fibonacci"), toolMsg("call_9", "1")}, codeTool()), "messages.[1].role"},
		{"unanswered tool call", body([]msg{user("fibonacci"), assistantCalls(call), user("and?")}, codeTool()), "messages.[2].role"},
		{"unanswered at the end", body([]msg{user("fibonacci"), assistantCalls(call)}, codeTool()), "messages.[2].role"},
		{"non-function tool", body([]msg{user("fibonacci")}, map[string]any{"type": "code_execution"}), "tools[0].type"},
		{"no model", map[string]any{"messages": []msg{user("hi")}}, "model"},
		{"no messages", map[string]any{"model": "m"}, "messages"},
		{"bad role", body([]msg{{"role": "robot", "content": "hi"}}), "messages.[0].role"},
		{"tool_choice without tools", func() map[string]any {
			b := body([]msg{user("hi")})
			b["tool_choice"] = "auto"
			return b
		}(), "tool_choice"},
		{"parallel_tool_calls without tools", func() map[string]any {
			b := body([]msg{user("hi")})
			b["parallel_tool_calls"] = true
			return b
		}(), "parallel_tool_calls"},
		{"stream_options without stream", func() map[string]any {
			b := body([]msg{user("hi")})
			b["stream_options"] = map[string]any{"include_usage": true}
			return b
		}(), "stream_options"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, _, data := post(t, url, tc.body)
			var e struct {
				Error APIError `json:"error"`
			}
			if status != 400 || json.Unmarshal(data, &e) != nil || e.Error.Type != "invalid_request_error" || e.Error.Param == nil || *e.Error.Param != tc.param {
				t.Fatalf("%d %s", status, data)
			}
		})
	}
	resp, err := http.Post(url+"/chat/completions", "application/json", strings.NewReader(`{"model": "m", "messages": [`))
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if status := resp.StatusCode; status != 400 || !strings.Contains(string(data), "parse the JSON") {
		t.Fatalf("bad JSON: %d %s", resp.StatusCode, data)
	}
	// The converted form of the same history is accepted.
	ok := body([]msg{user("fibonacci"), assistantCalls(call), toolMsg("call_9", "[0, 1]")}, codeTool())
	if got := content(t, complete(t, url, ok)); got != "The first 20 Fibonacci numbers are: [0, 1]" {
		t.Fatalf("converted history: %q", got)
	}
	// WithoutValidation lets anything through.
	_, lenient := newServer(t, WithoutValidation())
	if got := content(t, complete(t, lenient, body([]msg{user("fibonacci"), toolMsg("call_9", "1")}))); got == "" {
		t.Fatal("lenient answer empty")
	}
}

// --- recording, models, auth, usage ---------------------------------------

func TestRequestsRecorded(t *testing.T) {
	h, url := newServer(t)
	b := body([]msg{user("fibonacci")}, codeTool())
	b["temperature"] = 0.5
	complete(t, url, b)
	complete(t, url, body([]msg{user("hi")}))
	reqs := h.DecodedRequests()
	if len(reqs) != 2 || len(h.Requests()) != 2 || len(h.Headers()) != 2 {
		t.Fatalf("%d requests", len(reqs))
	}
	if got := reqs[0].ToolNames(); len(got) != 1 || got[0] != CodeTool || !reqs[0].Offers(CodeTool) {
		t.Fatalf("tools %v", got)
	}
	if string(reqs[0].Fields["temperature"]) != "0.5" || reqs[1].Tools != nil || reqs[1].Messages[0].Text() != "hi" {
		t.Fatalf("decoded %+v %+v", reqs[0], reqs[1])
	}
	h.Reset()
	if len(h.Requests()) != 0 {
		t.Fatal("Reset kept requests")
	}
}

func TestModelsAndAuth(t *testing.T) {
	_, url := newServer(t, WithAPIKey("sk-test"), WithModels("m1", "m2"))
	get := func(key string) (int, []byte) {
		req, _ := http.NewRequest("GET", url+"/v1/models", nil)
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, data
	}
	if status, data := get("wrong"); status != 401 || !strings.Contains(string(data), "invalid_api_key") {
		t.Fatalf("wrong key: %d %s", status, data)
	}
	status, data := get("sk-test")
	var list struct {
		Object string `json:"object"`
		Data   []struct {
			ID     string `json:"id"`
			Object string `json:"object"`
		} `json:"data"`
	}
	if status != 200 || json.Unmarshal(data, &list) != nil || list.Object != "list" || len(list.Data) != 2 || list.Data[1].ID != "m2" {
		t.Fatalf("models: %d %s", status, data)
	}
	if status, _, _ := post(t, url, body([]msg{user("hi")})); status != 401 {
		t.Fatalf("chat without key: %d", status)
	}
}

func TestUsage(t *testing.T) {
	_, url := newServer(t)
	b := body([]msg{user(strings.Repeat("x", 400))})
	c := complete(t, url, b)
	want := Usage{PromptTokens: 100, CompletionTokens: len(PlainAnswer) / 4}
	want.TotalTokens = want.PromptTokens + want.CompletionTokens
	if c.Usage != want {
		t.Fatalf("usage %+v, want %+v", c.Usage, want)
	}
	data, _ := json.Marshal(b)
	if u, err := UsageFor(data); err != nil || u != want {
		t.Fatalf("UsageFor %+v %v", u, err)
	}
}

// --- the code is valid Python ------------------------------------------------

// pyDriver compiles every code it reads (a JSON list of [code, run]) and
// runs those marked run, printing a JSON list of their stdout.
const pyDriver = `
import contextlib, io, json, sys
outs = []
for code, run in json.load(sys.stdin):
    compiled = compile(code, "cell", "exec")
    buf = io.StringIO()
    if run:
        with contextlib.redirect_stdout(buf):
            exec(compiled, {})
    outs.append(buf.getvalue())
print(json.dumps(outs))
`

// TestPythonCode compiles every scenario's code, and runs the code that
// needs no third-party library, when python3 is installed (one process).
func TestPythonCode(t *testing.T) {
	py := testenv.Python(t)
	type job struct {
		code string
		run  bool
		want string
	}
	jobs := []job{
		{code: BarChartCode},
		{code: ListFilesCode},
		{code: CSVCode(DefaultCSV + "\n\"quoted\"\"\\,x")},
		{code: AttachedFileCode("/mnt/data/it's.csv")},
		{code: SearchCode("a \"b\"\n\\n 1.5\n", true)},
		{CompoundInterestCode, true, "16288.95\n"},
		{FibonacciCode, true, "[0, 1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610, 987, 1597, 2584, 4181]\n"},
		{SetVariableCode("x", "41") + "\n" + UseVariableCode("x", 1), true, "stored\n42\n"},
		{WeatherCode, true, "4\n"},
		{LoopCode, true, "again\n"},
		{SearchCode("1. a\n\n   b — c\n", false), true, "2 lines of search results\n"},
	}
	var in [][2]any
	for _, j := range jobs {
		in = append(in, [2]any{j.code, j.run})
	}
	data, _ := json.Marshal(in)
	cmd := exec.Command(py, "-c", pyDriver)
	cmd.Stdin = bytes.NewReader(data)
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("python3: %v\n%s", err, stderr)
	}
	var got []string
	if err := json.Unmarshal(out, &got); err != nil || len(got) != len(jobs) {
		t.Fatalf("driver output %q: %v", out, err)
	}
	for i, j := range jobs {
		if got[i] != j.want {
			t.Errorf("%s\nprinted %q, want %q", j.code, got[i], j.want)
		}
	}
}
