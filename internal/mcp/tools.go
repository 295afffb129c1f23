//go:build linux

package mcp

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"codeexec/internal/executor"
)

// RunArgs are run_python's arguments.
type RunArgs struct {
	Code    string   `json:"code" jsonschema:"the Python code to run; the value of its last expression is returned"`
	Timeout *float64 `json:"timeout,omitempty" jsonschema:"wall-time limit in seconds (default and maximum in the tool's description)"`
}

// ResetArgs are reset_sandbox's arguments.
type ResetArgs struct {
	KeepFiles *bool `json:"keep_files,omitempty" jsonschema:"keep the files of /mnt/data in the fresh sandbox (default true)"`
}

// UploadArgs are upload_file's arguments.
type UploadArgs struct {
	Path     string `json:"path" jsonschema:"where to write the file, relative to /mnt/data (e.g. data/input.csv)"`
	Content  string `json:"content" jsonschema:"the file's content: text, or base64 when encoding is base64"`
	Encoding string `json:"encoding,omitempty" jsonschema:"text (the default) or base64"`
}

// PathArgs name a file of /mnt/data.
type PathArgs struct {
	Path string `json:"path" jsonschema:"the file's path relative to /mnt/data"`
}

// FileList is list_files's structured result.
type FileList struct {
	Files []executor.File `json:"files"`
}

func (s *Service) addTools() {
	sdk.AddTool(s.server, &sdk.Tool{Name: "run_python", Title: "Run Python", Description: s.description()}, s.runPython)
	sdk.AddTool(s.server, &sdk.Tool{Name: "reset_sandbox", Title: "Reset the Python sandbox",
		Description: "End this session's Python process and start a fresh one: every variable and import is gone. " +
			"The files of /mnt/data are kept unless keep_files is false. Use it when the interpreter's state is broken or full."}, s.resetSandbox)
	sdk.AddTool(s.server, &sdk.Tool{Name: "upload_file", Title: "Upload a file to the sandbox",
		Description: fmt.Sprintf("Write a file into the sandbox's /mnt/data, where run_python's code can open it by its relative path. "+
			"content is text, or base64 with encoding base64; at most %d MiB. An existing file is replaced.", s.opts.MaxFileBytes>>20)}, s.uploadFile)
	sdk.AddTool(s.server, &sdk.Tool{Name: "list_files", Title: "List the sandbox's files",
		Description: "List the files in the sandbox's /mnt/data with their sizes and types, each as a resource link (codeexec://files/PATH)."}, s.listFiles)
	sdk.AddTool(s.server, &sdk.Tool{Name: "read_file", Title: "Read a file of the sandbox",
		Description: fmt.Sprintf("Read a file of the sandbox's /mnt/data: text comes back as text, images as images, other files as a base64 resource; at most %d MiB.",
			s.opts.MaxFileBytes>>20)}, s.readFile)
}

func (s *Service) runPython(ctx context.Context, req *sdk.CallToolRequest, in RunArgs) (*sdk.CallToolResult, *executor.Result, error) {
	if err := executor.CheckCode(in.Code, executor.MaxCodeBytes); err != nil {
		return nil, nil, err
	}
	r := executor.Request{Code: in.Code, Network: s.opts.Network}
	if t := in.Timeout; t != nil {
		if *t <= 0 || *t > s.opts.MaxTimeout.Seconds() {
			return nil, nil, fmt.Errorf("timeout must be more than 0 and at most %g seconds", s.opts.MaxTimeout.Seconds())
		}
		r.Limits.Timeout = time.Duration(*t * float64(time.Second))
	}
	sb, note, err := s.sandbox(ctx, req.Session)
	if err != nil {
		return nil, nil, err
	}
	var prog *progress
	if tok := req.Params.GetProgressToken(); tok != nil {
		prog = newProgress(ctx, req.Session, tok)
		r.OnEvent = prog.add
	}
	res, err := sb.Execute(ctx, r)
	if prog != nil {
		prog.stop() // every notification goes before the result
	}
	if err != nil {
		var ie *executor.InputError
		switch {
		case errors.As(err, &ie):
			return nil, nil, err
		case errors.Is(err, executor.ErrSessionEnded):
			s.forget(req.Session, sb, endNote(err))
			return nil, nil, errors.New("the sandbox ended before the code ran; call run_python again to run it in a fresh sandbox (earlier variables are gone)")
		case ctx.Err() != nil:
			return nil, nil, fmt.Errorf("cancelled: %w", context.Cause(ctx))
		}
		s.log.Warn("run_python", "err", err)
		return nil, nil, err // the Backend's errors say what to do
	}
	if res.SessionEnded {
		s.forget(req.Session, sb, "")
	}
	return s.runResult(res, note), res, nil
}

// forget drops sb from ss's state if it is still its sandbox.
func (s *Service) forget(ss *sdk.ServerSession, sb Sandbox, note string) {
	s.mu.Lock()
	st := s.sessions[ss]
	s.mu.Unlock()
	if st == nil {
		return
	}
	st.mu.Lock()
	if st.sb == sb {
		st.sb.Close()
		st.sb = nil
		st.note = note
	}
	st.mu.Unlock()
}

// runResult is the content of an execution's result: its text (stdout,
// stderr, the last expression's value, the error), each PNG as an image,
// each created file as a resource link. A status other than ok is an
// error result.
func (s *Service) runResult(res *executor.Result, note string) *sdk.CallToolResult {
	out := &sdk.CallToolResult{IsError: res.Status != executor.StatusOK}
	text := func(t string) { out.Content = append(out.Content, &sdk.TextContent{Text: t}) }
	if note != "" {
		text(note)
	}
	if res.Stdout != "" {
		text(res.Stdout + truncNote(res.Truncated.Stdout))
	}
	if res.Stderr != "" {
		text("stderr:\n" + res.Stderr + truncNote(res.Truncated.Stderr))
	}
	bundles := append(append([]map[string]any{}, bundleMaps(res.Displays)...), res.Result)
	for i, b := range bundles {
		if b == nil {
			continue
		}
		if img := imageOf(b); img != nil {
			out.Content = append(out.Content, img)
		} else if t, ok := b["text/plain"].(string); ok && i == len(bundles)-1 {
			text("result: " + t)
		} else if ok {
			text(t)
		}
	}
	if e := res.Error; e != nil {
		if e.Traceback != "" {
			text(e.Traceback)
		} else {
			text(e.Name + ": " + e.Value)
		}
	}
	if res.Status != executor.StatusOK {
		msg := "status: " + string(res.Status)
		switch res.Status {
		case executor.StatusTimeout:
			msg += " (the code ran over its time limit; pass a larger timeout or make it faster)"
		case executor.StatusMemoryLimit:
			msg += " (the code ran out of memory)"
		case executor.StatusOutputLimit:
			msg += " (the code printed more than the output limit)"
		}
		if res.SessionEnded {
			msg += "; the sandbox's process was killed, so the next call starts a fresh sandbox (variables are gone)"
		}
		text(msg)
	}
	for _, f := range res.Files {
		out.Content = append(out.Content, fileLink(f))
	}
	if len(out.Content) == 0 {
		text("(no output)")
	}
	return out
}

func truncNote(cut bool) string {
	if cut {
		return "\n[output truncated at the output limit]"
	}
	return ""
}

func bundleMaps[B ~map[string]any](bs []B) []map[string]any {
	out := make([]map[string]any, len(bs))
	for i, b := range bs {
		out[i] = b
	}
	return out
}

// imageOf is a bundle's PNG or JPEG as image content, nil if it has none.
func imageOf(b map[string]any) *sdk.ImageContent {
	for _, mt := range []string{"image/png", "image/jpeg"} {
		if s, ok := b[mt].(string); ok {
			data, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
			if err == nil {
				return &sdk.ImageContent{Data: data, MIMEType: mt}
			}
		}
	}
	return nil
}

// URIPrefix starts the URI of every file resource: codeexec://files/ and
// the file's path under /mnt/data, each element escaped.
const URIPrefix = "codeexec://files/"

// FileURI is the resource URI of the file at p in /mnt/data.
func FileURI(p string) string {
	els := strings.Split(p, "/")
	for i, el := range els {
		els[i] = url.PathEscape(el)
	}
	return URIPrefix + strings.Join(els, "/")
}

// pathOf is the /mnt/data path of a resource URI.
func pathOf(uri string) (string, error) {
	rest, ok := strings.CutPrefix(uri, URIPrefix)
	if !ok {
		return "", fmt.Errorf("%q is not a codeexec://files/ URI", uri)
	}
	p, err := url.PathUnescape(rest)
	if err != nil {
		return "", fmt.Errorf("bad URI %q: %v", uri, err)
	}
	return p, executor.CheckPath(p)
}

func fileLink(f executor.File) *sdk.ResourceLink {
	size := f.Bytes
	l := &sdk.ResourceLink{URI: FileURI(f.Path), Name: f.Path, Title: "/mnt/data/" + f.Path, MIMEType: f.MIMEType, Size: &size}
	if f.Error != "" {
		l.Description = "not kept outside the sandbox: " + f.Error
	}
	return l
}

func (s *Service) resetSandbox(ctx context.Context, req *sdk.CallToolRequest, in ResetArgs) (*sdk.CallToolResult, any, error) {
	keep := in.KeepFiles == nil || *in.KeepFiles
	st, err := s.stateOf(req.Session)
	if err != nil {
		return nil, nil, err
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	st.checkEnded()
	st.note = ""
	old := st.sb
	if old == nil || !keep {
		if old != nil {
			old.Close()
			st.sb = nil
		}
		sb, err := s.opts.Backend.NewSandbox(ctx)
		if err != nil {
			return nil, nil, err
		}
		st.sb = sb
		return textResult("The sandbox was reset: a fresh Python process with an empty /mnt/data."), nil, nil
	}
	// The fresh sandbox is made and given the files before the old one
	// ends: if anything fails, the old one is still there.
	files, err := old.Files()
	if err != nil {
		return nil, nil, fmt.Errorf("cannot list the files to keep: %v", err)
	}
	sb, err := s.opts.Backend.NewSandbox(ctx)
	if err != nil {
		return nil, nil, err
	}
	for _, f := range files {
		if err := copyFile(ctx, old, sb, f.Path); err != nil {
			sb.Close()
			return nil, nil, fmt.Errorf("cannot keep %s (the old sandbox is unchanged): %v", f.Path, err)
		}
	}
	old.Close()
	st.sb = sb
	return textResult(fmt.Sprintf("The sandbox was reset: a fresh Python process; the %d files of /mnt/data were kept.", len(files))), nil, nil
}

func copyFile(ctx context.Context, from, to Sandbox, p string) error {
	f, size, err := from.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	return to.WriteFile(ctx, executor.InputFile{Path: p, Size: size, Open: func() (io.ReadCloser, error) {
		return io.NopCloser(io.NewSectionReader(f, 0, size)), nil
	}})
}

func textResult(t string) *sdk.CallToolResult {
	return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: t}}}
}

func (s *Service) uploadFile(ctx context.Context, req *sdk.CallToolRequest, in UploadArgs) (*sdk.CallToolResult, *executor.File, error) {
	if err := executor.CheckPath(in.Path); err != nil {
		return nil, nil, err
	}
	var data []byte
	switch in.Encoding {
	case "", "text":
		data = []byte(in.Content)
	case "base64":
		d, err := base64.StdEncoding.DecodeString(in.Content)
		if err != nil {
			return nil, nil, errors.New("content is not valid base64 (standard alphabet, with padding)")
		}
		data = d
	default:
		return nil, nil, fmt.Errorf("encoding %q: want text or base64", in.Encoding)
	}
	if int64(len(data)) > s.opts.MaxFileBytes {
		return nil, nil, fmt.Errorf("the file is %d bytes, over the limit of %d", len(data), s.opts.MaxFileBytes)
	}
	sb, _, err := s.sandbox(ctx, req.Session)
	if err != nil {
		return nil, nil, err
	}
	if err := sb.WriteFile(ctx, executor.DataFile(in.Path, data)); err != nil {
		var ie *executor.InputError
		if errors.As(err, &ie) || errors.Is(err, executor.ErrSessionEnded) || ctx.Err() != nil {
			return nil, nil, err
		}
		s.log.Error("upload_file", "err", err)
		return nil, nil, fmt.Errorf("the file could not be written: %v", err)
	}
	f := &executor.File{Path: in.Path, Bytes: int64(len(data)), MIMEType: executor.MIMEType(in.Path)}
	out := textResult(fmt.Sprintf("Wrote /mnt/data/%s (%d bytes).", in.Path, len(data)))
	out.Content = append(out.Content, fileLink(*f))
	return out, f, nil
}

func (s *Service) listFiles(ctx context.Context, req *sdk.CallToolRequest, _ struct{}) (*sdk.CallToolResult, *FileList, error) {
	list := &FileList{Files: []executor.File{}}
	if sb := s.existing(req.Session); sb != nil {
		files, err := sb.Files()
		if err != nil && !errors.Is(err, executor.ErrSessionEnded) {
			return nil, nil, fmt.Errorf("cannot list the files: %v", err)
		}
		list.Files = append(list.Files, files...)
	}
	if len(list.Files) == 0 {
		return textResult("/mnt/data is empty."), list, nil
	}
	var b strings.Builder
	for _, f := range list.Files {
		fmt.Fprintf(&b, "%s\t%d bytes\t%s\n", f.Path, f.Bytes, f.MIMEType)
	}
	out := textResult(b.String())
	for _, f := range list.Files {
		out.Content = append(out.Content, fileLink(f))
	}
	return out, list, nil
}

func (s *Service) readFile(ctx context.Context, req *sdk.CallToolRequest, in PathArgs) (*sdk.CallToolResult, any, error) {
	data, mt, err := s.read(req.Session, in.Path)
	if err != nil {
		return nil, nil, err
	}
	switch {
	case strings.HasPrefix(mt, "image/") && mt != "image/svg+xml":
		return &sdk.CallToolResult{Content: []sdk.Content{&sdk.ImageContent{Data: data, MIMEType: mt}}}, nil, nil
	case isText(data):
		return textResult(string(data)), nil, nil
	}
	return &sdk.CallToolResult{Content: []sdk.Content{&sdk.EmbeddedResource{Resource: &sdk.ResourceContents{
		URI: FileURI(in.Path), MIMEType: mt, Blob: data}}}}, nil, nil
}

// read reads the file at p of ss's sandbox, within MaxFileBytes, with its
// MIME type.
func (s *Service) read(ss *sdk.ServerSession, p string) ([]byte, string, error) {
	if err := executor.CheckPath(p); err != nil {
		return nil, "", err
	}
	sb := s.existing(ss)
	if sb == nil {
		return nil, "", fmt.Errorf("no file %s: the sandbox of this session has no files yet", p)
	}
	f, size, err := sb.Open(p)
	if err != nil {
		return nil, "", fmt.Errorf("no regular file %s in /mnt/data", p)
	}
	defer f.Close()
	if size > s.opts.MaxFileBytes {
		return nil, "", fmt.Errorf("%s is %d bytes, over the limit of %d for reading it whole; process it with run_python instead", p, size, s.opts.MaxFileBytes)
	}
	data, err := io.ReadAll(io.LimitReader(f, size))
	if err != nil {
		return nil, "", fmt.Errorf("cannot read %s: %v", p, err)
	}
	return data, executor.MIMEType(p), nil
}

func isText(data []byte) bool {
	return utf8.Valid(data) && !strings.ContainsRune(string(data), 0)
}

func (s *Service) addResources() {
	s.server.AddResourceTemplate(&sdk.ResourceTemplate{URITemplate: URIPrefix + "{+path}", Name: "sandbox-file",
		Title: "A file of the sandbox's /mnt/data", Description: "A file in this session's sandbox, at /mnt/data/PATH."},
		func(ctx context.Context, req *sdk.ReadResourceRequest) (*sdk.ReadResourceResult, error) {
			p, err := pathOf(req.Params.URI)
			if err != nil {
				return nil, sdk.ResourceNotFoundError(req.Params.URI)
			}
			data, mt, err := s.read(req.Session, p)
			if err != nil {
				return nil, sdk.ResourceNotFoundError(req.Params.URI)
			}
			c := &sdk.ResourceContents{URI: req.Params.URI, MIMEType: mt}
			if isText(data) && !strings.HasPrefix(mt, "image/") {
				c.Text = string(data)
			} else {
				c.Blob = data
			}
			return &sdk.ReadResourceResult{Contents: []*sdk.ResourceContents{c}}, nil
		})
	// resources/list answers with the files of the caller's own sandbox:
	// the SDK's list is the server's, the same for every session.
	s.server.AddReceivingMiddleware(func(next sdk.MethodHandler) sdk.MethodHandler {
		return func(ctx context.Context, method string, req sdk.Request) (sdk.Result, error) {
			res, err := next(ctx, method, req)
			if method != "resources/list" || err != nil {
				return res, err
			}
			lr, ok := res.(*sdk.ListResourcesResult)
			ss, ok2 := req.GetSession().(*sdk.ServerSession)
			if !ok || !ok2 {
				return res, err
			}
			lr.Resources = []*sdk.Resource{}
			lr.NextCursor = ""
			if sb := s.existing(ss); sb != nil {
				files, _ := sb.Files()
				for _, f := range files {
					lr.Resources = append(lr.Resources, &sdk.Resource{URI: FileURI(f.Path), Name: f.Path,
						Title: "/mnt/data/" + f.Path, MIMEType: f.MIMEType, Size: f.Bytes})
				}
			}
			return lr, nil
		}
	})
}

// progress sends an execution's output as progress notifications while
// it runs. add never blocks the execution: output waits in pending (at
// most the output limits) for a goroutine of its own that sends it.
type progress struct {
	ctx   context.Context
	ss    *sdk.ServerSession
	token any

	mu      sync.Mutex
	pending strings.Builder
	total   float64
	wake    chan struct{}
	quit    chan struct{}
	done    chan struct{}
}

func newProgress(ctx context.Context, ss *sdk.ServerSession, token any) *progress {
	p := &progress{ctx: ctx, ss: ss, token: token, wake: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
	go p.loop()
	return p
}

func (p *progress) add(ev executor.Event) {
	p.mu.Lock()
	switch ev.Kind {
	case "stdout", "stderr":
		p.pending.Write(ev.Text)
	case "display":
		kinds := make([]string, 0, len(ev.Bundle))
		for k := range ev.Bundle {
			kinds = append(kinds, k)
		}
		fmt.Fprintf(&p.pending, "[display: %s]\n", strings.Join(kinds, ", "))
	}
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

func (p *progress) loop() {
	defer close(p.done)
	for {
		select {
		case <-p.wake:
			p.flush()
		case <-p.quit:
			p.flush()
			return
		}
	}
}

func (p *progress) flush() {
	p.mu.Lock()
	msg := p.pending.String()
	p.pending.Reset()
	p.total += float64(len(msg))
	total := p.total
	p.mu.Unlock()
	if msg == "" {
		return
	}
	p.ss.NotifyProgress(p.ctx, &sdk.ProgressNotificationParams{ProgressToken: p.token, Progress: total, Message: msg})
}

func (p *progress) stop() {
	close(p.quit)
	<-p.done
}
