package fakellm

import (
	"encoding/json"
	"net/http"
	"time"
	"unicode/utf8"
)

// Usage is an OpenAI usage object.
type Usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

// usageFor counts a quarter token per character (at least 1): the prompt
// is the text of every message plus its tool calls' names and arguments,
// the completion the content or the tool calls' names and arguments.
func usageFor(r *Request, rep Reply) Usage {
	prompt := 0
	for _, m := range r.Messages {
		prompt += utf8.RuneCountInString(m.Text()) + callChars(m.ToolCalls)
	}
	completion := utf8.RuneCountInString(rep.Content) + callChars(rep.ToolCalls)
	u := Usage{PromptTokens: max(1, prompt/4), CompletionTokens: max(1, completion/4)}
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
	return u
}

func callChars(calls []ToolCall) int {
	n := 0
	for _, c := range calls {
		n += utf8.RuneCountInString(c.Function.Name) + utf8.RuneCountInString(c.Function.Arguments)
	}
	return n
}

// UsageFor is the usage the Handler reports for answering body with the
// scripted reply (for tests that check sums).
func UsageFor(body []byte) (Usage, error) {
	r, err := Decode(body)
	if err != nil {
		return Usage{}, err
	}
	return usageFor(r, Decide(r)), nil
}

type respMessage struct {
	Role      string     `json:"role"`
	Content   *string    `json:"content"`
	Refusal   *string    `json:"refusal"`
	ToolCalls []ToolCall `json:"tool_calls,omitempty"`
}

type respChoice struct {
	Index        int             `json:"index"`
	Message      respMessage     `json:"message"`
	Logprobs     json.RawMessage `json:"logprobs"`
	FinishReason string          `json:"finish_reason"`
}

type completionBody struct {
	ID                string       `json:"id"`
	Object            string       `json:"object"`
	Created           int64        `json:"created"`
	Model             string       `json:"model"`
	SystemFingerprint string       `json:"system_fingerprint"`
	Choices           []respChoice `json:"choices"`
	Usage             Usage        `json:"usage"`
}

func completion(r *Request, rep Reply, id string, u Usage) completionBody {
	msg := respMessage{Role: "assistant", ToolCalls: rep.ToolCalls}
	if len(rep.ToolCalls) == 0 {
		content := rep.Content
		msg.Content = &content
	}
	return completionBody{
		ID: id, Object: "chat.completion", Created: time.Now().Unix(), Model: r.Model,
		SystemFingerprint: "fp_fakellm",
		Choices:           []respChoice{{Message: msg, Logprobs: json.RawMessage("null"), FinishReason: rep.FinishReason()}},
		Usage:             u,
	}
}

type deltaFunction struct {
	Name      string `json:"name,omitempty"`
	Arguments string `json:"arguments"`
}

type deltaToolCall struct {
	Index    int           `json:"index"`
	ID       string        `json:"id,omitempty"`
	Type     string        `json:"type,omitempty"`
	Function deltaFunction `json:"function"`
}

type delta struct {
	Role      string          `json:"role,omitempty"`
	Content   *string         `json:"content,omitempty"`
	ToolCalls []deltaToolCall `json:"tool_calls,omitempty"`
}

type chunkChoice struct {
	Index        int             `json:"index"`
	Delta        delta           `json:"delta"`
	Logprobs     json.RawMessage `json:"logprobs"`
	FinishReason *string         `json:"finish_reason"`
}

type chunk struct {
	ID                string        `json:"id"`
	Object            string        `json:"object"`
	Created           int64         `json:"created"`
	Model             string        `json:"model"`
	SystemFingerprint string        `json:"system_fingerprint"`
	Choices           []chunkChoice `json:"choices"`
	Usage             *Usage        `json:"usage,omitempty"`
}

// stream writes rep as chat.completion.chunk events: the role, then the
// content in small deltas, or per tool call a delta with its index, id,
// type and name and then 3+ deltas of its arguments; then the finish
// reason, the usage chunk when asked for, and [DONE].
func (h *Handler) stream(w http.ResponseWriter, r *http.Request, req *Request, rep Reply, id string, u Usage) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	created := time.Now().Unix()
	first := true
	send := func(choices []chunkChoice, usage *Usage) bool {
		if !first && h.chunkDelay > 0 && !sleep(r.Context(), h.chunkDelay) {
			return false
		}
		first = false
		for i := range choices {
			choices[i].Logprobs = json.RawMessage("null")
		}
		c := chunk{ID: id, Object: "chat.completion.chunk", Created: created, Model: req.Model,
			SystemFingerprint: "fp_fakellm", Choices: choices, Usage: usage}
		if c.Choices == nil {
			c.Choices = []chunkChoice{}
		}
		data, _ := json.Marshal(c)
		if _, err := w.Write(append(append([]byte("data: "), data...), '\n', '\n')); err != nil {
			return false
		}
		if flusher != nil {
			flusher.Flush()
		}
		return true
	}
	one := func(d delta) []chunkChoice { return []chunkChoice{{Delta: d}} }

	if len(rep.ToolCalls) == 0 {
		empty := ""
		if !send(one(delta{Role: "assistant", Content: &empty}), nil) {
			return
		}
		for _, piece := range split(rep.Content) {
			if !send(one(delta{Content: &piece}), nil) {
				return
			}
		}
	} else {
		if !send(one(delta{Role: "assistant"}), nil) {
			return
		}
		for i, tc := range rep.ToolCalls {
			head := deltaToolCall{Index: i, ID: tc.ID, Type: "function", Function: deltaFunction{Name: tc.Function.Name}}
			if !send(one(delta{ToolCalls: []deltaToolCall{head}}), nil) {
				return
			}
			for _, piece := range split(tc.Function.Arguments) {
				if !send(one(delta{ToolCalls: []deltaToolCall{{Index: i, Function: deltaFunction{Arguments: piece}}}}), nil) {
					return
				}
			}
		}
	}
	finish := rep.FinishReason()
	if !send([]chunkChoice{{Delta: delta{}, FinishReason: &finish}}, nil) {
		return
	}
	if req.StreamOptions != nil && req.StreamOptions.IncludeUsage {
		if !send(nil, &u) {
			return
		}
	}
	w.Write([]byte("data: [DONE]\n\n"))
	if flusher != nil {
		flusher.Flush()
	}
}

// split cuts s at rune boundaries into pieces of at most 8 runes, and into
// at least 3 pieces when s has 3 runes or more.
func split(s string) []string {
	runes := []rune(s)
	n := len(runes)
	if n == 0 {
		return nil
	}
	size := min(8, max(1, n/3))
	var out []string
	for i := 0; i < n; i += size {
		out = append(out, string(runes[i:min(n, i+size)]))
	}
	return out
}
