package responses_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"codeexec/internal/executor"
	"codeexec/internal/responses"
	"codeexec/internal/toolloop"
)

// instantModel streams at once: a code_execution call on the first turn,
// then an answer quoting the tool output.
type instantModel struct{}

func (instantModel) Chat(ctx context.Context, body []byte) ([]byte, error) {
	return nil, fmt.Errorf("only streaming")
}

func (instantModel) ChatStream(ctx context.Context, body []byte, onChunk func([]byte) error) error {
	var req struct {
		Messages []map[string]any `json:"messages"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return err
	}
	if last := req.Messages[len(req.Messages)-1]; last["role"] == "tool" {
		answer, _ := json.Marshal(fmt.Sprint("The answer is ", last["content"]))
		for _, c := range []string{
			fmt.Sprintf(`{"id":"c2","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":%s},"finish_reason":null}]}`, answer),
			`{"id":"c2","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`,
			`{"id":"c2","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15}}`,
		} {
			if err := onChunk([]byte(c)); err != nil {
				return err
			}
		}
		return nil
	}
	for _, c := range []string{
		`{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"code_execution","arguments":"{\"code\":\"print(1+1)\"}"}}]},"finish_reason":null}]}`,
		`{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}`,
	} {
		if err := onChunk([]byte(c)); err != nil {
			return err
		}
	}
	return nil
}

type instantSandbox struct{}

func (instantSandbox) Run(ctx context.Context, code string) (*executor.Result, error) {
	return &executor.Result{Status: executor.StatusOK, Stdout: "2\n"}, nil
}

var history = strings.Repeat(`{"role":"user","content":"an earlier question with some words in it"},{"role":"assistant","content":"an earlier answer with some more words"},`, 10)

func newID(prefix string) string { return prefix + "0123456789abcdef01234567" }

// BenchmarkChatStreamTurn is the alternative BenchmarkResponsesTurn is
// measured against: the chat loop alone, streaming, on the same
// conversation and zero-latency model.
func BenchmarkChatStreamTurn(b *testing.B) {
	body := []byte(`{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[` + history +
		`{"role":"user","content":"what is 1+1?"}],"tools":[{"type":"code_execution"}],"temperature":0}`)
	l := &toolloop.Loop{Model: instantModel{}}
	b.ReportAllocs()
	for b.Loop() {
		req, err := toolloop.ParseRequest(body)
		if err != nil {
			b.Fatal(err)
		}
		var got strings.Builder
		if _, err := l.Run(context.Background(), req, instantSandbox{}, "sandbox", func(c []byte) error { got.Write(c); return nil }); err != nil {
			b.Fatal(err)
		}
		if !strings.Contains(got.String(), "The answer is 2") {
			b.Fatalf("stream = %s", got.String())
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/2/1e6, "ms/turn")
}

// BenchmarkResponsesTurn measures a Responses request over the same loop:
// parsing it into a chat request, building the output items and every
// streaming event, and encoding the response. What it costs per model
// turn beyond BenchmarkChatStreamTurn is the Responses layer's overhead
// (target: at most 1 ms per turn).
func BenchmarkResponsesTurn(b *testing.B) {
	items := strings.Repeat(`{"role":"user","content":"an earlier question with some words in it"},{"role":"assistant","content":"an earlier answer with some more words"},`, 10)
	body := []byte(`{"model":"m","stream":true,"input":[` + items + `{"role":"user","content":"what is 1+1?"}],"tools":[{"type":"code_interpreter","container":{"type":"auto"}}],"temperature":0,"include":["code_interpreter_call.outputs"]}`)
	l := &toolloop.Loop{Model: instantModel{}}
	b.ReportAllocs()
	for b.Loop() {
		r, err := responses.Parse(body, nil, newID)
		if err != nil {
			b.Fatal(err)
		}
		req, err := toolloop.ParseRequest(r.Chat)
		if err != nil {
			b.Fatal(err)
		}
		var events strings.Builder
		bl := responses.NewBuilder(newID("resp_"), r, "", newID, func(ev string, data []byte) error {
			events.WriteString(ev)
			events.Write(data)
			return nil
		})
		bl.ContainerID = "sess_1"
		bl.Start()
		if _, err := l.Run(context.Background(), req, instantSandbox{}, "sandbox", bl.Chunk); err != nil {
			b.Fatal(err)
		}
		resp, _ := bl.Finish(nil)
		out, _ := json.Marshal(resp)
		if !strings.Contains(string(out), "The answer is 2") {
			b.Fatalf("response = %s", out)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/2/1e6, "ms/turn")
}
