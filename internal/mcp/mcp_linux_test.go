package mcp_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"codeexec/internal/executor"
	"codeexec/internal/mcp"
	"codeexec/internal/testenv"
)

// newExecutor is a small executor for the test.
func newExecutor(t testing.TB) *executor.Executor {
	t.Helper()
	testenv.Root(t, "the executor needs root (namespaces with a uid range, cgroups)")
	testenv.Python(t, "matplotlib")
	ex, err := executor.New(context.Background(), executor.Config{PoolSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ex.Close() })
	return ex
}

func options(b mcp.Backend) mcp.Options {
	return mcp.Options{Backend: b, Timeout: 30 * time.Second, MaxTimeout: time.Minute, MemoryMB: 512,
		Idle: 10 * time.Minute, MaxFileBytes: 1 << 20}
}

// inProcess connects an SDK client to a Service over in-memory transports.
func inProcess(t *testing.T, svc *mcp.Service, opts *sdk.ClientOptions) *sdk.ClientSession {
	t.Helper()
	st, ct := sdk.NewInMemoryTransports()
	ctx := context.Background()
	ss, err := svc.Server().Connect(ctx, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ss.Close() })
	cs, err := sdk.NewClient(&sdk.Implementation{Name: "test", Version: "1"}, opts).Connect(ctx, ct, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

func newService(t testing.TB) *mcp.Service {
	t.Helper()
	svc, err := mcp.New(options(mcp.ExecutorBackend{Exec: newExecutor(t), Idle: 10 * time.Minute}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	return svc
}

func call(t *testing.T, cs *sdk.ClientSession, tool string, args map[string]any) *sdk.CallToolResult {
	t.Helper()
	res, err := cs.CallTool(context.Background(), &sdk.CallToolParams{Name: tool, Arguments: args})
	if err != nil {
		t.Fatalf("%s %v: %v", tool, args, err)
	}
	return res
}

// run calls run_python and fails the test unless it succeeded.
func run(t *testing.T, cs *sdk.ClientSession, code string) *sdk.CallToolResult {
	t.Helper()
	res := call(t, cs, "run_python", map[string]any{"code": code})
	if res.IsError {
		t.Fatalf("run_python %q is an error: %s", code, texts(res))
	}
	return res
}

func texts(res *sdk.CallToolResult) string {
	var b strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(*sdk.TextContent); ok {
			b.WriteString(tc.Text)
			b.WriteString("\n")
		}
	}
	return b.String()
}

func structured(t *testing.T, res *sdk.CallToolResult) map[string]any {
	t.Helper()
	data, err := json.Marshal(res.StructuredContent)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("structuredContent %s: %v", data, err)
	}
	return m
}

// checkSession runs the checks every transport must pass: the tools are
// listed with descriptions that tell what the sandbox has, and state is
// kept between calls.
func checkSession(t *testing.T, cs *sdk.ClientSession) {
	t.Helper()
	tools, err := cs.ListTools(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]string{}
	for _, tl := range tools.Tools {
		names[tl.Name] = tl.Description
	}
	for _, n := range []string{"run_python", "reset_sandbox", "upload_file", "list_files", "read_file"} {
		if names[n] == "" {
			t.Errorf("tool %s is missing or has no description: %v", n, names)
		}
	}
	for _, want := range []string{"numpy", "pandas", "/mnt/data", "network", "MiB"} {
		if !strings.Contains(names["run_python"], want) {
			t.Errorf("run_python's description does not mention %q: %s", want, names["run_python"])
		}
	}
	run(t, cs, "import math\nx = 41")
	res := run(t, cs, "print('hello')\nx + 1")
	if got := texts(res); !strings.Contains(got, "hello") || !strings.Contains(got, "result: 42") {
		t.Errorf("second call's text = %q, want hello and result: 42 (state kept)", got)
	}
	if m := structured(t, res); m["status"] != "ok" || m["stdout"] != "hello\n" {
		t.Errorf("structuredContent = %v, want status ok and stdout hello", m)
	}
}

func TestInProcess(t *testing.T) {
	cs := inProcess(t, newService(t), nil)
	checkSession(t, cs)

	t.Run("image and file results", func(t *testing.T) {
		res := run(t, cs, "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()\n"+
			"open('out.txt', 'w').write('from the sandbox')\nimport os\nos.makedirs('sub dir', exist_ok=True)\nopen('sub dir/b.bin', 'wb').write(bytes(range(256)))")
		var images, links int
		uris := map[string]bool{}
		for _, c := range res.Content {
			switch c := c.(type) {
			case *sdk.ImageContent:
				images++
				if c.MIMEType != "image/png" || !bytes.HasPrefix(c.Data, []byte("\x89PNG")) {
					t.Errorf("image content %s of %d bytes is not a PNG", c.MIMEType, len(c.Data))
				}
			case *sdk.ResourceLink:
				links++
				uris[c.URI] = true
			}
		}
		if images != 1 || !uris["codeexec://files/out.txt"] || !uris["codeexec://files/sub%20dir/b.bin"] {
			t.Fatalf("images %d, links %v; want one image and links to out.txt and sub dir/b.bin", images, uris)
		}
		rr, err := cs.ReadResource(context.Background(), &sdk.ReadResourceParams{URI: "codeexec://files/out.txt"})
		if err != nil || len(rr.Contents) != 1 || rr.Contents[0].Text != "from the sandbox" {
			t.Fatalf("ReadResource out.txt = %+v, %v", rr, err)
		}
		rr, err = cs.ReadResource(context.Background(), &sdk.ReadResourceParams{URI: "codeexec://files/sub%20dir/b.bin"})
		if err != nil || len(rr.Contents) != 1 || len(rr.Contents[0].Blob) != 256 || rr.Contents[0].Blob[255] != 255 {
			t.Fatalf("ReadResource b.bin = %+v, %v", rr, err)
		}
		lr, err := cs.ListResources(context.Background(), nil)
		if err != nil {
			t.Fatal(err)
		}
		listed := map[string]bool{}
		for _, r := range lr.Resources {
			listed[r.URI] = true
		}
		if !listed["codeexec://files/out.txt"] || !listed["codeexec://files/sub%20dir/b.bin"] {
			t.Errorf("resources/list = %v, want the two files", listed)
		}
		if got := texts(call(t, cs, "list_files", nil)); !strings.Contains(got, "out.txt\t16 bytes") {
			t.Errorf("list_files = %q", got)
		}
		if got := texts(call(t, cs, "read_file", map[string]any{"path": "out.txt"})); got != "from the sandbox\n" {
			t.Errorf("read_file out.txt = %q", got)
		}
		res = call(t, cs, "read_file", map[string]any{"path": "sub dir/b.bin"})
		if er, ok := res.Content[0].(*sdk.EmbeddedResource); res.IsError || !ok || len(er.Resource.Blob) != 256 {
			t.Errorf("read_file b.bin = %+v", res.Content[0])
		}
	})

	t.Run("upload", func(t *testing.T) {
		if res := call(t, cs, "upload_file", map[string]any{"path": "in/data.csv", "content": "a,b\n1,2\n"}); res.IsError {
			t.Fatal(texts(res))
		}
		png := base64.StdEncoding.EncodeToString([]byte("\x89PNG\r\n\x1a\nnot really"))
		if res := call(t, cs, "upload_file", map[string]any{"path": "p.png", "content": png, "encoding": "base64"}); res.IsError {
			t.Fatal(texts(res))
		}
		res := run(t, cs, "import pandas as pd\nprint(pd.read_csv('in/data.csv').b.sum())")
		if got := texts(res); !strings.HasPrefix(got, "2\n") {
			t.Errorf("reading the uploaded CSV printed %q", got)
		}
		res = call(t, cs, "read_file", map[string]any{"path": "p.png"})
		if img, ok := res.Content[0].(*sdk.ImageContent); !ok || img.MIMEType != "image/png" || !bytes.HasPrefix(img.Data, []byte("\x89PNG")) {
			t.Errorf("read_file p.png = %+v, want image content", res.Content[0])
		}
	})

	t.Run("bad arguments are tool errors", func(t *testing.T) {
		for _, tc := range []struct {
			tool string
			args map[string]any
		}{
			{"run_python", map[string]any{}},
			{"run_python", map[string]any{"code": 12}},
			{"run_python", map[string]any{"code": "   "}},
			{"run_python", map[string]any{"code": "1", "timeout": -1}},
			{"run_python", map[string]any{"code": "1", "timeout": 1e9}},
			{"run_python", map[string]any{"code": "1", "extra": true}},
			{"upload_file", map[string]any{"path": "../etc/passwd", "content": "x"}},
			{"upload_file", map[string]any{"path": "/abs", "content": "x"}},
			{"upload_file", map[string]any{"path": "a", "content": "!!", "encoding": "base64"}},
			{"upload_file", map[string]any{"path": "a", "content": "x", "encoding": "rot13"}},
			{"upload_file", map[string]any{"path": "big", "content": strings.Repeat("x", 1<<20+1)}},
			{"read_file", map[string]any{"path": "no/such/file"}},
			{"read_file", map[string]any{"path": ".."}},
			{"reset_sandbox", map[string]any{"keep_files": "yes"}},
		} {
			if res := call(t, cs, tc.tool, tc.args); !res.IsError || texts(res) == "" {
				t.Errorf("%s %v: IsError %v, text %q; want a tool error that says why", tc.tool, tc.args, res.IsError, texts(res))
			}
		}
		if _, err := cs.CallTool(context.Background(), &sdk.CallToolParams{Name: "no_such_tool"}); err == nil {
			t.Error("an unknown tool was accepted")
		}
		if got := texts(run(t, cs, "x")); !strings.Contains(got, "result: 41") {
			t.Errorf("after the bad calls the session has x = %q, want 41", got)
		}
	})

	t.Run("timeout", func(t *testing.T) {
		res := call(t, cs, "run_python", map[string]any{"code": "import time\ntime.sleep(30)", "timeout": 0.5})
		if !res.IsError || structured(t, res)["status"] != "timeout" || !strings.Contains(texts(res), "status: timeout") {
			t.Fatalf("sleep past the timeout: IsError %v, %s, %v", res.IsError, texts(res), res.StructuredContent)
		}
		if got := texts(run(t, cs, "x")); !strings.Contains(got, "result: 41") {
			t.Errorf("after the timeout the session has x = %q, want 41 (interrupted, not killed)", got)
		}
	})

	t.Run("error", func(t *testing.T) {
		res := call(t, cs, "run_python", map[string]any{"code": "1/0"})
		if !res.IsError || !strings.Contains(texts(res), "ZeroDivisionError") || structured(t, res)["status"] != "error" {
			t.Errorf("1/0: IsError %v, %q", res.IsError, texts(res))
		}
	})

	t.Run("a killed sandbox is replaced", func(t *testing.T) {
		run(t, cs, "y = 1")
		res := call(t, cs, "run_python", map[string]any{"code": "import os\nos._exit(3)"})
		if !res.IsError || !strings.Contains(texts(res), "fresh sandbox") {
			t.Fatalf("the code killed its process: IsError %v, %q", res.IsError, texts(res))
		}
		res = call(t, cs, "run_python", map[string]any{"code": "y"})
		if !res.IsError || !strings.Contains(texts(res), "NameError") {
			t.Errorf("y in the fresh sandbox: %q, want NameError", texts(res))
		}
		if got := texts(run(t, cs, "z = 2\nz")); !strings.Contains(got, "result: 2") {
			t.Errorf("the fresh sandbox: %q", got)
		}
	})

	t.Run("reset", func(t *testing.T) {
		run(t, cs, "x = 41\nopen('out.txt', 'w').write('from the sandbox')")
		if res := call(t, cs, "reset_sandbox", nil); res.IsError {
			t.Fatal(texts(res))
		}
		res := call(t, cs, "run_python", map[string]any{"code": "x"})
		if !res.IsError || !strings.Contains(texts(res), "NameError") {
			t.Errorf("x after a reset: %q, want NameError", texts(res))
		}
		if got := texts(run(t, cs, "print(open('out.txt').read())")); !strings.Contains(got, "from the sandbox") {
			t.Errorf("out.txt after a reset keeping files: %q", got)
		}
		if res := call(t, cs, "reset_sandbox", map[string]any{"keep_files": false}); res.IsError {
			t.Fatal(texts(res))
		}
		if got := texts(call(t, cs, "list_files", nil)); !strings.Contains(got, "empty") {
			t.Errorf("list_files after a reset without files: %q", got)
		}
	})
}

// TestProgressAndCancel: output arrives as progress notifications while
// the code runs, and cancelling the call stops the execution.
func TestProgressAndCancel(t *testing.T) {
	var mu sync.Mutex
	var msgs []string
	first := make(chan struct{})
	var once sync.Once
	cs := inProcess(t, newService(t), &sdk.ClientOptions{ProgressNotificationHandler: func(_ context.Context, req *sdk.ProgressNotificationClientRequest) {
		mu.Lock()
		msgs = append(msgs, req.Params.Message)
		mu.Unlock()
		if strings.Contains(req.Params.Message, "tick 2") {
			once.Do(func() { close(first) })
		}
	}})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		p := &sdk.CallToolParams{Name: "run_python", Arguments: map[string]any{
			"code": "import time\nfor i in range(100000):\n    print('tick', i, flush=True)\n    time.sleep(0.01)"}}
		p.SetProgressToken("tok-1")
		_, err := cs.CallTool(ctx, p)
		errc <- err
	}()
	select {
	case <-first:
	case err := <-errc:
		t.Fatalf("the call ended before its progress arrived: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("no progress notification with the output in 60 s")
	}
	cancel()
	if err := <-errc; err == nil {
		t.Error("the cancelled call returned no error")
	}
	mu.Lock()
	all := strings.Join(msgs, "")
	mu.Unlock()
	if !strings.Contains(all, "tick 0\n") || !strings.Contains(all, "tick 2\n") {
		t.Errorf("progress messages %.60q..., want the output", all)
	}
	// The session runs one execution at a time: this one runs only once
	// the cancelled one has stopped, long before its loop would end.
	res := run(t, cs, "i")
	var n int
	if _, err := fmt.Sscanf(strings.TrimPrefix(texts(res), "result: "), "%d", &n); err != nil || n >= 99999 {
		t.Errorf("after the cancellation i = %q, want the loop stopped early", texts(res))
	}
}
