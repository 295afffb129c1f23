package server_test

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"codeexec/internal/config"
)

func containersClient(s *service, key string) openai.Client {
	return openai.NewClient(option.WithBaseURL(s.url+"/v1/"), option.WithAPIKey(key), option.WithMaxRetries(0))
}

// sdkErr is err as the SDK's API error, or fails the test.
func sdkErr(t *testing.T, err error, what string) *openai.Error {
	t.Helper()
	var ae *openai.Error
	if !errors.As(err, &ae) {
		t.Fatalf("%s: error %v, want an API error", what, err)
	}
	return ae
}

// content downloads a container file with the SDK.
func content(t *testing.T, client openai.Client, containerID, fileID string) string {
	t.Helper()
	resp, err := client.Containers.Files.Content.Get(context.Background(), containerID, fileID)
	if err != nil {
		t.Fatalf("content of %s: %v", fileID, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestContainers drives the Containers API with openai-go's client, as a
// program written for OpenAI would: containers, their files (uploaded,
// copied, written by code), another key, a restart (after which the
// container is expired and its files remain) and deletion.
func TestContainers(t *testing.T) {
	dir := t.TempDir()
	s := startService(t, func(c *config.Config) { c.DataDir = dir })
	ctx := context.Background()
	client := containersClient(s, keyA)
	const sales = "month,sales\n1,10\n2,30\n"

	c, err := client.Containers.New(ctx, openai.ContainerNewParams{
		Name:         "analysis",
		ExpiresAfter: openai.ContainerNewParamsExpiresAfter{Anchor: "last_active_at", Minutes: 30},
		MemoryLimit:  openai.ContainerNewParamsMemoryLimit1g,
	})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(c.ID, "cntr_") || c.Object != "container" || c.Status != "running" || c.Name != "analysis" ||
		c.ExpiresAfter.Anchor != "last_active_at" || c.ExpiresAfter.Minutes != 30 || c.MemoryLimit != "1g" || c.LastActiveAt < c.CreatedAt {
		t.Errorf("new container = %s", c.RawJSON())
	}
	// OpenAI's defaults: 20 minutes idle, 1g. file_ids are copied in.
	stored := upload(t, s, keyA, "temps.csv", "day,t\n1,20\n")
	fid := stored["id"].(string)
	c2, err := client.Containers.New(ctx, openai.ContainerNewParams{Name: "second", FileIDs: []string{fid}})
	if err != nil {
		t.Fatal(err)
	}
	if c2.ExpiresAfter.Minutes != 20 || c2.MemoryLimit != "1g" || c2.Status != "running" {
		t.Errorf("container with defaults = %s", c2.RawJSON())
	}
	// More memory than --max-memory-mb (4096 by default) is refused.
	_, err = client.Containers.New(ctx, openai.ContainerNewParams{Name: "big", MemoryLimit: openai.ContainerNewParamsMemoryLimit16g})
	if ae := sdkErr(t, err, "16g container"); ae.StatusCode != 400 || ae.Param != "memory_limit" || !strings.Contains(ae.Message, "max-memory-mb") {
		t.Errorf("16g container = %d %s", ae.StatusCode, ae.RawJSON())
	}

	got, err := client.Containers.Get(ctx, c.ID)
	if err != nil || got.ID != c.ID || got.Status != "running" || got.Name != "analysis" {
		t.Fatalf("get container = %v %v", got, err)
	}
	// Pages, newest first.
	page, err := client.Containers.List(ctx, openai.ContainerListParams{Limit: openai.Int(1)})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Data) != 1 || page.Data[0].ID != c2.ID || !page.HasMore {
		t.Fatalf("first page = %s", page.RawJSON())
	}
	next, err := page.GetNextPage()
	if err != nil || next == nil || len(next.Data) != 1 || next.Data[0].ID != c.ID || next.HasMore {
		t.Fatalf("second page = %v %v", next, err)
	}
	var all []string
	iter := client.Containers.ListAutoPaging(ctx, openai.ContainerListParams{Order: openai.ContainerListParamsOrderAsc})
	for iter.Next() {
		all = append(all, iter.Current().ID)
	}
	if iter.Err() != nil || !slices.Equal(all, []string{c.ID, c2.ID}) {
		t.Errorf("all containers, oldest first = %v %v", all, iter.Err())
	}

	// A CSV by multipart, and a stored file by id (the SDK's multipart
	// field, and a JSON body).
	up, err := client.Containers.Files.New(ctx, c.ID, openai.ContainerFileNewParams{
		File: openai.File(strings.NewReader(sales), "sales.csv", "text/csv")})
	if err != nil {
		t.Fatal(err)
	}
	if up.Object != "container.file" || up.Path != "/mnt/data/sales.csv" || up.Source != "user" || up.ContainerID != c.ID ||
		up.Bytes != int64(len(sales)) || !strings.HasPrefix(up.ID, "file-") {
		t.Errorf("uploaded = %s", up.RawJSON())
	}
	byID, err := client.Containers.Files.New(ctx, c.ID, openai.ContainerFileNewParams{FileID: openai.String(fid)})
	if err != nil {
		t.Fatal(err)
	}
	if byID.Path != "/mnt/data/temps.csv" || byID.Source != "user" || byID.ID == fid {
		t.Errorf("copied by file_id = %s", byID.RawJSON())
	}
	var copied openai.ContainerFileNewResponse
	err = client.Post(ctx, "containers/"+c2.ID+"/files", map[string]any{"file_id": up.ID}, &copied)
	if err != nil || copied.Path != "/mnt/data/sales.csv" || copied.ContainerID != c2.ID || copied.Source != "user" {
		t.Errorf("JSON file_id upload = %v %v", copied.RawJSON(), err)
	}
	if st, _ := s.call("POST", "/v1/containers/"+c.ID+"/files", keyA, map[string]any{"file_id": "file-nope"}); st != 404 {
		t.Errorf("unknown file_id = %d, want 404", st)
	}

	// Code runs in the container through the session endpoints: it sees
	// the files, and what it writes is a container file of the assistant.
	st, res := s.call("POST", "/v1/sessions/"+c.ID+"/execute", keyA, map[string]any{
		"code": "import pandas as pd\ndf = pd.read_csv('sales.csv')\ndf.describe().to_csv('summary.csv')\nprint(df.sales.sum(), open('temps.csv').read().count('\\n'))"})
	if st != 200 || res["stdout"] != "40 2\n" {
		t.Fatalf("execute in container = %d %v", st, res)
	}
	outFiles, _ := res["files"].([]any)
	if len(outFiles) != 1 {
		t.Fatalf("files written = %v", res["files"])
	}
	summaryID := outFiles[0].(map[string]any)["id"].(string)
	if st, res := s.call("POST", "/v1/sessions/"+c2.ID+"/execute", keyA, map[string]any{"code": "print(open('temps.csv').read())"}); st != 200 || res["stdout"] != "day,t\n1,20\n\n" {
		t.Errorf("file_ids of a new container = %d %v", st, res)
	}

	files := map[string]openai.ContainerFileListResponse{}
	fiter := client.Containers.Files.ListAutoPaging(ctx, c.ID, openai.ContainerFileListParams{Limit: openai.Int(2)})
	for fiter.Next() {
		files[fiter.Current().Path] = fiter.Current()
	}
	if fiter.Err() != nil || len(files) != 3 {
		t.Fatalf("container files = %v %v", files, fiter.Err())
	}
	if f := files["/mnt/data/summary.csv"]; f.ID != summaryID || f.Source != "assistant" || f.ContainerID != c.ID {
		t.Errorf("summary.csv = %s", f.RawJSON())
	}
	if f := files["/mnt/data/sales.csv"]; f.ID != up.ID || f.Source != "user" {
		t.Errorf("sales.csv = %s", f.RawJSON())
	}
	if data := content(t, client, c.ID, up.ID); data != sales {
		t.Errorf("sales.csv content = %q", data)
	}
	if data := content(t, client, c.ID, summaryID); !strings.Contains(data, "sales") || !strings.Contains(data, "mean") {
		t.Errorf("summary.csv content = %q", data)
	}
	if f, err := client.Containers.Files.Get(ctx, c.ID, summaryID); err != nil || f.Path != "/mnt/data/summary.csv" || f.Source != "assistant" {
		t.Errorf("get summary.csv = %v %v", f, err)
	}
	// A file of another container is not this one's.
	if _, err := client.Containers.Files.Get(ctx, c2.ID, summaryID); sdkErr(t, err, "other container's file").StatusCode != 404 {
		t.Errorf("file of another container = %v", err)
	}
	if got, err := client.Containers.Get(ctx, c.ID); err != nil || got.LastActiveAt < c.LastActiveAt {
		t.Errorf("last_active_at after an execution = %v %v", got, err)
	}
	if err := client.Containers.Files.Delete(ctx, c.ID, byID.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Containers.Files.Get(ctx, c.ID, byID.ID); sdkErr(t, err, "deleted file").StatusCode != 404 {
		t.Errorf("deleted file = %v", err)
	}

	// Another key sees none of it.
	other := containersClient(s, keyB)
	if _, err := other.Containers.Get(ctx, c.ID); sdkErr(t, err, "other key get").StatusCode != 404 {
		t.Errorf("other key get = %v", err)
	}
	if _, err := other.Containers.Files.Content.Get(ctx, c.ID, up.ID); sdkErr(t, err, "other key content").StatusCode != 404 {
		t.Errorf("other key content = %v", err)
	}
	if _, err := other.Containers.Files.New(ctx, c.ID, openai.ContainerFileNewParams{File: openai.File(strings.NewReader("x"), "x.txt", "text/plain")}); sdkErr(t, err, "other key upload").StatusCode != 404 {
		t.Errorf("other key upload = %v", err)
	}
	if err := other.Containers.Delete(ctx, c.ID); sdkErr(t, err, "other key delete").StatusCode != 404 {
		t.Errorf("other key delete = %v", err)
	}
	if p, err := other.Containers.List(ctx, openai.ContainerListParams{}); err != nil || len(p.Data) != 0 {
		t.Errorf("other key list = %v %v", p, err)
	}
	if st, body := s.call("POST", "/v1/sessions/"+c.ID+"/execute", keyB, map[string]any{"code": "1"}); st != 404 {
		t.Errorf("other key execute = %d %v", st, body)
	}
	// A plain session is no container.
	_, sess := s.call("POST", "/v1/sessions", keyA, nil)
	if _, err := client.Containers.Get(ctx, sess["id"].(string)); sdkErr(t, err, "session as container").StatusCode != 404 {
		t.Errorf("session as a container = %v", err)
	}

	// After a restart no process is left: the container is expired, as
	// OpenAI's are when idle past their expiry, and its files remain.
	s.stop()
	s2 := startService(t, func(c *config.Config) { c.DataDir = dir })
	client = containersClient(s2, keyA)
	got, err = client.Containers.Get(ctx, c.ID)
	if err != nil || got.Status != "expired" || got.Name != "analysis" || got.ExpiresAfter.Minutes != 30 {
		t.Fatalf("container after restart = %v %v", got, err)
	}
	_, err = client.Containers.Files.New(ctx, c.ID, openai.ContainerFileNewParams{File: openai.File(strings.NewReader("x"), "x.txt", "text/plain")})
	if ae := sdkErr(t, err, "upload to expired container"); ae.StatusCode != 400 || ae.Message != "Container is expired." ||
		ae.Type != "invalid_request_error" || ae.Code != "container_expired" {
		t.Errorf("upload to an expired container = %d %s", ae.StatusCode, ae.RawJSON())
	}
	if st, body := s2.call("POST", "/v1/sessions/"+c.ID+"/execute", keyA, map[string]any{"code": "1"}); st != 410 {
		t.Errorf("execute in an expired container = %d %v", st, body)
	}
	if data := content(t, client, c.ID, summaryID); !strings.Contains(data, "mean") {
		t.Errorf("summary.csv after restart = %q", data)
	}
	if p, err := client.Containers.Files.List(ctx, c.ID, openai.ContainerFileListParams{}); err != nil || len(p.Data) != 2 {
		t.Errorf("files after restart = %v %v", p, err)
	}

	// Deleting it deletes its files; it is not found afterwards.
	if err := client.Containers.Delete(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Containers.Get(ctx, c.ID); sdkErr(t, err, "deleted container").StatusCode != 404 {
		t.Errorf("deleted container = %v", err)
	}
	if st, _ := s2.call("GET", "/v1/files/"+summaryID, keyA, nil); st != 404 {
		t.Errorf("file of a deleted container = %d, want 404", st)
	}
	if p, err := client.Containers.List(ctx, openai.ContainerListParams{}); err != nil || len(p.Data) != 1 || p.Data[0].ID != c2.ID || p.Data[0].Status != "expired" {
		t.Errorf("list after delete = %v %v", p, err)
	}
}

// TestContainerRequests: what POST /v1/containers and the list refuse,
// and a live container deleted.
func TestContainerRequests(t *testing.T) {
	s := startService(t, nil)
	for _, tt := range []struct {
		name, body, param string
	}{
		{"no name", `{}`, "name"},
		{"zero minutes", `{"name":"x","expires_after":{"anchor":"last_active_at","minutes":0}}`, "expires_after.minutes"},
		{"minutes over the lifetime", `{"name":"x","expires_after":{"anchor":"last_active_at","minutes":61}}`, "expires_after.minutes"},
		{"other anchor", `{"name":"x","expires_after":{"anchor":"created_at","minutes":5}}`, "expires_after.anchor"},
		{"unknown memory limit", `{"name":"x","memory_limit":"2g"}`, "memory_limit"},
		{"unsupported field", `{"name":"x","network_policy":{"type":"disabled"}}`, "network_policy"},
	} {
		st, body := s.call("POST", "/v1/containers", keyA, tt.body)
		if param, code, _ := errOf(body); st != 400 || param != tt.param || code != "invalid_value" {
			t.Errorf("%s: %d %v, want 400 with param %s", tt.name, st, body, tt.param)
		}
	}
	if st, body := s.call("POST", "/v1/containers", keyA, `{"name":"x","file_ids":["file-nope"]}`); st != 404 {
		t.Errorf("unknown file_ids = %d %v", st, body)
	}
	for _, q := range []string{"limit=0", "limit=101", "order=up"} {
		if st, body := s.call("GET", "/v1/containers?"+q, keyA, nil); st != 400 {
			t.Errorf("list ?%s = %d %v", q, st, body)
		}
	}
	if st, body := s.call("GET", "/v1/containers", keyA, nil); st != 200 || body["has_more"] != false || len(body["data"].([]any)) != 0 {
		t.Errorf("empty list = %d %v", st, body)
	}
	st, body := s.call("POST", "/v1/containers", keyA, map[string]any{"name": "live", "memory_limit": "1g"})
	if st != 200 {
		t.Fatalf("create = %d %v", st, body)
	}
	id := body["id"].(string)
	// The memory limit is the executions' default: 700 MiB fit in 1g,
	// not in a plain session's default (--memory-mb, 512).
	const big = "x = b'x' * (700 << 20)\nprint(len(x) >> 20)"
	if st, res := s.call("POST", "/v1/sessions/"+id+"/execute", keyA, map[string]any{"code": big}); st != 200 || res["status"] != "ok" || res["stdout"] != "700\n" {
		t.Errorf("700 MiB in a 1g container = %d %v", st, res)
	}
	_, sess := s.call("POST", "/v1/sessions", keyA, nil)
	if st, res := s.call("POST", "/v1/sessions/"+sess["id"].(string)+"/execute", keyA, map[string]any{"code": big}); st != 200 || res["status"] != "memory_limit" {
		t.Errorf("700 MiB in a plain session = %d %v", st, res)
	}
	if st, body := s.call("DELETE", "/v1/containers/"+id, keyA, nil); st != 200 || body["deleted"] != true || body["object"] != "container.deleted" {
		t.Errorf("delete = %d %v", st, body)
	}
	if st, _ := s.call("POST", "/v1/sessions/"+id+"/execute", keyA, map[string]any{"code": "1"}); st != 404 {
		t.Errorf("execute in a deleted container = %d, want 404", st)
	}
	for _, p := range []string{"/v1/containers/" + id, "/v1/containers/cntr_nope/files", "/v1/containers/sess_x"} {
		if st, _ := s.call("GET", p, keyA, nil); st != 404 {
			t.Errorf("GET %s = %d, want 404", p, st)
		}
	}
}
