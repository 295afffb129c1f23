package server_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"codeexec/internal/upstream"
)

// mcpPost sends one JSON-RPC message to /mcp with key (and session id)
// through http.DefaultClient, so the contract checks request and answer.
func mcpPost(t *testing.T, s *service, key, session, body string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("POST", s.url+"/mcp", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if session != "" {
		req.Header.Set("Mcp-Session-Id", session)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// sseMessage is the first JSON-RPC message of an event stream.
func sseMessage(t *testing.T, resp *http.Response) map[string]any {
	t.Helper()
	defer resp.Body.Close()
	_, data, err := upstream.NewSSEReader(resp.Body).Next()
	if err != nil {
		t.Fatalf("no event in the answer (%v)", err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("event data %q: %v", data, err)
	}
	return m
}

// TestMCPRoute: /mcp is behind the API keys, answers the protocol, and
// runs code in the session's sandbox; another key cannot use the session.
// (internal/mcp tests the tools with the SDK's client.)
func TestMCPRoute(t *testing.T) {
	s := startService(t, nil)
	initialize := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"curl","version":"1"}}}`
	resp := mcpPost(t, s, "", "", initialize)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("initialize without a key: %d, want 401", resp.StatusCode)
	}
	resp = mcpPost(t, s, keyA, "", initialize)
	id := resp.Header.Get("Mcp-Session-Id")
	if m := sseMessage(t, resp); resp.StatusCode != 200 || id == "" || m["result"] == nil {
		t.Fatalf("initialize: %d, session %q, %v", resp.StatusCode, id, m)
	}
	resp = mcpPost(t, s, keyA, id, `{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("initialized: %d, want 202", resp.StatusCode)
	}
	call := `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"run_python","arguments":{"code":"6 * 7"}}}`
	m := sseMessage(t, mcpPost(t, s, keyA, id, call))
	if data, _ := json.Marshal(m["result"]); !strings.Contains(string(data), "result: 42") {
		t.Errorf("run_python 6 * 7: %s", data)
	}
	resp = mcpPost(t, s, keyB, id, call)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("key B with key A's MCP session: %d, want 404", resp.StatusCode)
	}
}
