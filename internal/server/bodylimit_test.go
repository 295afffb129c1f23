//go:build linux

package server

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"codeexec/internal/config"
	"codeexec/internal/store"
	"codeexec/internal/toolloop"
)

// The larger upload limit belongs to the upload endpoints: a JSON
// endpoint keeps the JSON limit whatever Content-Type the client claims.
// Needs neither root nor a sandbox: every request is refused before one
// is used.
func TestBodyLimitByRoute(t *testing.T) {
	cfg := config.Default()
	cfg.MaxBodyBytes, cfg.MaxUploadBytes = 1<<10, 1<<20
	st, err := store.Open(context.Background(), t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	s := New(cfg, nil, st, slog.New(slog.NewTextHandler(io.Discard, nil)))
	s.SetChat(&Chat{Loop: &toolloop.Loop{}}) // never reached: the body is refused first

	// Over the JSON limit, under the upload limit, and with an unknown
	// field at the end: read whole, it is refused as invalid (400), so
	// the test never needs an executor even on code without the limit.
	big := `{"code":"` + strings.Repeat("x", 4<<10) + `","bogus":1}`
	bigChat := `{"messages":[{"role":"user","content":"` + strings.Repeat("x", 4<<10) + `"}],"bogus":`
	tests := []struct {
		name, method, target, body string
	}{
		{"execute", http.MethodPost, "/v1/execute", big},
		{"session execute", http.MethodPost, "/v1/sessions/sess_x/execute", big},
		{"create session", http.MethodPost, "/v1/sessions", big},
		{"chat", http.MethodPost, "/v1/chat/completions", bigChat},
	}
	for _, tt := range tests {
		for _, ct := range []string{"application/json", "multipart/form-data; boundary=x", "multipart/mixed", "Multipart/Form-Data; boundary=x"} {
			t.Run(tt.name+"/"+ct, func(t *testing.T) {
				r := httptest.NewRequest(tt.method, tt.target, strings.NewReader(tt.body))
				r.Header.Set("Content-Type", ct)
				w := httptest.NewRecorder()
				s.ServeHTTP(w, r)
				var e struct {
					Error struct{ Code string } `json:"error"`
				}
				json.Unmarshal(w.Body.Bytes(), &e)
				if w.Code != http.StatusRequestEntityTooLarge || e.Error.Code != "body_too_large" {
					t.Errorf("%s %s (Content-Type %q, %d bytes) = %d %s, want 413 body_too_large",
						tt.method, tt.target, ct, len(tt.body), w.Code, w.Body.Bytes())
				}
			})
		}
	}

	// The upload endpoint still takes a file past the JSON limit.
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	fw, err := mw.CreateFormFile("file", "data.txt")
	if err != nil {
		t.Fatal(err)
	}
	fw.Write(bytes.Repeat([]byte("y"), 64<<10))
	mw.Close()
	r := httptest.NewRequest(http.MethodPost, "/v1/files", &body)
	r.Header.Set("Content-Type", mw.FormDataContentType())
	w := httptest.NewRecorder()
	s.ServeHTTP(w, r)
	if w.Code != http.StatusOK {
		t.Errorf("POST /v1/files with 64 KiB = %d %s, want 200", w.Code, w.Body.Bytes())
	}
}
