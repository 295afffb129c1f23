package toolloop

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"codeexec/internal/executor"
	"codeexec/internal/python"
)

// scriptedModel answers the first turn with calls code_execution calls
// (call_1, call_2, ...) and every later turn with "done", recording the
// messages of each request.
type scriptedModel struct {
	calls int

	mu    sync.Mutex
	turns [][]map[string]any
}

func (m *scriptedModel) Chat(ctx context.Context, body []byte) ([]byte, error) {
	var req struct {
		Messages []map[string]any `json:"messages"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, err
	}
	m.mu.Lock()
	m.turns = append(m.turns, req.Messages)
	first := len(m.turns) == 1
	m.mu.Unlock()
	if !first {
		return []byte(`{"id":"c2","choices":[{"index":0,"message":{"role":"assistant","content":"done"},"finish_reason":"stop"}]}`), nil
	}
	var calls []string
	for i := 1; i <= m.calls; i++ {
		calls = append(calls, fmt.Sprintf(`{"id":"call_%d","type":"function","function":{"name":"code_execution","arguments":"{\"code\":\"run(%d)\"}"}}`, i, i))
	}
	return []byte(`{"id":"c1","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[` +
		strings.Join(calls, ",") + `]},"finish_reason":"tool_calls"}]}`), nil
}

func (m *scriptedModel) ChatStream(ctx context.Context, body []byte, onChunk func([]byte) error) error {
	return fmt.Errorf("not streaming")
}

// slowSandbox runs code until its context ends, as an execution longer
// than the budget does; queued reports the end as the executor does
// while a run still waits for its sandbox (an error), otherwise as a
// killed result. A run whose context has no deadline returns at once,
// so that the test ends on a loop that gives none.
type slowSandbox struct {
	queued bool

	mu          sync.Mutex
	runs        []string
	noDeadlines int
}

func (s *slowSandbox) Run(ctx context.Context, code string) (*executor.Result, error) {
	s.mu.Lock()
	s.runs = append(s.runs, code)
	_, ok := ctx.Deadline()
	if !ok {
		s.noDeadlines++
	}
	s.mu.Unlock()
	if !ok {
		return &executor.Result{Status: executor.StatusOK, Stdout: "ran without a deadline\n"}, nil
	}
	<-ctx.Done()
	if s.queued {
		return nil, ctx.Err()
	}
	// What the executor answers for a cancelled execution.
	return &executor.Result{Status: executor.StatusKilled, Stdout: "partial\n",
		Error: &python.Error{Name: "Killed", Value: "cancelled: " + context.Cause(ctx).Error()}}, nil
}

// The time budget holds within a turn: the first of three calls gets the
// budget as its deadline, and once it is spent the other two are not
// run but answered with a note saying why.
func TestTimeBudgetWithinTurn(t *testing.T) {
	tests := []struct {
		name   string
		queued bool
	}{
		{name: "execution outlasts the budget"},
		{name: "execution still queued when the budget ends", queued: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			model := &scriptedModel{calls: 3}
			sb := &slowSandbox{queued: tt.queued}
			l := &Loop{Model: model, TimeBudget: 50 * time.Millisecond}
			req, err := ParseRequest([]byte(`{"messages":[{"role":"user","content":"run three"}],"tools":[{"type":"code_execution"}]}`))
			if err != nil {
				t.Fatal(err)
			}
			out, err := l.Run(context.Background(), req, sb, "sandbox", nil)
			if err != nil {
				t.Fatalf("Run = %v, want the answer after the budget is spent", err)
			}
			if !strings.Contains(string(out), `"done"`) {
				t.Errorf("Run = %s, want the model's answer", out)
			}
			if sb.noDeadlines > 0 {
				t.Errorf("%d of %d executions had no deadline, want each to end with the budget", sb.noDeadlines, len(sb.runs))
			}
			if len(sb.runs) != 1 {
				t.Errorf("the sandbox ran %q, want only the first call started", sb.runs)
			}
			if len(model.turns) != 2 {
				t.Fatalf("the model was called %d times, want 2", len(model.turns))
			}
			results := map[string]string{}
			for _, m := range model.turns[1] {
				if m["role"] == "tool" {
					results[m["tool_call_id"].(string)], _ = m["content"].(string)
				}
			}
			for _, id := range []string{"call_1", "call_2", "call_3"} {
				if !strings.Contains(results[id], "time budget") {
					t.Errorf("tool result of %s = %q, want it to say the time budget is spent", id, results[id])
				}
			}
		})
	}
}
