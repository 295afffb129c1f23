package toolloop

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"codeexec/internal/executor"
)

// instantModel answers at once: a code_execution call on the first turn,
// then an answer quoting the tool output.
type instantModel struct{}

func (instantModel) Chat(ctx context.Context, body []byte) ([]byte, error) {
	var req struct {
		Messages []map[string]any `json:"messages"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, err
	}
	last := req.Messages[len(req.Messages)-1]
	if last["role"] == "tool" {
		answer, _ := json.Marshal(fmt.Sprint("The answer is ", last["content"]))
		return []byte(fmt.Sprintf(`{"id":"c2","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":%s},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15}}`, answer)), nil
	}
	return []byte(`{"id":"c1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"code_execution","arguments":"{\"code\":\"print(1+1)\"}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15}}`), nil
}

func (m instantModel) ChatStream(ctx context.Context, body []byte, onChunk func([]byte) error) error {
	return fmt.Errorf("not streaming")
}

type instantSandbox struct{}

func (instantSandbox) Run(ctx context.Context, code string) (*executor.Result, error) {
	return &executor.Result{Status: executor.StatusOK, Stdout: "2\n", Displays: nil}, nil
}

// BenchmarkLoopTurn measures what the loop adds per model turn over a
// zero-latency model and an instant sandbox (so the code's own run time is
// excluded): parsing the request, building each upstream body, parsing
// answers, formatting output and the response. Target: <= 1 ms per turn.
func BenchmarkLoopTurn(b *testing.B) {
	history := strings.Repeat(`{"role":"user","content":"an earlier question with some words in it"},{"role":"assistant","content":"an earlier answer with some more words"},`, 10)
	body := []byte(`{"model":"m","messages":[` + history + `{"role":"user","content":"what is 1+1?"}],"tools":[{"type":"code_execution"}],"temperature":0}`)
	l := &Loop{Model: instantModel{}}
	b.ReportAllocs()
	for b.Loop() {
		req, err := ParseRequest(body)
		if err != nil {
			b.Fatal(err)
		}
		out, err := l.Run(context.Background(), req, instantSandbox{}, "sandbox", nil)
		if err != nil || !strings.Contains(string(out), "The answer is 2") {
			b.Fatalf("Run = %s, %v", out, err)
		}
	}
	// Two model turns per request.
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/2/1e6, "ms/turn")
}
