//go:build linux

package server_test

// The API contract, docs/openapi.yaml, is checked here against what the
// server really does. Every server started by startService is registered
// with specTransport, the transport of http.DefaultClient (which the
// tests and the openai SDK use): each request to it and each response it
// gives are validated against the contract with kin-openapi's
// openapi3filter, and one that does not match fails the test that made
// it. Responses must always match; a request that does not match must be
// refused (4xx), so that a request the server accepts is one the contract
// allows. Server-Sent Events are validated one event at a time, against
// the x-item-schema of their media type, as the client reads them.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v4"

	"codeexec/docs"
	"codeexec/internal/config"
	"codeexec/internal/server"
	"codeexec/internal/upstream"
)

// reporter is what a failed check is reported to (a *testing.T).
type reporter interface {
	Helper()
	Errorf(format string, args ...any)
}

// spec is the contract with a router over its operations.
type spec struct {
	doc *openapi3.T
	mux *http.ServeMux
}

var loadSpec = sync.OnceValues(func() (*spec, error) {
	doc, err := docs.Load()
	if err != nil {
		return nil, err
	}
	sp := &spec{doc: doc, mux: http.NewServeMux()}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			route := &routers.Route{Spec: doc, Path: path, PathItem: item, Method: method, Operation: op}
			pattern := method + " " + muxPath(path, item, op)
			sp.mux.Handle(pattern, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				m := r.Context().Value(matchKey{}).(*match)
				m.route = route
				m.params = map[string]string{}
				for _, p := range append(item.Parameters, op.Parameters...) {
					if p.Value.In == openapi3.ParameterInPath {
						m.params[p.Value.Name] = r.PathValue(p.Value.Name)
					}
				}
			}))
		}
	}
	return sp, nil
})

// muxPath turns an OpenAPI path template into a ServeMux pattern's path:
// a path parameter marked x-multi-segment takes the rest of the URL.
func muxPath(path string, item *openapi3.PathItem, op *openapi3.Operation) string {
	for _, p := range append(item.Parameters, op.Parameters...) {
		if p.Value.In == openapi3.ParameterInPath && p.Value.Extensions["x-multi-segment"] == true {
			path = strings.Replace(path, "{"+p.Value.Name+"}", "{"+p.Value.Name+"...}", 1)
		}
	}
	if path == "/" {
		path = "/{$}" // the playground page: exactly /, not every path
	}
	return path
}

type matchKey struct{}

type match struct {
	route  *routers.Route
	params map[string]string
}

// find returns the operation of r, as the server's own ServeMux would
// match it, or nil.
func (sp *spec) find(r *http.Request) *match {
	m := &match{}
	probe := r.Clone(context.WithValue(context.Background(), matchKey{}, m))
	probe.Body = http.NoBody
	if _, pattern := sp.mux.Handler(probe); pattern == "" {
		return nil
	}
	sp.mux.ServeHTTP(discard{}, probe)
	if m.route == nil {
		return nil
	}
	return m
}

type discard struct{}

func (discard) Header() http.Header         { return http.Header{} }
func (discard) Write(b []byte) (int, error) { return len(b), nil }
func (discard) WriteHeader(int)             {}

// schema returns the component schema a {"$ref": "#/components/schemas/X"}
// extension value names.
func (sp *spec) schema(ref any) (*openapi3.Schema, error) {
	m, _ := ref.(map[string]any)
	s, _ := m["$ref"].(string)
	name, ok := strings.CutPrefix(s, "#/components/schemas/")
	if !ok {
		return nil, fmt.Errorf("x-item-schema %v is not a $ref to a component schema", ref)
	}
	sr := sp.doc.Components.Schemas[name]
	if sr == nil || sr.Value == nil {
		return nil, fmt.Errorf("x-item-schema names the unknown schema %q", name)
	}
	return sr.Value, nil
}

// specTransport validates the traffic of registered hosts.
type specTransport struct {
	base  http.RoundTripper
	mu    sync.Mutex
	hosts map[string]reporter
}

var theSpecTransport = &specTransport{base: http.DefaultTransport, hosts: map[string]reporter{}}

// The transport is installed before any test runs, so that no request is
// in flight while it changes; it passes unregistered hosts' traffic on.
func init() { http.DefaultClient.Transport = theSpecTransport }

// checkAgainstSpec validates, until the test ends, every request that
// http.DefaultClient makes to the server at baseURL and every response it
// gets.
func checkAgainstSpec(t *testing.T, baseURL string) {
	t.Helper()
	if _, err := loadSpec(); err != nil {
		t.Fatalf("the API contract: %v", err)
	}
	u, err := url.Parse(baseURL)
	if err != nil {
		t.Fatal(err)
	}
	theSpecTransport.register(u.Host, t)
	t.Cleanup(func() { theSpecTransport.register(u.Host, nil) })
}

func (st *specTransport) register(host string, r reporter) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if r == nil {
		delete(st.hosts, host)
	} else {
		st.hosts[host] = r
	}
}

func (st *specTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	st.mu.Lock()
	rep := st.hosts[req.URL.Host]
	st.mu.Unlock()
	if rep == nil {
		return st.base.RoundTrip(req)
	}
	sp, _ := loadSpec()
	var body []byte
	// A large body (a file upload) is passed through unread, so that
	// what the server allocates for it can be measured: only its headers
	// are checked.
	large := req.ContentLength > 1<<20
	if req.Body != nil && req.Body != http.NoBody && !large {
		var err error
		body, err = io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
	}
	out := req.Clone(req.Context())
	if req.Body != nil && !large {
		out.Body = io.NopCloser(bytes.NewReader(body))
		out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	}
	what := req.Method + " " + req.URL.Path
	m := sp.find(req)
	var input *openapi3filter.RequestValidationInput
	var reqErr error
	if m != nil {
		input, reqErr = sp.validateRequest(req, body, large, m)
	}
	resp, err := st.base.RoundTrip(out)
	if err != nil {
		return resp, err
	}
	if m != nil && reqErr != nil && resp.StatusCode < 400 {
		rep.Errorf("contract: %s does not match docs/openapi.yaml, yet the server answered %d: %v", what, resp.StatusCode, reqErr)
	}
	if m == nil {
		// Only the catch-all answers: 404 unknown_url.
		data, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(data))
		if err != nil {
			return resp, nil
		}
		if e := sp.checkUnknownURL(req, resp, data); e != nil {
			rep.Errorf("contract: %s (not in docs/openapi.yaml): %v", what, e)
		}
		return resp, nil
	}
	rv := &openapi3filter.ResponseValidationInput{RequestValidationInput: input, Status: resp.StatusCode, Header: resp.Header,
		Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true}}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt == "text/event-stream" && resp.StatusCode == http.StatusOK {
		// The contract gives an event stream no schema of the whole: the
		// status, headers and content type are checked now, the events as
		// they are read.
		rv.SetBodyBytes(nil)
		if err := openapi3filter.ValidateResponse(req.Context(), rv); err != nil {
			rep.Errorf("contract: the response to %s: %v", what, err)
		}
		item, err := sp.itemSchema(m, resp)
		if err != nil {
			rep.Errorf("contract: the response to %s: %v", what, err)
			return resp, nil
		}
		resp.Body = &sseChecker{rc: resp.Body, schema: item, rep: rep, what: what}
		return resp, nil
	}
	data, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(data))
	if err != nil {
		return resp, nil // the client gets the error with what arrived
	}
	rv.SetBodyBytes(data)
	if err := openapi3filter.ValidateResponse(req.Context(), rv); err != nil {
		rep.Errorf("contract: the response to %s (%d %.300q): %v", what, resp.StatusCode, data, err)
	}
	return resp, nil
}

// validateRequest checks req, whose body is body, against its operation.
// JSON endpoints read their body as JSON whatever its Content-Type, so a
// body sent without one is checked as the operation's only media type.
func (sp *spec) validateRequest(req *http.Request, body []byte, skipBody bool, m *match) (*openapi3filter.RequestValidationInput, error) {
	vr := req.Clone(req.Context())
	vr.Body = io.NopCloser(bytes.NewReader(body))
	if vr.Header.Get("Content-Type") == "" && len(body) > 0 {
		if rb := m.route.Operation.RequestBody; rb != nil && rb.Value != nil && len(rb.Value.Content) == 1 {
			for ct := range rb.Value.Content {
				vr.Header.Set("Content-Type", ct)
			}
		}
	}
	input := &openapi3filter.RequestValidationInput{Request: vr, PathParams: m.params, Route: m.route,
		Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, MultiError: true,
			ExcludeRequestBody: skipBody}}
	return input, openapi3filter.ValidateRequest(req.Context(), input)
}

// itemSchema is the x-item-schema of the event stream resp answers m with.
func (sp *spec) itemSchema(m *match, resp *http.Response) (*openapi3.Schema, error) {
	r := m.route.Operation.Responses.Status(resp.StatusCode)
	if r == nil || r.Value == nil {
		return nil, fmt.Errorf("status %d is not in the contract", resp.StatusCode)
	}
	mt := r.Value.Content.Get("text/event-stream")
	if mt == nil {
		return nil, errors.New("the contract has no text/event-stream response here")
	}
	return sp.schema(mt.Extensions["x-item-schema"])
}

// checkUnknownURL checks the answer to a request no operation matches:
// the catch-all's 404, or ServeMux's redirect of a path that is not clean
// to its clean form.
func (sp *spec) checkUnknownURL(req *http.Request, resp *http.Response, data []byte) error {
	if clean := cleanPath(req.URL.Path); clean != req.URL.Path {
		switch loc, _ := resp.Location(); {
		case resp.StatusCode != http.StatusTemporaryRedirect:
			return fmt.Errorf("answered %d to a path that is not clean, want a 307 to %s", resp.StatusCode, clean)
		case loc == nil || loc.Path != clean:
			return fmt.Errorf("redirected to %v, want %s", loc, clean)
		}
		return nil
	}
	if resp.StatusCode != http.StatusNotFound {
		return fmt.Errorf("answered %d, want 404 unknown_url", resp.StatusCode)
	}
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		return fmt.Errorf("body %.200q is not JSON", data)
	}
	r := sp.doc.Components.Responses["UnknownURL"].Value
	if err := r.Content.Get("application/json").Schema.Value.VisitJSON(v, openapi3.EnableJSONSchema2020()); err != nil {
		return err
	}
	return nil
}

// cleanPath is path as ServeMux cleans it.
func cleanPath(p string) string {
	c := path.Clean(p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c
}

// sseChecker passes a Server-Sent Events body through, validating each
// whole event against schema as {"event": name, "data": data}, data
// decoded from JSON where it is JSON. The server ends every event with a
// blank line (LF LF); each is read with upstream's SSEReader, the one
// reader of event streams in the project.
type sseChecker struct {
	rc     io.ReadCloser
	schema *openapi3.Schema
	rep    reporter
	what   string
	buf    []byte
	n      int
}

func (c *sseChecker) Read(p []byte) (int, error) {
	n, err := c.rc.Read(p)
	c.buf = append(c.buf, p[:n]...)
	for {
		i := bytes.Index(c.buf, []byte("\n\n"))
		if i < 0 {
			break
		}
		c.check(c.buf[:i+2])
		c.buf = c.buf[i+2:]
	}
	return n, err
}

func (c *sseChecker) Close() error { return c.rc.Close() }

func (c *sseChecker) check(block []byte) {
	c.n++
	// The reader passes over fields other than event and data, as clients
	// do; the contract has no others, so one is reported here.
	for _, line := range strings.Split(string(block), "\n") {
		if field, _, _ := strings.Cut(line, ":"); field != "" && field != "event" && field != "data" {
			c.rep.Errorf("contract: event %d of %s has the field %q, which no event of the contract has", c.n, c.what, field)
		}
	}
	name, data, err := upstream.NewSSEReader(bytes.NewReader(block)).Next()
	if err != nil {
		c.rep.Errorf("contract: event %d of %s (%.300q) has no data: %v", c.n, c.what, block, err)
		return
	}
	ev := map[string]any{}
	if name != "" {
		ev["event"] = name
	}
	var v any
	if json.Unmarshal(data, &v) == nil {
		ev["data"] = v
	} else {
		ev["data"] = string(data)
	}
	if err := c.schema.VisitJSON(ev, openapi3.EnableJSONSchema2020()); err != nil {
		c.rep.Errorf("contract: event %d of %s (%.300q) does not match docs/openapi.yaml: %v", c.n, c.what, block, err)
	}
}

// TestOpenAPIDocument: the contract loads and is a valid OpenAPI 3.1
// document, and GET /openapi.json serves all of it, without a key.
func TestOpenAPIDocument(t *testing.T) {
	sp, err := loadSpec()
	if err != nil {
		t.Fatal(err)
	}
	if err := sp.doc.Validate(context.Background()); err != nil {
		t.Fatalf("docs/openapi.yaml: %v", err)
	}
	if !sp.doc.IsOpenAPI31OrLater() || sp.doc.OpenAPIMajorMinor() != "3.1" {
		t.Errorf("openapi = %q, want 3.1.x", sp.doc.OpenAPI)
	}
	// Every x-item-schema names a schema, and every error code of the
	// responses is one of ErrorCode's.
	for path, item := range sp.doc.Paths.Map() {
		for method, op := range item.Operations() {
			for status, r := range op.Responses.Map() {
				for ct, mt := range r.Value.Content {
					if ct == "text/event-stream" {
						if _, err := sp.schema(mt.Extensions["x-item-schema"]); err != nil {
							t.Errorf("%s %s %s: %v", method, path, status, err)
						}
					}
				}
			}
		}
	}

	cfg := config.Default()
	cfg.APIKeys = []string{keyA}
	srv := httptest.NewServer(server.New(cfg, nil, nil, slog.New(slog.NewTextHandler(io.Discard, nil))))
	defer srv.Close()
	checkAgainstSpec(t, srv.URL)
	resp, err := http.Get(srv.URL + "/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	served, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET /openapi.json = %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var fromYAML, fromJSON any
	if err := yaml.Unmarshal(docs.OpenAPIYAML, &fromYAML); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(served, &fromJSON); err != nil {
		t.Fatalf("/openapi.json is not JSON: %v", err)
	}
	// Compare as JSON values: YAML's integers and JSON's numbers alike.
	normal, _ := json.Marshal(fromYAML)
	json.Unmarshal(normal, &fromYAML)
	if d := cmp.Diff(fromYAML, fromJSON); d != "" {
		t.Errorf("/openapi.json differs from docs/openapi.yaml (-yaml +json):\n%s", d)
	}
	// An unknown URL is the catch-all's, and it is checked as such.
	if resp, err := http.Get(srv.URL + "/v2/nothing"); err != nil || resp.StatusCode != 404 {
		t.Errorf("GET /v2/nothing = %v %v, want 404", resp, err)
	} else {
		resp.Body.Close()
	}
}

// TestRoutesMatchSpec: every route of Server.routes has an operation in
// the contract, and every operation a route.
func TestRoutesMatchSpec(t *testing.T) {
	sp, err := loadSpec()
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "server.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var routes []string
	for _, d := range f.Decls {
		fn, ok := d.(*ast.FuncDecl)
		if !ok || fn.Name.Name != "routes" {
			continue
		}
		ast.Inspect(fn.Body, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) == 0 {
				return true
			}
			lit, ok := call.Args[0].(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			pattern, _ := strconv.Unquote(lit.Value)
			method, path, ok := strings.Cut(pattern, " ")
			switch {
			case pattern == "/":
				// the catch-all: 404 unknown_url
			case !ok || method != strings.ToUpper(method) || !strings.HasPrefix(path, "/"):
				t.Errorf("routes() registers %q, which is not METHOD /path", pattern)
			default:
				routes = append(routes, method+" "+strings.ReplaceAll(strings.ReplaceAll(path, "...}", "}"), "{$}", ""))
			}
			return true
		})
	}
	if len(routes) < 10 {
		t.Fatalf("found only %d routes in routes(): %v", len(routes), routes)
	}
	var ops []string
	for path, item := range sp.doc.Paths.Map() {
		for method := range item.Operations() {
			ops = append(ops, method+" "+path)
		}
	}
	sort.Strings(routes)
	sort.Strings(ops)
	for _, r := range routes {
		if !slices.Contains(ops, r) {
			t.Errorf("route %s is not in docs/openapi.yaml", r)
		}
	}
	for _, o := range ops {
		if !slices.Contains(routes, o) {
			t.Errorf("docs/openapi.yaml has %s, which routes() does not serve", o)
		}
	}
}

// recorder is a reporter that keeps what it is told.
type recorder struct {
	mu   sync.Mutex
	errs []string
}

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func (r *recorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.errs
	r.errs = nil
	return e
}

// TestSpecCheckerCatchesDrift: the checker of the other tests fails
// responses and events the contract does not allow, and requests it does
// not allow that a server accepts.
func TestSpecCheckerCatchesDrift(t *testing.T) {
	if _, err := loadSpec(); err != nil {
		t.Fatal(err)
	}
	answers := map[string]func(w http.ResponseWriter){
		"/healthz": func(w http.ResponseWriter) { // an undocumented field
			w.Header().Set("X-Request-Id", "req_0123456789abcdef01234567")
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"status":"ok","uptime":3}`)
		},
		"/readyz": func(w http.ResponseWriter) { // an undocumented status
			w.Header().Set("X-Request-Id", "req_0123456789abcdef01234567")
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusTeapot)
			io.WriteString(w, `{"status":"ready","warm_sandboxes":1}`)
		},
		"/v1/files/file-x": func(w http.ResponseWriter) { // an unknown error code
			w.Header().Set("X-Request-Id", "req_0123456789abcdef01234567")
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"error":{"message":"x","type":"invalid_request_error","code":"no_such_code"}}`)
		},
		"/v1/execute": func(w http.ResponseWriter) { // accepts anything; streams a bad event
			w.Header().Set("X-Request-Id", "req_0123456789abcdef01234567")
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "event: stdout\ndata: {\"text\":\"a\"}\n\n")
		},
		"/v1/sessions/sess_x/execute": func(w http.ResponseWriter) {
			w.Header().Set("X-Request-Id", "req_0123456789abcdef01234567")
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "event: stdout\ndata: {\"text\":\"a\"}\n\nevent: stdout\ndata: {\"txt\":\"a\"}\n\n")
		},
		"/v2/x": func(w http.ResponseWriter) { // not the catch-all's answer
			w.WriteHeader(http.StatusOK)
		},
	}
	fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		answers[r.URL.Path](w)
	}))
	defer fake.Close()
	u, _ := url.Parse(fake.URL)
	rec := &recorder{}
	theSpecTransport.register(u.Host, rec)
	defer theSpecTransport.register(u.Host, nil)

	tests := []struct {
		name, method, path, body string
		want                     string // in the one error reported
	}{
		{"undocumented field", "GET", "/healthz", "", "uptime"},
		{"undocumented status", "GET", "/readyz", "", "status is not supported"},
		{"unknown error code", "GET", "/v1/files/file-x", "", "no_such_code"},
		{"invalid request accepted", "POST", "/v1/execute", `{"code":5}`, "does not match docs/openapi.yaml, yet the server answered 200"},
		{"bad event", "POST", "/v1/sessions/sess_x/execute", `{"code":"1","stream":true}`, "event 2 of POST /v1/sessions/sess_x/execute"},
		{"unknown URL answered", "GET", "/v2/x", "", "want 404 unknown_url"},
	}
	for _, tt := range tests {
		req, _ := http.NewRequest(tt.method, fake.URL+tt.path, strings.NewReader(tt.body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.ReadAll(resp.Body)
		resp.Body.Close()
		errs := rec.take()
		if len(errs) != 1 || !strings.Contains(errs[0], tt.want) {
			t.Errorf("%s: reported %q, want one error with %q", tt.name, errs, tt.want)
		}
	}
}
