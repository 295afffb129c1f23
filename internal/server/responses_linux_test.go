package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"

	"codeexec/internal/fakellm"
)

// TestResponses drives POST /v1/responses with the official Go SDK,
// unmodified, against the scripted fake model.
func TestResponses(t *testing.T) {
	env := startChatEnv(t, nil)
	t.Run("Outputs", func(t *testing.T) { t.Parallel(); testResponsesOutputs(t, env) })
	t.Run("Stream", func(t *testing.T) { t.Parallel(); testResponsesStream(t, env) })
	t.Run("Chart", func(t *testing.T) { t.Parallel(); testResponsesChart(t, env) })
	t.Run("Chained", func(t *testing.T) { t.Parallel(); testResponsesChained(t, env) })
	t.Run("ContainerFile", func(t *testing.T) { t.Parallel(); testResponsesContainerFile(t, env) })
	t.Run("FunctionCall", func(t *testing.T) { t.Parallel(); testResponsesFunctionCall(t, env) })
	t.Run("ProviderError", func(t *testing.T) { t.Parallel(); testResponsesProviderError(t, env) })
	t.Run("Stored", func(t *testing.T) { t.Parallel(); testResponsesStored(t, env) })
	t.Run("ExpiredContainer", func(t *testing.T) { t.Parallel(); testResponsesExpiredContainer(t, env) })
	t.Run("BadRequests", func(t *testing.T) { t.Parallel(); testResponsesBadRequests(t, env) })
	t.Run("Seeds", func(t *testing.T) { t.Parallel(); testResponsesSeeds(t, env) })
}

func autoContainer(fileIDs ...string) []responses.ToolUnionParam {
	return []responses.ToolUnionParam{{OfCodeInterpreter: &responses.ToolCodeInterpreterParam{
		Container: responses.ToolCodeInterpreterContainerUnionParam{
			OfCodeInterpreterToolAuto: &responses.ToolCodeInterpreterContainerCodeInterpreterContainerAutoParam{FileIDs: fileIDs}}}}}
}

func textInput(s string) responses.ResponseNewParamsInputUnion {
	return responses.ResponseNewParamsInputUnion{OfString: openai.String(s)}
}

// codeCalls is the response's code_interpreter_call items.
func codeCalls(r *responses.Response) []responses.ResponseCodeInterpreterToolCall {
	var out []responses.ResponseCodeInterpreterToolCall
	for _, it := range r.Output {
		if it.Type == "code_interpreter_call" {
			out = append(out, it.AsCodeInterpreterCall())
		}
	}
	return out
}

func testResponsesOutputs(t *testing.T, env *chatEnv) {
	model, fake := env.model(t)
	client := sdkClient(env)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, include := range []bool{true, false} {
		params := responses.ResponseNewParams{Model: model, Input: textInput("Calculate the first 20 Fibonacci numbers"),
			Tools: autoContainer()}
		if include {
			params.Include = []responses.ResponseIncludable{responses.ResponseIncludableCodeInterpreterCallOutputs}
		}
		resp, err := client.Responses.New(ctx, params)
		if err != nil {
			t.Fatalf("Responses.New: %v", err)
		}
		if resp.Status != "completed" || !strings.HasPrefix(resp.ID, "resp_") || resp.Object != "response" {
			t.Errorf("response status %q id %q object %q", resp.Status, resp.ID, resp.Object)
		}
		calls := codeCalls(resp)
		if len(calls) != 1 {
			t.Fatalf("code_interpreter_calls = %d, want 1: %s", len(calls), resp.RawJSON())
		}
		c := calls[0]
		if c.Code != fakellm.FibonacciCode || c.Status != "completed" || c.ContainerID == "" {
			t.Errorf("code_interpreter_call = %+v", c)
		}
		if include {
			if len(c.Outputs) == 0 || c.Outputs[0].Type != "logs" || !strings.Contains(c.Outputs[0].Logs, "4181") {
				t.Errorf("outputs with include = %s, want logs with 4181", c.RawJSON())
			}
		} else if c.JSON.Outputs.Raw() != "null" {
			t.Errorf("outputs without include = %s, want null", c.JSON.Outputs.Raw())
		}
		if text := resp.OutputText(); !strings.Contains(text, "The first 20 Fibonacci numbers are") || !strings.Contains(text, "4181") {
			t.Errorf("output_text = %q", text)
		}
		u := usageSum(t, fake)
		if resp.Usage.InputTokens == 0 || resp.Usage.TotalTokens == 0 {
			t.Errorf("usage = %+v (fake says %+v)", resp.Usage, u)
		}
		fake.Reset()
	}
}

func testResponsesStream(t *testing.T, env *chatEnv) {
	model, _ := env.model(t)
	client := sdkClient(env)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stream := client.Responses.NewStreaming(ctx, responses.ResponseNewParams{Model: model,
		Input: textInput("Calculate the first 20 Fibonacci numbers"), Tools: autoContainer(),
		Include: []responses.ResponseIncludable{responses.ResponseIncludableCodeInterpreterCallOutputs}})
	var types []string
	var final responses.Response
	var text, code strings.Builder
	seq := int64(-1)
	for stream.Next() {
		ev := stream.Current()
		if ev.SequenceNumber != seq+1 {
			t.Errorf("event %s has sequence_number %d after %d", ev.Type, ev.SequenceNumber, seq)
		}
		seq = ev.SequenceNumber
		types = append(types, ev.Type)
		switch ev.Type {
		case "response.output_text.delta":
			text.WriteString(ev.Delta)
		case "response.code_interpreter_call_code.delta":
			code.WriteString(ev.Delta)
		case "response.completed":
			final = ev.Response
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	want := []string{"response.created", "response.in_progress", "response.output_item.added",
		"response.code_interpreter_call.in_progress", "response.code_interpreter_call_code.delta",
		"response.code_interpreter_call_code.done", "response.code_interpreter_call.interpreting",
		"response.code_interpreter_call.completed", "response.output_item.done", "response.output_item.added",
		"response.content_part.added", "response.output_text.delta", "response.output_text.done",
		"response.content_part.done", "response.output_item.done", "response.completed"}
	var got []string
	for _, ty := range types {
		if len(got) == 0 || got[len(got)-1] != ty || ty != "response.output_text.delta" {
			got = append(got, ty)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("events (text deltas folded):\n got %q\nwant %q", got, want)
	}
	if code.String() != fakellm.FibonacciCode {
		t.Errorf("code deltas = %q", code.String())
	}
	if final.Status != "completed" || final.OutputText() != text.String() || !strings.Contains(text.String(), "4181") {
		t.Errorf("completed response %q with text %q; deltas %q", final.Status, final.OutputText(), text.String())
	}
	stored, err := client.Responses.Get(ctx, final.ID, responses.ResponseGetParams{})
	if err != nil || stored.OutputText() != final.OutputText() {
		t.Errorf("GET of the streamed response = %v, %v", stored, err)
	}
}

func testResponsesChart(t *testing.T, env *chatEnv) {
	model, _ := env.model(t)
	client := sdkClient(env)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resp, err := client.Responses.New(ctx, responses.ResponseNewParams{Model: model,
		Input: textInput("Draw a bar chart and save the chart"), Tools: autoContainer(),
		Include: []responses.ResponseIncludable{responses.ResponseIncludableCodeInterpreterCallOutputs}})
	if err != nil {
		t.Fatal(err)
	}
	calls := codeCalls(resp)
	if len(calls) != 1 {
		t.Fatalf("code calls = %d: %s", len(calls), resp.RawJSON())
	}
	var image string
	for _, o := range calls[0].Outputs {
		if o.Type == "image" {
			image = o.URL
		}
	}
	if !strings.HasPrefix(image, "data:image/png;base64,") {
		t.Errorf("image output = %.60q, want a PNG data URL", image)
	}
	var cites []responses.ResponseOutputTextAnnotationContainerFileCitation
	for _, it := range resp.Output {
		if it.Type != "message" {
			continue
		}
		for _, c := range it.AsMessage().Content {
			for _, a := range c.Annotations {
				if a.Type == "container_file_citation" {
					cites = append(cites, a.AsContainerFileCitation())
				}
			}
		}
	}
	if len(cites) != 1 {
		t.Fatalf("container_file_citations = %d, want 1: %s", len(cites), resp.RawJSON())
	}
	c := cites[0]
	text := resp.OutputText()
	if c.Filename != "chart.png" || c.ContainerID != calls[0].ContainerID || c.FileID == "" ||
		c.StartIndex < 0 || int(c.EndIndex) > len(text) || text[c.StartIndex:c.EndIndex] != "chart.png" {
		t.Errorf("citation = %+v in %q", c, text)
	}
	r := env.do("GET", "/v1/files/"+c.FileID+"/content", keyA, nil)
	defer r.Body.Close()
	var head [8]byte
	r.Body.Read(head[:])
	if r.StatusCode != 200 || string(head[1:4]) != "PNG" {
		t.Errorf("cited file = %d %q", r.StatusCode, head)
	}
}

// A CSV uploaded and given to an auto container, analysed, then a second
// response chained by previous_response_id runs in the same container.
func testResponsesChained(t *testing.T, env *chatEnv) {
	model, _ := env.model(t)
	client := sdkClient(env)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	f := upload(t, env.service, keyA, "sales.csv", "month,sales\n1,100\n2,120\n3,150\n")
	first, err := client.Responses.New(ctx, responses.ResponseNewParams{Model: model,
		Input: textInput("Analyse the attached file /mnt/data/sales.csv and set total to 370"), Tools: autoContainer(f["id"].(string))})
	if err != nil {
		t.Fatal(err)
	}
	if text := first.OutputText(); !strings.Contains(text, "rows: 3, sales sum: 370") {
		t.Errorf("first answer = %q", text)
	}
	second, err := client.Responses.New(ctx, responses.ResponseNewParams{Model: model, Input: textInput("set x to 41"),
		Tools: autoContainer(), PreviousResponseID: openai.String(first.ID)})
	if err != nil {
		t.Fatal(err)
	}
	third, err := client.Responses.New(ctx, responses.ResponseNewParams{Model: model, Input: textInput("what is x plus 1"),
		Tools: autoContainer(), PreviousResponseID: openai.String(second.ID)})
	if err != nil {
		t.Fatal(err)
	}
	if text := third.OutputText(); !strings.Contains(text, "x plus 1 is 42") {
		t.Errorf("third answer = %q, want x plus 1 is 42 (the container kept x)", text)
	}
	a, b, c := codeCalls(first), codeCalls(second), codeCalls(third)
	if len(a) != 1 || len(b) != 1 || len(c) != 1 || a[0].ContainerID != b[0].ContainerID || b[0].ContainerID != c[0].ContainerID {
		t.Errorf("the chained responses ran in containers %v %v %v, want one", a, b, c)
	}
	if third.PreviousResponseID != second.ID {
		t.Errorf("previous_response_id = %q", third.PreviousResponseID)
	}
}

// A CSV uploaded to a container with the Containers API is analysed in
// two responses chained by previous_response_id, both in that container.
func testResponsesContainerFile(t *testing.T, env *chatEnv) {
	model, _ := env.model(t)
	client := sdkClient(env)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := client.Containers.New(ctx, openai.ContainerNewParams{Name: "analysis"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Containers.Files.New(ctx, c.ID, openai.ContainerFileNewParams{
		File: openai.File(strings.NewReader("month,sales\n1,100\n2,120\n3,150\n"), "sales.csv", "text/csv")}); err != nil {
		t.Fatal(err)
	}
	named := []responses.ToolUnionParam{{OfCodeInterpreter: &responses.ToolCodeInterpreterParam{
		Container: responses.ToolCodeInterpreterContainerUnionParam{OfString: openai.String(c.ID)}}}}
	first, err := client.Responses.New(ctx, responses.ResponseNewParams{Model: model, Tools: named,
		Input: textInput("Analyse the attached file /mnt/data/sales.csv")})
	if err != nil {
		t.Fatal(err)
	}
	second, err := client.Responses.New(ctx, responses.ResponseNewParams{Model: model, Tools: autoContainer(),
		PreviousResponseID: openai.String(first.ID), Input: textInput("Look at the attached /mnt/data/sales.csv again")})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range []*responses.Response{first, second} {
		calls := codeCalls(r)
		if len(calls) != 1 || calls[0].ContainerID != c.ID || !strings.Contains(r.OutputText(), "rows: 3, sales sum: 370") {
			t.Errorf("response %d: calls %v, answer %q; want one call in %s and the sum", i+1, calls, r.OutputText(), c.ID)
		}
	}
}

func testResponsesFunctionCall(t *testing.T, env *chatEnv) {
	model, _ := env.model(t)
	client := sdkClient(env)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	weather := responses.ToolParamOfFunction(fakellm.WeatherTool, map[string]any{"type": "object",
		"properties": map[string]any{"city": map[string]any{"type": "string"}}}, false)
	resp, err := client.Responses.New(ctx, responses.ResponseNewParams{Model: model, Input: textInput("What is the weather in Paris?"),
		Tools: []responses.ToolUnionParam{weather}})
	if err != nil {
		t.Fatal(err)
	}
	var call responses.ResponseFunctionToolCall
	for _, it := range resp.Output {
		if it.Type == "function_call" {
			call = it.AsFunctionCall()
		}
	}
	if call.Name != fakellm.WeatherTool || call.CallID == "" || !strings.Contains(call.Arguments, fakellm.WeatherCity) {
		t.Fatalf("function_call = %+v in %s", call, resp.RawJSON())
	}
	next, err := client.Responses.New(ctx, responses.ResponseNewParams{Model: model, PreviousResponseID: openai.String(resp.ID),
		Tools: []responses.ToolUnionParam{weather},
		Input: responses.ResponseNewParamsInputUnion{OfInputItemList: responses.ResponseInputParam{{
			OfFunctionCallOutput: &responses.ResponseInputItemFunctionCallOutputParam{CallID: openai.String(call.CallID),
				Output: responses.ResponseInputItemFunctionCallOutputOutputUnionParam{OfString: openai.String("sunny, 21 C")}}}}}})
	if err != nil {
		t.Fatal(err)
	}
	if text := next.OutputText(); !strings.Contains(text, "sunny") {
		t.Errorf("answer after the function output = %q", text)
	}
}

func testResponsesProviderError(t *testing.T, env *chatEnv) {
	model, fake := env.model(t)
	client := sdkClient(env)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	fake.QueueFaults(fakellm.Fault{Status: http.StatusBadRequest, Message: "the model refuses this"})
	_, err := client.Responses.New(ctx, responses.ResponseNewParams{Model: model, Input: textInput("hi")})
	var apiErr *openai.Error
	if !errorsAs(err, &apiErr) || apiErr.StatusCode != http.StatusBadRequest || !strings.Contains(apiErr.Message, "refuses") {
		t.Errorf("with the provider refusing: %v, want its 400", err)
	}
	e500 := fakellm.Fault{Status: http.StatusInternalServerError}
	fake.QueueFaults(e500, e500, e500)
	stream := client.Responses.NewStreaming(ctx, responses.ResponseNewParams{Model: model, Input: textInput("hi")})
	var last string
	for stream.Next() {
		last = stream.Current().Type
	}
	if last != "response.failed" {
		t.Errorf("streamed with the provider failing: last event %q (%v), want response.failed", last, stream.Err())
	}
}

func testResponsesStored(t *testing.T, env *chatEnv) {
	model, _ := env.model(t)
	client := sdkClient(env)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resp, err := client.Responses.New(ctx, responses.ResponseNewParams{Model: model, Input: textInput("hello"),
		Instructions: openai.String("Be brief."), Metadata: map[string]string{"k": "v"}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := client.Responses.Get(ctx, resp.ID, responses.ResponseGetParams{})
	if err != nil || got.ID != resp.ID || got.Metadata["k"] != "v" || got.Instructions.OfString != "Be brief." {
		t.Errorf("Get = %+v, %v", got, err)
	}
	items, err := client.Responses.InputItems.List(ctx, resp.ID, responses.InputItemListParams{})
	if err != nil || len(items.Data) != 1 || items.Data[0].Type != "message" {
		t.Errorf("input items = %+v, %v", items, err)
	}
	// Another key sees nothing.
	if st, _ := env.call("GET", "/v1/responses/"+resp.ID, keyB, nil); st != 404 {
		t.Errorf("another key's GET = %d, want 404", st)
	}
	if err := client.Responses.Delete(ctx, resp.ID); err != nil {
		t.Errorf("Delete: %v", err)
	}
	if _, err := client.Responses.Get(ctx, resp.ID, responses.ResponseGetParams{}); err == nil {
		t.Errorf("Get after Delete succeeded")
	}
	// store: false keeps nothing, and a follow-up to it is refused.
	unstored, err := client.Responses.New(ctx, responses.ResponseNewParams{Model: model, Input: textInput("hello"), Store: openai.Bool(false)})
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := env.call("GET", "/v1/responses/"+unstored.ID, keyA, nil); st != 404 {
		t.Errorf("GET of a store:false response = %d, want 404", st)
	}
	st, body := env.call("POST", "/v1/responses", keyA, map[string]any{"model": model, "input": "hi", "previous_response_id": unstored.ID})
	if param, _, _ := errOf(body); st != 404 || param != "previous_response_id" {
		t.Errorf("following a store:false response = %d %v, want 404 on previous_response_id", st, body)
	}
}

func testResponsesExpiredContainer(t *testing.T, env *chatEnv) {
	model, _ := env.model(t)
	client := sdkClient(env)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := client.Containers.New(ctx, openai.ContainerNewParams{Name: "doomed"})
	if err != nil {
		t.Fatal(err)
	}
	named := []responses.ToolUnionParam{{OfCodeInterpreter: &responses.ToolCodeInterpreterParam{
		Container: responses.ToolCodeInterpreterContainerUnionParam{OfString: openai.String(c.ID)}}}}
	resp, err := client.Responses.New(ctx, responses.ResponseNewParams{Model: model, Input: textInput("set y to 5"), Tools: named})
	if err != nil {
		t.Fatal(err)
	}
	if calls := codeCalls(resp); len(calls) != 1 || calls[0].ContainerID != c.ID {
		t.Errorf("code calls %v, want one in %s", calls, c.ID)
	}
	// The code takes more memory than its container has: the kernel
	// kills its process, and the container is expired.
	if st, res := env.call("POST", "/v1/sessions/"+c.ID+"/execute", keyA, map[string]any{"code": "b = bytearray(3 << 30)"}); st != 200 || res["status"] != "memory_limit" {
		t.Errorf("the execution over the memory limit = %d %v", st, res)
	}
	_, err = client.Responses.New(ctx, responses.ResponseNewParams{Model: model, Input: textInput("what is y plus 1"), Tools: named})
	var apiErr *openai.Error
	if !errorsAs(err, &apiErr) || apiErr.StatusCode != 400 || !strings.Contains(apiErr.Message, "Container is expired") {
		t.Errorf("a response in an expired container: %v, want 400 Container is expired.", err)
	}
	// With auto, the conversation goes on in a new container.
	next, err := client.Responses.New(ctx, responses.ResponseNewParams{Model: model, Input: textInput("set z to 1"),
		Tools: autoContainer(), PreviousResponseID: openai.String(resp.ID)})
	if err != nil {
		t.Fatal(err)
	}
	if calls := codeCalls(next); len(calls) != 1 || calls[0].ContainerID == c.ID || !strings.HasPrefix(calls[0].ContainerID, "cntr_") {
		t.Errorf("after the container expired, auto ran in %v, want a new container", calls)
	}
}

func testResponsesBadRequests(t *testing.T, env *chatEnv) {
	model, _ := env.model(t)
	for _, tt := range []struct {
		body  map[string]any
		param string
	}{
		{map[string]any{"input": "hi"}, "model"},
		{map[string]any{"model": model}, "input"},
		{map[string]any{"model": model, "input": "hi", "background": true}, "background"},
		{map[string]any{"model": model, "input": "hi", "tools": []any{map[string]any{"type": "file_search"}}}, "tools[0]"},
		{map[string]any{"model": model, "input": []any{map[string]any{"type": "item_reference", "id": "x"}}}, "input[0]"},
		{map[string]any{"model": model, "input": "hi", "bogus": 1}, "bogus"},
		{map[string]any{"model": model, "input": "hi", "tools": []any{map[string]any{"type": "code_interpreter",
			"container": map[string]any{"type": "auto", "memory_limit": "64g"}}}}, "memory_limit"},
	} {
		st, body := env.call("POST", "/v1/responses", keyA, tt.body)
		if param, _, _ := errOf(body); st != 400 || param != tt.param {
			data, _ := json.Marshal(tt.body)
			t.Errorf("POST %s = %d %v, want 400 on %s", data, st, body, tt.param)
		}
	}
}

// The seed document's examples, through /v1/responses: the same code runs
// and the answers carry its results.
func testResponsesSeeds(t *testing.T, env *chatEnv) {
	csvData := "month,revenue\n1,100\n2,120\n3,90\n4,160"
	code := map[string]any{"type": "code_interpreter", "container": map[string]any{"type": "auto"}}
	tests := []struct {
		name, prompt string
		tools        []any
		kinds        []string // output item types, in order
		code, logs   string   // of the last code_interpreter_call
		answer       string   // in the output text
		image        bool
	}{
		{"compound interest", "Calculate the compound interest on $10,000 at 5% for 10 years", []any{code},
			[]string{"code_interpreter_call", "message"}, fakellm.CompoundInterestCode, "16288.95", "16288.95", false},
		{"CSV trends", "Analyze this CSV data and find trends:\n" + csvData, []any{code},
			[]string{"code_interpreter_call", "message"}, fakellm.CSVCode(csvData), "revenue trend: mixed, mean change 20.0", "The analysis shows", false},
		{"Fibonacci", "Calculate the first 20 Fibonacci numbers", []any{code},
			[]string{"code_interpreter_call", "message"}, fakellm.FibonacciCode, "4181", "4181", false},
		{"bar chart", "Create a bar chart showing the top 5 programming languages by popularity",
			[]any{map[string]any{"type": "code_execution"}}, // xAI's name
			[]string{"code_interpreter_call", "message"}, fakellm.BarChartCode, "", fakellm.ChartAnswer, true},
		{"web search and code", "Search for Bitcoin price history and plot it",
			[]any{map[string]any{"type": "web_search"}, code},
			[]string{"web_search_call", "code_interpreter_call", "message"}, "", "", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			model, _ := env.model(t)
			st, body := env.call("POST", "/v1/responses", keyA, map[string]any{"model": model, "input": tt.prompt,
				"tools": tt.tools, "include": []string{"code_interpreter_call.outputs"}})
			if st != 200 {
				t.Fatalf("POST /v1/responses = %d %v", st, body)
			}
			data, _ := json.Marshal(body)
			var resp responses.Response
			if err := json.Unmarshal(data, &resp); err != nil {
				t.Fatal(err)
			}
			var kinds []string
			for _, it := range resp.Output {
				kinds = append(kinds, it.Type)
			}
			if !slices.Equal(kinds, tt.kinds) {
				t.Fatalf("output items %q, want %q: %s", kinds, tt.kinds, data)
			}
			calls := codeCalls(&resp)
			c := calls[len(calls)-1]
			var logs string
			images := 0
			for _, o := range c.Outputs {
				switch o.Type {
				case "logs":
					logs += o.Logs
				case "image":
					images++
				}
			}
			if (tt.code != "" && c.Code != tt.code) || !strings.Contains(logs, tt.logs) || (images > 0) != tt.image {
				t.Errorf("code_interpreter_call code %q logs %q with %d images", c.Code, logs, images)
			}
			if !strings.Contains(resp.OutputText(), tt.answer) {
				t.Errorf("answer %q, want %q in it", resp.OutputText(), tt.answer)
			}
		})
	}
}

// errorsAs is errors.As for the SDK's error type.
func errorsAs(err error, target **openai.Error) bool {
	if e, ok := err.(*openai.Error); ok {
		*target = e
		return true
	}
	return false
}

var _ = option.WithBaseURL
