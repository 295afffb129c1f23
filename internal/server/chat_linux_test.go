package server_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"image/png"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/packages/param"

	"codeexec/internal/config"
	"codeexec/internal/fakellm"
)

// These tests run a real codeexec (startService) in front of fakellm, the
// scripted model, and a fake SearXNG, both on 127.0.0.1 httptest servers.
// Each subtest gets a fake model of its own, reached through one upstream
// URL by the model name of its requests, so that the subtests can run in
// parallel and inspect exactly the upstream calls their requests made.

// upstreamKey is codeexec's key for the fake provider; the fakes refuse
// any other (so the client's key must never be forwarded).
const upstreamKey = "upstream-secret-key-0123456789"

// fibOutput is what FibonacciCode prints.
const fibOutput = "[0, 1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610, 987, 1597, 2584, 4181]\n"

// searchHits are the fake SearXNG's results for every query.
var searchHits = []map[string]string{
	{"title": "Bitcoin price history", "url": "https://example.com/btc", "content": "2021: 47000, 2022: 16500, 2023: 42000"},
	{"title": "BTC yearly close", "url": "https://example.com/btc-close", "content": "2024: 93000"},
}

// upstreamRouter sends each chat completion to the fake registered for
// its model; everything else (GET /v1/models) goes to def.
type upstreamRouter struct {
	def   *fakellm.Handler
	mu    sync.Mutex
	fakes map[string]*fakellm.Handler
}

func (u *upstreamRouter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := u.def
	if r.Method == http.MethodPost {
		body, _ := io.ReadAll(r.Body)
		var m struct {
			Model string `json:"model"`
		}
		json.Unmarshal(body, &m)
		u.mu.Lock()
		if f := u.fakes[m.Model]; f != nil {
			h = f
		}
		u.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	h.ServeHTTP(w, r)
}

// chatEnv is a codeexec with a fake upstream and a fake SearXNG.
type chatEnv struct {
	*service
	router *upstreamRouter

	mu      sync.Mutex
	queries []string // the fake SearXNG's queries
}

var modelNameRe = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// model registers a fake model for t and returns its name and handler.
func (e *chatEnv) model(t *testing.T, opts ...fakellm.Option) (string, *fakellm.Handler) {
	name := "fake-" + modelNameRe.ReplaceAllString(t.Name(), "_")
	f := fakellm.New(append([]fakellm.Option{fakellm.WithAPIKey(upstreamKey)}, opts...)...)
	e.router.mu.Lock()
	e.router.fakes[name] = f
	e.router.mu.Unlock()
	return name, f
}

func (e *chatEnv) searched(q string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, have := range e.queries {
		if have == q {
			return true
		}
	}
	return false
}

// startChatEnv starts the fakes and a codeexec using them; mod may change
// the configuration further.
func startChatEnv(t *testing.T, mod func(*config.Config)) *chatEnv {
	t.Helper()
	env := &chatEnv{router: &upstreamRouter{
		def:   fakellm.New(fakellm.WithAPIKey(upstreamKey), fakellm.WithModels("fake-alpha", "fake-beta")),
		fakes: map[string]*fakellm.Handler{},
	}}
	up := httptest.NewServer(env.router)
	t.Cleanup(up.Close)
	searx := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || r.URL.Path != "/search" || r.URL.Query().Get("format") != "json" {
			http.Error(w, "unexpected request "+r.Method+" "+r.URL.String(), http.StatusBadRequest)
			return
		}
		env.mu.Lock()
		env.queries = append(env.queries, r.URL.Query().Get("q"))
		env.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"query": r.URL.Query().Get("q"), "results": searchHits})
	}))
	t.Cleanup(searx.Close)
	env.service = startService(t, func(c *config.Config) {
		c.UpstreamURL = up.URL + "/v1"
		c.UpstreamAPIKey = upstreamKey
		c.SearXNGURL = searx.URL
		c.MaxTurns = 3
		c.UpstreamTimeout = time.Second
		c.PoolSize = 3
		if mod != nil {
			mod(c)
		}
	})
	return env
}

// chat POSTs body to /v1/chat/completions with keyA.
func (e *chatEnv) chat(t *testing.T, body map[string]any) (int, map[string]any) {
	t.Helper()
	return e.call("POST", "/v1/chat/completions", keyA, body)
}

// --- helpers to read responses ---

func codeTools(settings ...map[string]any) []any {
	t := map[string]any{"type": "code_execution"}
	if len(settings) > 0 {
		t["code_execution"] = settings[0]
	}
	return []any{t}
}

var weatherTool = map[string]any{"type": "function", "function": map[string]any{
	"name": fakellm.WeatherTool, "description": "Get the current weather of a city",
	"parameters": map[string]any{"type": "object", "properties": map[string]any{"city": map[string]string{"type": "string"}}, "required": []string{"city"}},
}}

func userMsg(text string) []any { return []any{map[string]any{"role": "user", "content": text}} }

// choice0 is the first choice of a chat.completion, its message and
// finish reason.
func choice0(t *testing.T, body map[string]any) (msg map[string]any, finish string) {
	t.Helper()
	if body["object"] != "chat.completion" {
		t.Errorf("object = %v, want chat.completion", body["object"])
	}
	choices, _ := body["choices"].([]any)
	if len(choices) != 1 {
		t.Fatalf("choices = %v", body["choices"])
	}
	c := choices[0].(map[string]any)
	msg, _ = c["message"].(map[string]any)
	finish, _ = c["finish_reason"].(string)
	if msg == nil || msg["role"] != "assistant" {
		t.Fatalf("message = %v", c["message"])
	}
	return msg, finish
}

func contentOf(msg map[string]any) string {
	s, _ := msg["content"].(string)
	return s
}

func toolCallsOf(msg map[string]any) []map[string]any {
	raw, _ := msg["tool_calls"].([]any)
	var out []map[string]any
	for _, c := range raw {
		m, _ := c.(map[string]any)
		out = append(out, m)
	}
	return out
}

// codeExec checks that entry is a code_execution entry and returns its
// code_execution object.
func codeExec(t *testing.T, entry map[string]any) map[string]any {
	t.Helper()
	ce, _ := entry["code_execution"].(map[string]any)
	if entry["type"] != "code_execution" || ce == nil {
		t.Fatalf("entry %v is not a code_execution entry", entry)
	}
	if id, _ := entry["id"].(string); id == "" {
		t.Errorf("entry has no id: %v", entry)
	}
	return ce
}

// checkPNG decodes a displays entry as a PNG.
func checkPNG(t *testing.T, display any) {
	t.Helper()
	d, _ := display.(map[string]any)
	b64, _ := d["image/png"].(string)
	data, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(data) == 0 {
		t.Fatalf("display %.100v: not base64 PNG data: %v", display, err)
	}
	img, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("display is not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() < 100 || b.Dy() < 100 {
		t.Errorf("PNG is only %v", b)
	}
}

// usageSum is what usage must be: the sum of the fake's usage over every
// upstream call the request made.
func usageSum(t *testing.T, fake *fakellm.Handler) fakellm.Usage {
	t.Helper()
	var sum fakellm.Usage
	for _, body := range fake.Requests() {
		u, err := fakellm.UsageFor(body)
		if err != nil {
			t.Fatalf("UsageFor: %v", err)
		}
		sum.PromptTokens += u.PromptTokens
		sum.CompletionTokens += u.CompletionTokens
		sum.TotalTokens += u.TotalTokens
	}
	return sum
}

func checkUsage(t *testing.T, got any, fake *fakellm.Handler) {
	t.Helper()
	want := usageSum(t, fake)
	u, _ := got.(map[string]any)
	num := func(k string) int { f, _ := u[k].(float64); return int(f) }
	if num("prompt_tokens") != want.PromptTokens || num("completion_tokens") != want.CompletionTokens || num("total_tokens") != want.TotalTokens {
		t.Errorf("usage = %v, want the sum over %d upstream calls %+v", got, len(fake.Requests()), want)
	}
	if len(fake.Requests()) > 1 {
		first, _ := fakellm.UsageFor(fake.Requests()[0])
		if num("total_tokens") <= first.TotalTokens {
			t.Errorf("usage %v is not more than the first call's %+v", got, first)
		}
	}
}

// toolUsage reads server_side_tool_usage.
func toolUsage(t *testing.T, v any) map[string]int {
	t.Helper()
	m, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("server_side_tool_usage = %v", v)
	}
	out := map[string]int{}
	for k, n := range m {
		f, _ := n.(float64)
		out[k] = int(f)
	}
	return out
}

// checkAPIError checks OpenAI's error shape and returns the error object.
func checkAPIError(t *testing.T, body map[string]any) map[string]any {
	t.Helper()
	e, _ := body["error"].(map[string]any)
	if e == nil {
		t.Fatalf("body %v is not {\"error\": {...}}", body)
	}
	if msg, _ := e["message"].(string); msg == "" {
		t.Errorf("error without a message: %v", e)
	}
	if typ, _ := e["type"].(string); typ == "" {
		t.Errorf("error without a type: %v", e)
	}
	return e
}

// TestChatCompletions runs the tool loop end to end: the seed document's
// requests, the official SDK, mixed tools, sessions, files, upstream
// failures, the turn limit and streaming.
func TestChatCompletions(t *testing.T) {
	env := startChatEnv(t, nil)
	t.Run("SDK", func(t *testing.T) { t.Parallel(); testChatSDK(t, env) })
	t.Run("SDKStream", func(t *testing.T) { t.Parallel(); testChatSDKStream(t, env) })
	t.Run("SDKMixedTools", func(t *testing.T) { t.Parallel(); testChatSDKMixedTools(t, env) })
	t.Run("ToolChoice", func(t *testing.T) { t.Parallel(); testChatToolChoice(t, env) })
	t.Run("Seeds", func(t *testing.T) { t.Parallel(); testChatSeeds(t, env) })
	t.Run("MixedTools", func(t *testing.T) { t.Parallel(); testChatMixedTools(t, env) })
	t.Run("SessionFollowUp", func(t *testing.T) { t.Parallel(); testChatSession(t, env) })
	t.Run("AttachedFile", func(t *testing.T) { t.Parallel(); testChatAttachedFile(t, env) })
	t.Run("UpstreamFailures", func(t *testing.T) { t.Parallel(); testChatUpstreamFailures(t, env) })
	t.Run("MidStreamFailure", func(t *testing.T) { t.Parallel(); testChatMidStreamFailure(t, env) })
	t.Run("TurnLimit", func(t *testing.T) { t.Parallel(); testChatTurnLimit(t, env) })
	t.Run("Stream", func(t *testing.T) { t.Parallel(); testChatStream(t, env) })
	t.Run("Models", func(t *testing.T) { t.Parallel(); testChatModels(t, env) })
}

// sdkClient is the official Go SDK pointed at codeexec.
func sdkClient(env *chatEnv) openai.Client {
	return openai.NewClient(option.WithBaseURL(env.url+"/v1/"), option.WithAPIKey(keyA), option.WithMaxRetries(0))
}

// withCodeExecution adds the non-standard {"type":"code_execution"} tool.
var withCodeExecution = option.WithJSONSet("tools", []any{map[string]any{"type": "code_execution"}})

func testChatSDK(t *testing.T, env *chatEnv) {
	model, fake := env.model(t)
	client := sdkClient(env)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resp, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model:    model,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Calculate the first 20 Fibonacci numbers")},
	}, withCodeExecution)
	if err != nil {
		t.Fatalf("SDK: %v", err)
	}
	if len(resp.Choices) != 1 {
		t.Fatalf("choices = %+v", resp.Choices)
	}
	c := resp.Choices[0]
	if !strings.Contains(c.Message.Content, "4181") || c.FinishReason != "stop" {
		t.Errorf("answer %q, finish %q", c.Message.Content, c.FinishReason)
	}
	if len(c.Message.ToolCalls) != 1 {
		t.Fatalf("tool_calls = %+v", c.Message.ToolCalls)
	}
	tc := c.Message.ToolCalls[0]
	if tc.Type != "code_execution" || tc.ID == "" {
		t.Errorf("tool call type %q id %q", tc.Type, tc.ID)
	}
	var entry struct {
		CodeExecution struct{ Code, Output, Status string } `json:"code_execution"`
	}
	if err := json.Unmarshal([]byte(tc.RawJSON()), &entry); err != nil {
		t.Fatalf("tool call raw JSON %q: %v", tc.RawJSON(), err)
	}
	if ce := entry.CodeExecution; ce.Code != fakellm.FibonacciCode || ce.Output != fibOutput || ce.Status != "ok" {
		t.Errorf("code_execution = %+v", ce)
	}
	want := usageSum(t, fake)
	if resp.Usage.PromptTokens != int64(want.PromptTokens) || resp.Usage.CompletionTokens != int64(want.CompletionTokens) || resp.Usage.TotalTokens != int64(want.TotalTokens) {
		t.Errorf("usage = %+v, want %+v", resp.Usage, want)
	}
	f, ok := resp.JSON.ExtraFields["server_side_tool_usage"]
	if !ok {
		t.Fatalf("no server_side_tool_usage in %s", resp.RawJSON())
	}
	var su map[string]int
	if err := json.Unmarshal([]byte(f.Raw()), &su); err != nil || su["code_execution"] != 1 {
		t.Errorf("server_side_tool_usage = %s", f.Raw())
	}
	if resp.Model != model || resp.ID == "" {
		t.Errorf("model %q id %q", resp.Model, resp.ID)
	}

	// The SDK also reads codeexec's errors.
	_, err = client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model:    model,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
	}, option.WithJSONSet("tools", []any{map[string]any{"type": "code_execution", "code_execution": map[string]any{"bogus": 1}}}))
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 400 || apiErr.Message == "" || apiErr.Type != "invalid_request_error" {
		t.Errorf("bad tool settings: %v", err)
	}
}

func testChatSDKStream(t *testing.T, env *chatEnv) {
	model, fake := env.model(t)
	client := sdkClient(env)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stream := client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
		Model:         model,
		Messages:      []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Calculate the first 20 Fibonacci numbers")},
		StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
	}, withCodeExecution)
	defer stream.Close()
	var acc openai.ChatCompletionAccumulator
	var code, output, toolUse string
	chunks := 0
	for stream.Next() {
		chunk := stream.Current()
		chunks++
		if chunk.Object != "chat.completion.chunk" {
			t.Errorf("chunk object %q", chunk.Object)
		}
		if !acc.AddChunk(chunk) {
			t.Errorf("the accumulator refused chunk %s", chunk.RawJSON())
		}
		for _, ch := range chunk.Choices {
			for _, tc := range ch.Delta.ToolCalls {
				var d struct {
					CodeExecution *struct {
						Code   *string `json:"code"`
						Output *string `json:"output"`
					} `json:"code_execution"`
				}
				json.Unmarshal([]byte(tc.RawJSON()), &d)
				if d.CodeExecution == nil {
					t.Errorf("tool call delta without code_execution: %s", tc.RawJSON())
					continue
				}
				if d.CodeExecution.Code != nil {
					code = *d.CodeExecution.Code
				}
				if d.CodeExecution.Output != nil {
					if code == "" {
						t.Error("output before code")
					}
					output = *d.CodeExecution.Output
				}
			}
		}
		if f, ok := chunk.JSON.ExtraFields["server_side_tool_usage"]; ok {
			toolUse = f.Raw()
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	if chunks < 4 {
		t.Errorf("only %d chunks", chunks)
	}
	if code != fakellm.FibonacciCode || output != fibOutput {
		t.Errorf("streamed code %q output %q", code, output)
	}
	if len(acc.Choices) != 1 {
		t.Fatalf("accumulated choices: %+v", acc.Choices)
	}
	c := acc.Choices[0]
	if c.Message.Content != "The first 20 Fibonacci numbers are: "+strings.TrimSpace(fibOutput) || c.FinishReason != "stop" {
		t.Errorf("accumulated answer %q finish %q", c.Message.Content, c.FinishReason)
	}
	if len(c.Message.ToolCalls) != 1 || c.Message.ToolCalls[0].Type != "code_execution" || c.Message.ToolCalls[0].ID == "" {
		t.Errorf("accumulated tool calls %+v", c.Message.ToolCalls)
	}
	want := usageSum(t, fake)
	if acc.Usage.TotalTokens != int64(want.TotalTokens) || acc.Usage.PromptTokens != int64(want.PromptTokens) {
		t.Errorf("accumulated usage %+v, want %+v", acc.Usage, want)
	}
	if toolUse == "" || !strings.Contains(toolUse, `"code_execution":1`) {
		t.Errorf("server_side_tool_usage = %q", toolUse)
	}
	// The upstream was streamed too.
	for i, r := range fake.DecodedRequests() {
		if !r.Stream || r.StreamOptions == nil || !r.StreamOptions.IncludeUsage {
			t.Errorf("upstream call %d not streamed with usage: %s", i, fake.Requests()[i])
		}
	}
}

// testChatSDKMixedTools makes the mixed round trip with the SDK: the
// history sent back either as the raw JSON of the returned message, which
// keeps the code_execution entry, or as the SDK's ToParam, which turns it
// into null (codeexec then leaves it out; the model lacks its result).
func testChatSDKMixedTools(t *testing.T, env *chatEnv) {
	question := "What's the weather in Paris, and what is 2+2?"
	tools := option.WithJSONSet("tools", append(codeTools(), weatherTool))
	tests := []struct {
		name    string
		history func(msg openai.ChatCompletionMessage) openai.ChatCompletionMessageParamUnion
		answer  string
	}{
		{"raw JSON", func(msg openai.ChatCompletionMessage) openai.ChatCompletionMessageParamUnion {
			a := param.Override[openai.ChatCompletionAssistantMessageParam](json.RawMessage(msg.RawJSON()))
			return openai.ChatCompletionMessageParamUnion{OfAssistant: &a}
		}, "Paris is sunny, 22°C and 2+2 is 4"},
		{"ToParam", func(msg openai.ChatCompletionMessage) openai.ChatCompletionMessageParamUnion {
			return msg.ToParam()
		}, "Paris is sunny, 22°C, but I have no result for 2+2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			model, fake := env.model(t)
			client := sdkClient(env)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			msgs := []openai.ChatCompletionMessageParamUnion{openai.UserMessage(question)}
			resp, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: model, Messages: msgs}, tools)
			if err != nil {
				t.Fatalf("SDK: %v", err)
			}
			c := resp.Choices[0]
			if c.FinishReason != "tool_calls" || len(c.Message.ToolCalls) != 2 {
				t.Fatalf("finish %q tool calls %+v", c.FinishReason, c.Message.ToolCalls)
			}
			ce, fn := c.Message.ToolCalls[0], c.Message.ToolCalls[1]
			if ce.Type != "code_execution" || !strings.Contains(ce.RawJSON(), `"output":"4\n"`) {
				t.Errorf("code_execution entry %s", ce.RawJSON())
			}
			if fn.Type != "function" || fn.Function.Name != fakellm.WeatherTool || fn.Function.Arguments != fakellm.WeatherArgs {
				t.Fatalf("function call %s", fn.RawJSON())
			}
			fake.Reset()
			msgs = append(msgs, tt.history(c.Message), openai.ToolMessage("sunny, 22°C", fn.ID))
			resp, err = client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: model, Messages: msgs}, tools)
			if err != nil {
				t.Fatalf("follow-up: %v; upstream got %q", err, fake.Requests())
			}
			if got := resp.Choices[0].Message.Content; got != tt.answer || resp.Choices[0].FinishReason != "stop" {
				t.Errorf("answer %q finish %q, want %q", got, resp.Choices[0].FinishReason, tt.answer)
			}
		})
	}
}

// testChatToolChoice: {"type": "code_execution"} as tool_choice reaches the
// model as the function form.
func testChatToolChoice(t *testing.T, env *chatEnv) {
	model, fake := env.model(t)
	st, body := env.chat(t, map[string]any{"model": model, "messages": userMsg("Calculate the first 20 Fibonacci numbers"),
		"tools": codeTools(), "tool_choice": map[string]any{"type": "code_execution"}})
	if msg, _ := choice0(t, body); st != 200 || !strings.Contains(contentOf(msg), "4181") {
		t.Fatalf("status %d: %v", st, body)
	}
	var tc struct {
		Type     string
		Function struct{ Name string }
	}
	json.Unmarshal(fake.DecodedRequests()[0].ToolChoice, &tc)
	if tc.Type != "function" || tc.Function.Name != fakellm.CodeTool {
		t.Errorf("upstream tool_choice %s", fake.DecodedRequests()[0].ToolChoice)
	}
}

func testChatSeeds(t *testing.T, env *chatEnv) {
	csvData := "month,revenue\n1,100\n2,120\n3,90\n4,160"
	tests := []struct {
		name   string
		prompt string
		tools  []any
		// kinds are the types of the tool_calls entries, in order.
		kinds []string
		check func(t *testing.T, msg map[string]any, calls []map[string]any)
	}{
		{
			name:   "compound interest",
			prompt: "Calculate the compound interest on $10,000 at 5% for 10 years",
			tools:  codeTools(), kinds: []string{"code_execution"},
			check: func(t *testing.T, msg map[string]any, calls []map[string]any) {
				ce := codeExec(t, calls[0])
				if ce["code"] != fakellm.CompoundInterestCode || ce["output"] != "16288.95\n" || ce["status"] != "ok" {
					t.Errorf("code_execution = %v", ce)
				}
				if !strings.Contains(contentOf(msg), "16288.95") {
					t.Errorf("answer %q", contentOf(msg))
				}
			},
		},
		{
			name:   "CSV trends",
			prompt: "Analyze this CSV data and find trends:\n" + csvData,
			tools:  codeTools(), kinds: []string{"code_execution"},
			check: func(t *testing.T, msg map[string]any, calls []map[string]any) {
				ce := codeExec(t, calls[0])
				const out = "revenue trend: mixed, mean change 20.0\n"
				if ce["code"] != fakellm.CSVCode(csvData) || ce["output"] != out || ce["status"] != "ok" {
					t.Errorf("code_execution = %v", ce)
				}
				if contentOf(msg) != "The analysis shows: "+strings.TrimSpace(out) {
					t.Errorf("answer %q", contentOf(msg))
				}
			},
		},
		{
			name:   "Fibonacci",
			prompt: "Calculate the first 20 Fibonacci numbers",
			tools:  codeTools(), kinds: []string{"code_execution"},
			check: func(t *testing.T, msg map[string]any, calls []map[string]any) {
				ce := codeExec(t, calls[0])
				if ce["code"] != fakellm.FibonacciCode || ce["output"] != fibOutput || ce["status"] != "ok" {
					t.Errorf("code_execution = %v", ce)
				}
				if !strings.Contains(contentOf(msg), "4181") {
					t.Errorf("answer %q", contentOf(msg))
				}
			},
		},
		{
			name:   "bar chart",
			prompt: "Create a bar chart showing the top 5 programming languages by popularity",
			tools:  []any{map[string]any{"type": "code_interpreter"}}, // the alias
			kinds:  []string{"code_execution"},
			check: func(t *testing.T, msg map[string]any, calls []map[string]any) {
				ce := codeExec(t, calls[0])
				if ce["code"] != fakellm.BarChartCode || ce["status"] != "ok" {
					t.Errorf("code_execution = %.300v", ce)
				}
				displays, _ := ce["displays"].([]any)
				if len(displays) != 1 {
					t.Fatalf("displays = %.200v", ce["displays"])
				}
				checkPNG(t, displays[0])
				if out, _ := ce["output"].(string); !strings.Contains(out, "[image 1 was displayed to the user]") {
					t.Errorf("output %q does not tell the model of the image", out)
				}
				if contentOf(msg) != fakellm.ChartAnswer {
					t.Errorf("answer %q", contentOf(msg))
				}
			},
		},
		{
			name:   "web search and code",
			prompt: "Search for Bitcoin price history and plot it",
			tools:  []any{map[string]any{"type": "web_search"}, map[string]any{"type": "code_execution"}},
			kinds:  []string{"web_search", "code_execution"},
			check: func(t *testing.T, msg map[string]any, calls []map[string]any) {
				ws, _ := calls[0]["web_search"].(map[string]any)
				if ws == nil || ws["query"] != "Bitcoin price history" {
					t.Fatalf("web_search entry %v", calls[0])
				}
				results, _ := ws["results"].([]any)
				if len(results) != len(searchHits) {
					t.Errorf("web_search results %v", ws["results"])
				} else if r0 := results[0].(map[string]any); r0["url"] != searchHits[0]["url"] || r0["title"] != searchHits[0]["title"] || r0["snippet"] != searchHits[0]["content"] {
					t.Errorf("first result %v", r0)
				}
				searchOut, _ := ws["output"].(string)
				if !strings.Contains(searchOut, searchHits[0]["url"]) || !strings.Contains(searchOut, searchHits[1]["content"]) {
					t.Errorf("web_search output %q", searchOut)
				}
				if !env.searched("Bitcoin price history") {
					t.Error("the search provider was not asked")
				}
				ce := codeExec(t, calls[1])
				if ce["code"] != fakellm.SearchCode(searchOut, true) || ce["status"] != "ok" {
					t.Errorf("code_execution = %.400v", ce)
				}
				out, _ := ce["output"].(string)
				// Both hits' lines and the 4 numbers of the snippets (and 2 of the "1."/"2." markers).
				if !strings.HasPrefix(out, "4 lines of search results, ") {
					t.Errorf("code output %q", out)
				}
				if d, _ := ce["displays"].([]any); len(d) != 1 {
					t.Errorf("displays %.100v", ce["displays"])
				} else {
					checkPNG(t, d[0])
				}
				want := "Search found: " + strings.Split(searchOut, "\n")[0] + ". Code output: " + strings.TrimSpace(out)
				if contentOf(msg) != want {
					t.Errorf("answer %q, want %q", contentOf(msg), want)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			model, fake := env.model(t)
			st, body := env.chat(t, map[string]any{
				"model": model, "messages": userMsg(tt.prompt), "tools": tt.tools,
				"temperature": 0.2, "seed": 7, "user": "seed-test", // passed through untouched
			})
			if st != 200 {
				t.Fatalf("status %d: %v", st, body)
			}
			msg, finish := choice0(t, body)
			if finish != "stop" {
				t.Errorf("finish_reason %q", finish)
			}
			calls := toolCallsOf(msg)
			var kinds []string
			for _, c := range calls {
				kinds = append(kinds, fmt.Sprint(c["type"]))
			}
			if fmt.Sprint(kinds) != fmt.Sprint(tt.kinds) {
				t.Fatalf("tool_calls types %v, want %v; message %.500v", kinds, tt.kinds, msg)
			}
			tt.check(t, msg, calls)

			reqs := fake.DecodedRequests()
			if len(reqs) != len(calls)+1 {
				t.Errorf("%d upstream calls for %d executions", len(reqs), len(calls))
			}
			codeN := 0
			for _, k := range kinds {
				if k == "code_execution" {
					codeN++
				}
			}
			u := toolUsage(t, body["server_side_tool_usage"])
			if u["code_execution"] != codeN {
				t.Errorf("server_side_tool_usage %v, want code_execution %d", u, codeN)
			}
			if len(tt.kinds) == 2 && u["web_search"] != 1 {
				t.Errorf("server_side_tool_usage %v, want web_search 1", u)
			}
			checkUsage(t, body["usage"], fake)
			if body["model"] != model {
				t.Errorf("model %v", body["model"])
			}
			for i, r := range reqs {
				if r.Model != model || string(r.Fields["seed"]) != "7" || string(r.Fields["temperature"]) != "0.2" || string(r.Fields["user"]) != `"seed-test"` {
					t.Errorf("upstream call %d lost fields: %s", i, fake.Requests()[i])
				}
				if !r.Offers(fakellm.CodeTool) {
					t.Errorf("upstream call %d does not offer code_execution as a function: tools %v", i, r.ToolNames())
				}
				if r.Stream {
					t.Errorf("upstream call %d streamed", i)
				}
			}
			if d := reqs[0].Tools[len(reqs[0].Tools)-1]; len(tt.kinds) == 1 && !strings.Contains(d.Function.Description, "/mnt/data") {
				t.Errorf("code_execution description %q", d.Function.Description)
			}
		})
	}
}

func testChatMixedTools(t *testing.T, env *chatEnv) {
	model, fake := env.model(t)
	tools := append(codeTools(), weatherTool)
	question := "What's the weather in Paris, and what is 2+2?"
	st, body := env.chat(t, map[string]any{"model": model, "messages": userMsg(question), "tools": tools})
	if st != 200 {
		t.Fatalf("status %d: %v", st, body)
	}
	msg, finish := choice0(t, body)
	if finish != "tool_calls" {
		t.Errorf("finish_reason %q, want tool_calls", finish)
	}
	calls := toolCallsOf(msg)
	if len(calls) != 2 {
		t.Fatalf("tool_calls = %v", msg["tool_calls"])
	}
	ce := codeExec(t, calls[0])
	if ce["code"] != fakellm.WeatherCode || ce["output"] != "4\n" || ce["status"] != "ok" {
		t.Errorf("code_execution = %v", ce)
	}
	fn, _ := calls[1]["function"].(map[string]any)
	weatherID, _ := calls[1]["id"].(string)
	if calls[1]["type"] != "function" || fn["name"] != fakellm.WeatherTool || fn["arguments"] != fakellm.WeatherArgs || weatherID == "" {
		t.Fatalf("client tool call = %v", calls[1])
	}
	if u := toolUsage(t, body["server_side_tool_usage"]); u["code_execution"] != 1 {
		t.Errorf("server_side_tool_usage %v", u)
	}
	checkUsage(t, body["usage"], fake)
	if n := len(fake.Requests()); n != 1 {
		t.Errorf("%d upstream calls before the client tool, want 1", n)
	}
	// The client tool is offered to the model as it was given.
	if r := fake.DecodedRequests()[0]; !r.Offers(fakellm.WeatherTool) || !r.Offers(fakellm.CodeTool) {
		t.Errorf("upstream tools %v", r.ToolNames())
	}

	// The client runs get_weather and sends the history back.
	fake.Reset()
	history := []any{
		map[string]any{"role": "user", "content": question},
		msg,
		map[string]any{"role": "tool", "tool_call_id": weatherID, "content": "sunny, 22°C"},
	}
	st, body = env.chat(t, map[string]any{"model": model, "messages": history, "tools": tools})
	if st != 200 {
		t.Fatalf("follow-up status %d: %v", st, body)
	}
	msg, finish = choice0(t, body)
	if want := "Paris is sunny, 22°C and 2+2 is 4"; contentOf(msg) != want || finish != "stop" {
		t.Errorf("answer %q finish %q, want %q", contentOf(msg), finish, want)
	}
	if len(toolCallsOf(msg)) != 0 {
		t.Errorf("follow-up tool_calls %v", msg["tool_calls"])
	}
	if u := toolUsage(t, body["server_side_tool_usage"]); u["code_execution"] != 0 {
		t.Errorf("follow-up server_side_tool_usage %v", u)
	}
	// The upstream saw codeexec's entry in function form, then its result,
	// then the client's.
	reqs := fake.DecodedRequests()
	if len(reqs) != 1 {
		t.Fatalf("%d upstream calls", len(reqs))
	}
	m := reqs[0].Messages
	if len(m) != 4 || m[1].Role != "assistant" || len(m[1].ToolCalls) != 2 {
		t.Fatalf("upstream messages: %s", fake.Requests()[0])
	}
	ceID, _ := calls[0]["id"].(string)
	tc := m[1].ToolCalls[0]
	var args struct{ Code string }
	json.Unmarshal([]byte(tc.Function.Arguments), &args)
	if tc.ID != ceID || tc.Type != "function" || tc.Function.Name != fakellm.CodeTool || args.Code != fakellm.WeatherCode {
		t.Errorf("code_execution entry upstream = %+v", tc)
	}
	if w := m[1].ToolCalls[1]; w.ID != weatherID || w.Function.Name != fakellm.WeatherTool {
		t.Errorf("get_weather call upstream = %+v", w)
	}
	if m[2].Role != "tool" || m[2].ToolCallID != ceID || m[2].Text() != "4\n" {
		t.Errorf("code_execution result upstream = %+v", m[2])
	}
	if m[3].Role != "tool" || m[3].ToolCallID != weatherID || m[3].Text() != "sunny, 22°C" {
		t.Errorf("get_weather result upstream = %+v", m[3])
	}
}

func testChatSession(t *testing.T, env *chatEnv) {
	model, _ := env.model(t)
	st, sess := env.call("POST", "/v1/sessions", keyA, map[string]any{})
	id, _ := sess["id"].(string)
	if st != 200 || id == "" {
		t.Fatalf("create session = %d %v", st, sess)
	}
	tools := codeTools(map[string]any{"session_id": id})
	st, body := env.chat(t, map[string]any{"model": model, "messages": userMsg("set x to 41"), "tools": tools})
	if st != 200 {
		t.Fatalf("status %d: %v", st, body)
	}
	if msg, _ := choice0(t, body); contentOf(msg) != "I set x = 41 (output: stored)." {
		t.Errorf("answer %q", contentOf(msg))
	}
	st, body = env.chat(t, map[string]any{"model": model, "messages": userMsg("what is x plus one"), "tools": tools})
	if st != 200 {
		t.Fatalf("status %d: %v", st, body)
	}
	msg, _ := choice0(t, body)
	if contentOf(msg) != "x plus one is 42." {
		t.Errorf("answer %q", contentOf(msg))
	}
	if calls := toolCallsOf(msg); len(calls) != 1 || codeExec(t, calls[0])["output"] != "42\n" {
		t.Errorf("tool_calls %v", msg["tool_calls"])
	}
	// Without the session, x is not defined: each request has its own.
	st, body = env.chat(t, map[string]any{"model": model, "messages": userMsg("what is x plus one"), "tools": codeTools()})
	if msg, _ := choice0(t, body); st != 200 || !strings.Contains(contentOf(msg), "NameError") {
		t.Errorf("without the session: %d %q", st, contentOf(msg))
	}
	// The session outlives the requests; another key cannot use it.
	if st, s := env.call("GET", "/v1/sessions/"+id, keyA, nil); st != 200 || s["status"] != "active" {
		t.Errorf("session after the requests: %d %v", st, s)
	}
	st, body = env.call("POST", "/v1/chat/completions", keyB, map[string]any{"model": model, "messages": userMsg("what is x plus one"), "tools": tools})
	if st != 404 {
		t.Errorf("another key's session: %d %v", st, body)
	}
	checkAPIError(t, body)
	env.call("DELETE", "/v1/sessions/"+id, keyA, nil)
}

func testChatAttachedFile(t *testing.T, env *chatEnv) {
	f := upload(t, env.service, keyA, "sales.csv", "month,sales\n1,100\n2,120\n3,150\n")
	fid, _ := f["id"].(string)
	const want = "Analysis of /mnt/data/sales.csv: rows: 3, sales sum: 370"
	tests := []struct {
		name     string
		messages []any
		tools    []any
	}{
		{"file part", []any{map[string]any{"role": "user", "content": []any{
			map[string]any{"type": "text", "text": "Analyse the attached file"},
			map[string]any{"type": "file", "file": map[string]any{"file_id": fid}},
		}}}, codeTools()},
		{"file_ids", userMsg("Analyse the attached file"), codeTools(map[string]any{"file_ids": []string{fid}})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			model, fake := env.model(t)
			st, body := env.chat(t, map[string]any{"model": model, "messages": tt.messages, "tools": tt.tools})
			if st != 200 {
				t.Fatalf("status %d: %v", st, body)
			}
			msg, _ := choice0(t, body)
			if contentOf(msg) != want {
				t.Errorf("answer %q, want %q", contentOf(msg), want)
			}
			calls := toolCallsOf(msg)
			if len(calls) != 1 || codeExec(t, calls[0])["code"] != fakellm.AttachedFileCode("/mnt/data/sales.csv") {
				t.Errorf("tool_calls %v", msg["tool_calls"])
			}
			// The model was told the path, and never saw the file id.
			r := fake.DecodedRequests()[0]
			desc := ""
			for _, tool := range r.Tools {
				if tool.Function != nil && tool.Function.Name == fakellm.CodeTool {
					desc = tool.Function.Description
				}
			}
			if !strings.Contains(desc, "/mnt/data/sales.csv") {
				t.Errorf("code_execution description %q does not name the file", desc)
			}
			if strings.Contains(string(fake.Requests()[0]), `"type":"file"`) {
				t.Errorf("a file part reached the model: %s", fake.Requests()[0])
			}
		})
	}
	t.Run("another key's file", func(t *testing.T) {
		t.Parallel()
		model, fake := env.model(t)
		st, body := env.call("POST", "/v1/chat/completions", keyB, map[string]any{"model": model, "messages": userMsg("Analyse the attached file"),
			"tools": codeTools(map[string]any{"file_ids": []string{fid}})})
		if st != 404 || len(fake.Requests()) != 0 {
			t.Errorf("keyB with keyA's file: %d %v", st, body)
		}
		checkAPIError(t, body)
	})
	t.Run("unknown file", func(t *testing.T) {
		t.Parallel()
		model, _ := env.model(t)
		st, body := env.chat(t, map[string]any{"model": model, "tools": codeTools(), "messages": []any{map[string]any{"role": "user", "content": []any{
			map[string]any{"type": "text", "text": "Analyse the attached file"},
			map[string]any{"type": "file", "file": map[string]any{"file_id": "file-nope"}},
		}}}})
		if st != 404 {
			t.Errorf("unknown file: %d %v", st, body)
		}
		checkAPIError(t, body)
	})
}

func testChatUpstreamFailures(t *testing.T, env *chatEnv) {
	fib := "Calculate the first 20 Fibonacci numbers"
	e500 := fakellm.Fault{Status: 500}
	e429 := fakellm.Fault{Status: 429, RetryAfter: "0"}
	slow := fakellm.Fault{Delay: 3 * time.Second} // over the 1 s UpstreamTimeout
	tests := []struct {
		name   string
		faults []fakellm.Fault
		stream bool
		status int
		typ    string // of the error
		calls  int    // upstream calls made
	}{
		{"500 retried", []fakellm.Fault{e500}, false, 200, "", 3},
		{"500 persistent", []fakellm.Fault{e500, e500, e500}, false, 500, "server_error", 3},
		{"500 after an execution", []fakellm.Fault{{}, e500, e500, e500}, false, 500, "server_error", 4},
		{"429 retried", []fakellm.Fault{e429, e429}, false, 200, "", 4},
		{"429 persistent", []fakellm.Fault{e429, e429, e429}, false, 429, "rate_limit_exceeded", 3},
		{"timeout", []fakellm.Fault{slow, slow, slow}, false, 504, "upstream_error", 3},
		{"malformed JSON", []fakellm.Fault{{Malformed: true}}, false, 502, "upstream_error", 1},
		{"stream 500 retried", []fakellm.Fault{e500}, true, 200, "", 3},
		{"stream 500 persistent", []fakellm.Fault{e500, e500, e500}, true, 500, "server_error", 3},
		{"stream malformed", []fakellm.Fault{{Malformed: true}}, true, 502, "upstream_error", 1},
		{"stream timeout", []fakellm.Fault{slow, slow, slow}, true, 504, "upstream_error", 3},
		{"400 passed on", []fakellm.Fault{{Status: 400, Message: "the model refuses this"}}, false, 400, "invalid_request_error", 1},
		{"401 is ours", []fakellm.Fault{{Status: 401}}, false, 502, "upstream_error", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			model, fake := env.model(t, fakellm.WithFaults(tt.faults...))
			req := map[string]any{"model": model, "messages": userMsg(fib), "tools": codeTools()}
			if tt.stream {
				req["stream"] = true
			}
			start := time.Now()
			resp := env.do("POST", "/v1/chat/completions", keyA, req)
			data, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			took := time.Since(start)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.status, data)
			}
			if n := len(fake.Requests()); n != tt.calls {
				t.Errorf("%d upstream calls, want %d", n, tt.calls)
			}
			if tt.status == 200 {
				if !strings.Contains(string(data), "4181") {
					t.Errorf("answer: %.500s", data)
				}
				return
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("Content-Type %q", ct)
			}
			var body map[string]any
			if err := json.Unmarshal(data, &body); err != nil {
				t.Fatalf("error body %q: %v", data, err)
			}
			e := checkAPIError(t, body)
			if e["type"] != tt.typ {
				t.Errorf("error type %v, want %s: %v", e["type"], tt.typ, e)
			}
			if tt.status == 400 && e["message"] != "the model refuses this" {
				t.Errorf("the upstream's message is lost: %v", e)
			}
			if tt.name == "401 is ours" && e["code"] != "upstream_auth" {
				t.Errorf("401 upstream: %v", e)
			}
			if tt.status == 504 && (e["code"] != "upstream_timeout" || took > 10*time.Second) {
				t.Errorf("timeout: code %v after %v", e["code"], took)
			}
			if msg, _ := e["message"].(string); strings.Contains(msg, "127.0.0.1") || strings.Contains(msg, upstreamKey) {
				t.Errorf("error message leaks the upstream: %q", msg)
			}
		})
	}
}

// testChatMidStreamFailure: an upstream failure after chunks were sent
// ends the stream with an error event (which the SDK reports) and [DONE].
func testChatMidStreamFailure(t *testing.T, env *chatEnv) {
	e500 := fakellm.Fault{Status: 500}
	model, _ := env.model(t, fakellm.WithFaults(fakellm.Fault{}, e500, e500, e500))
	resp := env.do("POST", "/v1/chat/completions", keyA, map[string]any{"model": model, "stream": true,
		"messages": userMsg("Calculate the first 20 Fibonacci numbers"), "tools": codeTools()})
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	events := sseEvents(t, resp.Body)
	if len(events) < 3 || events[len(events)-1] != "[DONE]" {
		t.Fatalf("events %q", events)
	}
	if !strings.Contains(strings.Join(events[:len(events)-2], ""), `"output":"`+strings.TrimSpace(fibOutput)) {
		t.Errorf("no execution streamed before the failure: %q", events)
	}
	var last map[string]any
	if err := json.Unmarshal([]byte(events[len(events)-2]), &last); err != nil {
		t.Fatalf("last event %q: %v", events[len(events)-2], err)
	}
	if e := checkAPIError(t, last); e["type"] != "server_error" {
		t.Errorf("error event %v", last)
	}

	t.Run("SDK", func(t *testing.T) {
		// The SDK reports it as an error of the stream.
		model, _ := env.model(t, fakellm.WithFaults(fakellm.Fault{}, e500, e500, e500))
		client := sdkClient(env)
		stream := client.Chat.Completions.NewStreaming(context.Background(), openai.ChatCompletionNewParams{
			Model: model, Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Calculate the first 20 Fibonacci numbers")},
		}, withCodeExecution)
		defer stream.Close()
		n := 0
		for stream.Next() {
			n++
		}
		if stream.Err() == nil || n == 0 {
			t.Errorf("SDK stream: %d chunks, error %v", n, stream.Err())
		}
	})
}

func testChatTurnLimit(t *testing.T, env *chatEnv) {
	model, fake := env.model(t)
	st, body := env.chat(t, map[string]any{"model": model, "messages": userMsg("Please loop forever"), "tools": codeTools()})
	if st != 200 {
		t.Fatalf("status %d: %v", st, body)
	}
	msg, finish := choice0(t, body)
	if contentOf(msg) != fakellm.OutOfTurns || finish != "stop" {
		t.Errorf("answer %q finish %q, want %q", contentOf(msg), finish, fakellm.OutOfTurns)
	}
	calls := toolCallsOf(msg)
	if len(calls) != 3 {
		t.Fatalf("%d executions, want 3 (MaxTurns)", len(calls))
	}
	for _, c := range calls {
		if ce := codeExec(t, c); ce["code"] != fakellm.LoopCode || ce["output"] != "again\n" {
			t.Errorf("code_execution %v", ce)
		}
	}
	if u := toolUsage(t, body["server_side_tool_usage"]); u["code_execution"] != 3 {
		t.Errorf("server_side_tool_usage %v", u)
	}
	checkUsage(t, body["usage"], fake)
	reqs := fake.DecodedRequests()
	if len(reqs) != 4 {
		t.Fatalf("%d upstream calls, want 3 with tools and a final one", len(reqs))
	}
	for i, r := range reqs {
		_, hasTools := r.Fields["tools"]
		if hasTools != (i < 3) {
			t.Errorf("upstream call %d: tools present %v", i, hasTools)
		}
	}
	// All three runs and their results reached the final call, which is
	// told to answer now; the user's question stays the last user turn.
	final := reqs[3].Messages
	users, tools := 0, 0
	for _, m := range final {
		switch m.Role {
		case "user":
			users++
		case "tool":
			tools++
		}
	}
	last := final[len(final)-1]
	if users != 1 || tools != 3 || last.Role != "tool" || !strings.HasPrefix(last.Text(), "again\n") || !strings.Contains(last.Text(), "Answer now") {
		t.Errorf("final call's messages: %s", fake.Requests()[3])
	}
}

// sseEvents reads a chat completion stream into the data of its events,
// which have no event type.
func sseEvents(t *testing.T, r io.Reader) []string {
	t.Helper()
	var out []string
	for _, ev := range readEvents(t, r) {
		if ev.name != "" {
			t.Errorf("unexpected event type %q (data %.100q)", ev.name, ev.data)
		}
		out = append(out, ev.data)
	}
	return out
}

// streamChunk is a chat.completion.chunk, strictly read.
type streamChunk struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	Model   string `json:"model"`
	Choices []struct {
		Index int `json:"index"`
		Delta struct {
			Role      string  `json:"role"`
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
				} `json:"code_execution"`
				Function *struct {
					Name      string `json:"name"`
					Arguments string `json:"arguments"`
				} `json:"function"`
			} `json:"tool_calls"`
		} `json:"delta"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage               *fakellm.Usage `json:"usage"`
	ServerSideToolUsage map[string]int `json:"server_side_tool_usage"`
}

func testChatStream(t *testing.T, env *chatEnv) {
	tests := []struct {
		name    string
		prompt  string
		tools   []any
		code    string
		output  string
		answer  string
		finish  string
		fnCalls int // client function calls at the end
	}{
		{"Fibonacci", "Calculate the first 20 Fibonacci numbers", codeTools(), fakellm.FibonacciCode, fibOutput,
			"The first 20 Fibonacci numbers are: " + strings.TrimSpace(fibOutput), "stop", 0},
		{"mixed tools", "What's the weather in Paris, and what is 2+2?", append(codeTools(), weatherTool), fakellm.WeatherCode, "4\n",
			"", "tool_calls", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			model, fake := env.model(t)
			resp := env.do("POST", "/v1/chat/completions", keyA, map[string]any{
				"model": model, "messages": userMsg(tt.prompt), "tools": tt.tools,
				"stream": true, "stream_options": map[string]any{"include_usage": true},
			})
			defer resp.Body.Close()
			if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
				data, _ := io.ReadAll(resp.Body)
				t.Fatalf("status %d %q: %s", resp.StatusCode, resp.Header.Get("Content-Type"), data)
			}
			events := sseEvents(t, resp.Body)
			if len(events) < 5 || events[len(events)-1] != "[DONE]" {
				t.Fatalf("events %q", events)
			}
			const (
				wantCode = iota
				wantOutput
				inContent
				finished
				gotUsage
			)
			phase := wantCode
			var id, content string
			fnCalls := 0
			for i, ev := range events[:len(events)-1] {
				var c streamChunk
				dec := json.NewDecoder(strings.NewReader(ev))
				if err := dec.Decode(&c); err != nil {
					t.Fatalf("event %d %q: %v", i, ev, err)
				}
				if c.Object != "chat.completion.chunk" || c.ID == "" || c.Created == 0 || c.Model != model {
					t.Errorf("event %d is not a chunk of this completion: %s", i, ev)
				}
				if id == "" {
					id = c.ID
				} else if c.ID != id {
					t.Errorf("event %d has id %q, want %q", i, c.ID, id)
				}
				if c.Usage != nil {
					want := usageSum(t, fake)
					if phase != finished || len(c.Choices) != 0 || *c.Usage != want || c.ServerSideToolUsage["code_execution"] != 1 {
						t.Errorf("usage chunk %s (phase %d), want usage %+v", ev, phase, want)
					}
					phase = gotUsage
					continue
				}
				if len(c.Choices) != 1 || c.Choices[0].Index != 0 {
					t.Fatalf("event %d choices: %s", i, ev)
				}
				ch := c.Choices[0]
				if i == 0 && ch.Delta.Role != "assistant" {
					t.Errorf("first chunk without the role: %s", ev)
				}
				for _, tc := range ch.Delta.ToolCalls {
					switch {
					case tc.Type == "function" || tc.Function != nil:
						if phase < wantOutput || tc.Function == nil || tc.Function.Name != fakellm.WeatherTool || tc.Function.Arguments != fakellm.WeatherArgs || tc.ID == "" || tc.Index != 1 {
							t.Errorf("function call delta %s", ev)
						}
						fnCalls++
					case tc.CodeExecution == nil:
						t.Errorf("tool call delta of neither kind: %s", ev)
					case phase == wantCode:
						if tc.Type != "code_execution" || tc.ID == "" || tc.Index != 0 || tc.CodeExecution.Code == nil || *tc.CodeExecution.Code != tt.code || tc.CodeExecution.Output != nil {
							t.Errorf("code delta %s", ev)
						}
						phase = wantOutput
					case phase == wantOutput:
						if tc.Index != 0 || tc.CodeExecution.Output == nil || *tc.CodeExecution.Output != tt.output || tc.CodeExecution.Status != "ok" {
							t.Errorf("output delta %s", ev)
						}
						phase = inContent
					default:
						t.Errorf("unexpected tool call delta in phase %d: %s", phase, ev)
					}
				}
				if ch.Delta.Content != nil && *ch.Delta.Content != "" {
					if phase != inContent {
						t.Errorf("content before the execution's output: %s", ev)
					}
					content += *ch.Delta.Content
				}
				if ch.FinishReason != nil {
					if phase != inContent || *ch.FinishReason != tt.finish {
						t.Errorf("finish chunk %s in phase %d, want %q", ev, phase, tt.finish)
					}
					phase = finished
				}
			}
			if phase != gotUsage {
				t.Errorf("the stream ended in phase %d without a usage chunk", phase)
			}
			if content != tt.answer || fnCalls != tt.fnCalls {
				t.Errorf("streamed answer %q and %d function calls, want %q and %d", content, fnCalls, tt.answer, tt.fnCalls)
			}
		})
	}
}

func testChatModels(t *testing.T, env *chatEnv) {
	st, body := env.call("GET", "/v1/models", keyA, nil)
	if st != 200 || body["object"] != "list" {
		t.Fatalf("models = %d %v", st, body)
	}
	var ids []string
	for _, m := range body["data"].([]any) {
		ids = append(ids, m.(map[string]any)["id"].(string))
	}
	if fmt.Sprint(ids) != "[fake-alpha fake-beta]" {
		t.Errorf("model ids %v", ids)
	}
	if st, _ := env.call("GET", "/v1/models", "", nil); st != 401 {
		t.Errorf("models without a key: %d", st)
	}
}

// TestChatWithoutSearch: web_search where no search provider is configured
// is a 400 that says so, before the model is called.
func TestChatWithoutSearch(t *testing.T) {
	env := startChatEnv(t, func(c *config.Config) { c.SearXNGURL = ""; c.PoolSize = 1 })
	model, fake := env.model(t)
	for _, tools := range [][]any{
		{map[string]any{"type": "web_search"}},
		{map[string]any{"type": "web_search"}, map[string]any{"type": "code_execution"}},
	} {
		st, body := env.chat(t, map[string]any{"model": model, "messages": userMsg("Search for Bitcoin price history and plot it"), "tools": tools})
		e := checkAPIError(t, body)
		msg, _ := e["message"].(string)
		if st != 400 || e["type"] != "invalid_request_error" || !strings.Contains(msg, "web_search") || !strings.Contains(msg, "search provider") {
			t.Errorf("web_search without a provider: %d %v", st, body)
		}
	}
	if n := len(fake.Requests()); n != 0 {
		t.Errorf("the model was called %d times", n)
	}
	// code_execution alone still works.
	st, body := env.chat(t, map[string]any{"model": model, "messages": userMsg("Calculate the first 20 Fibonacci numbers"), "tools": codeTools()})
	if msg, _ := choice0(t, body); st != 200 || !strings.Contains(contentOf(msg), "4181") {
		t.Errorf("code_execution without search: %d %v", st, body)
	}
}

// TestChatNoUpstream: without a model provider, chat and models are 503
// no_upstream.
func TestChatNoUpstream(t *testing.T) {
	for _, k := range []string{"CODEEXEC_UPSTREAM_URL", "CODEEXEC_UPSTREAM_API_KEY", "XAI_API_KEY", "OPENAI_API_KEY"} {
		t.Setenv(k, "")
	}
	s := startService(t, func(c *config.Config) { c.PoolSize = 1 })
	for _, r := range []struct {
		method, path string
		body         any
	}{
		{"POST", "/v1/chat/completions", map[string]any{"model": "m", "messages": userMsg("hi"), "tools": codeTools()}},
		{"GET", "/v1/models", nil},
	} {
		st, body := s.call(r.method, r.path, keyA, r.body)
		e := checkAPIError(t, body)
		if st != 503 || e["code"] != "no_upstream" {
			t.Errorf("%s %s = %d %v, want 503 no_upstream", r.method, r.path, st, body)
		}
	}
}
