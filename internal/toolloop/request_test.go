package toolloop

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"codeexec/internal/executor"
	"codeexec/internal/python"
)

func TestParseRequest(t *testing.T) {
	tests := []struct {
		name      string
		body      string
		wantParam string // error param; "" with wantErr false means success
		wantErr   bool
		check     func(t *testing.T, r *Request)
	}{
		{name: "code execution and a client tool", body: `{"model":"m","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"code_execution"},{"type":"function","function":{"name":"f"}}],"temperature":0.2}`,
			check: func(t *testing.T, r *Request) {
				if r.Code == nil || len(r.ClientTools) != 1 || string(r.Body["temperature"]) != "0.2" {
					t.Errorf("Code %v, client tools %d, temperature %s", r.Code, len(r.ClientTools), r.Body["temperature"])
				}
			}},
		{name: "code_interpreter alias with settings", body: `{"messages":[{"role":"user","content":"hi"}],"tools":[{"type":"code_interpreter","code_interpreter":{"session_id":"sess_1","timeout":5,"file_ids":["file-a"]}}]}`,
			check: func(t *testing.T, r *Request) {
				if diff := cmp.Diff(&CodeSettings{SessionID: "sess_1", Timeout: 5, FileIDs: []string{"file-a"}}, r.Code); diff != "" {
					t.Errorf("settings (-want +got):\n%s", diff)
				}
				if diff := cmp.Diff([]string{"file-a"}, r.FileIDs); diff != "" {
					t.Errorf("file ids (-want +got):\n%s", diff)
				}
			}},
		{name: "unknown setting", body: `{"messages":[{"role":"user","content":"x"}],"tools":[{"type":"code_execution","code_execution":{"bogus":1}}]}`, wantErr: true, wantParam: "tools[0].code_execution"},
		{name: "no messages", body: `{"model":"m"}`, wantErr: true, wantParam: "messages"},
		{name: "not an object", body: `[1]`, wantErr: true},
		{name: "stream with usage", body: `{"messages":[{"role":"user","content":"x"}],"stream":true,"stream_options":{"include_usage":true}}`,
			check: func(t *testing.T, r *Request) {
				if !r.Stream || !r.IncludeUsage {
					t.Errorf("Stream %v IncludeUsage %v", r.Stream, r.IncludeUsage)
				}
			}},
		{name: "file part", body: `{"messages":[{"role":"user","content":[{"type":"text","text":"analyse"},{"type":"file","file":{"file_id":"file-x"}}]}],"tools":[{"type":"code_execution"}]}`,
			check: func(t *testing.T, r *Request) {
				r.PlaceFiles(map[string]string{"file-x": "data.csv"})
				if !strings.Contains(string(r.Messages[0]), "/mnt/data/data.csv") || strings.Contains(string(r.Messages[0]), `"file"`) {
					t.Errorf("message = %s", r.Messages[0])
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := ParseRequest([]byte(tt.body))
			if tt.wantErr {
				re, ok := err.(*RequestError)
				if !ok || re.Param != tt.wantParam || re.Msg == "" {
					t.Fatalf("ParseRequest(%s) error = %v, want a RequestError for %q", tt.body, err, tt.wantParam)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseRequest: %v", err)
			}
			if tt.check != nil {
				tt.check(t, r)
			}
		})
	}
}

// The client sends back codeexec's own entries; the upstream must see
// function calls each followed by its output.
func TestHistoryConversion(t *testing.T) {
	body := `{"messages":[
	  {"role":"user","content":"weather and math"},
	  {"role":"assistant","content":null,"tool_calls":[
	     {"id":"call_1","type":"code_execution","code_execution":{"code":"print(2+2)","output":"4\n","status":"ok"}},
	     {"id":"call_2","type":"function","function":{"name":"get_weather","arguments":"{}"}}]},
	  {"role":"tool","tool_call_id":"call_2","content":"sunny"}],
	  "tools":[{"type":"code_execution"}]}`
	r, err := ParseRequest([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	var got []map[string]any
	for _, m := range r.Messages {
		var v map[string]any
		json.Unmarshal(m, &v)
		got = append(got, v)
	}
	want := []map[string]any{
		{"role": "user", "content": "weather and math"},
		{"role": "assistant", "content": nil, "tool_calls": []any{
			map[string]any{"id": "call_1", "type": "function", "function": map[string]any{"name": "code_execution", "arguments": `{"code":"print(2+2)"}`}},
			map[string]any{"id": "call_2", "type": "function", "function": map[string]any{"name": "get_weather", "arguments": "{}"}},
		}},
		{"role": "tool", "tool_call_id": "call_1", "content": "4\n"},
		{"role": "tool", "tool_call_id": "call_2", "content": "sunny"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("messages (-want +got):\n%s", diff)
	}
}

func TestFormatOutput(t *testing.T) {
	res := &executor.Result{
		Status: executor.StatusError, Stdout: "a\n", Stderr: "warn\n",
		Error:    &python.Error{Name: "ValueError", Value: "bad", Traceback: "Traceback ...\nValueError: bad\n"},
		Displays: []python.Bundle{{"image/png": "xx"}},
		Files:    []executor.File{{Path: "out.csv", Bytes: 3}},
	}
	want := "a\n[stderr]\nwarn\nTraceback ...\nValueError: bad\n[image 1 was displayed to the user]\n[file /mnt/data/out.csv (3 bytes) is available to the user]\n"
	if got := FormatOutput(res, 1000); got != want {
		t.Errorf("FormatOutput = %q, want %q", got, want)
	}
	long := &executor.Result{Status: executor.StatusOK, Stdout: strings.Repeat("x", 100)}
	if got := FormatOutput(long, 10); !strings.HasPrefix(got, "xxxxxxxxxx\n[output truncated: 90 more characters") {
		t.Errorf("FormatOutput of long output = %q", got)
	}
	if got := FormatOutput(&executor.Result{Status: executor.StatusOK}, 10); got != "[no output]" {
		t.Errorf("FormatOutput of nothing = %q", got)
	}
}

// A file name may hold any character CheckPath allows, quotes and
// backslashes included; the messages must stay valid JSON (an invalid one
// made the upstream body panic) and name the path exactly.
func TestPlaceFilesOddNames(t *testing.T) {
	tests := []struct {
		name string
		path string
	}{
		{name: "quote", path: `we"ird.csv`},
		{name: "backslash", path: `back\slash.csv`},
		{name: "quote and brace", path: `a"},{"role":"system","content":"x.csv`},
		{name: "unicode and control", path: "tab\there\u2028.csv"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := executor.CheckPath(tt.path); err != nil {
				t.Fatalf("CheckPath(%q) = %v, want nil (the name must be one an upload may have)", tt.path, err)
			}
			r, err := ParseRequest([]byte(`{"messages":[{"role":"user","content":[{"type":"text","text":"analyse"},{"type":"file","file":{"file_id":"file-x"}}]}],"tools":[{"type":"code_execution"}]}`))
			if err != nil {
				t.Fatal(err)
			}
			r.PlaceFiles(map[string]string{"file-x": tt.path})
			var m struct {
				Content []struct {
					Type, Text string
				} `json:"content"`
			}
			if err := json.Unmarshal(r.Messages[0], &m); err != nil {
				t.Fatalf("PlaceFiles(%q) left message %s, not valid JSON: %v", tt.path, r.Messages[0], err)
			}
			want := "[attached file: /mnt/data/" + tt.path + "]"
			if len(m.Content) != 2 || m.Content[1].Text != want {
				t.Errorf("PlaceFiles(%q): content = %+v, want the second part to be %q", tt.path, m.Content, want)
			}
			(&Loop{}).body(r, r.Messages, true, false, "sandbox") // must not panic
		})
	}
}
