package web

import (
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func get(t *testing.T, h http.HandlerFunc, path string) *httptest.ResponseRecorder {
	t.Helper()
	w := httptest.NewRecorder()
	h(w, httptest.NewRequest("GET", path, nil))
	return w
}

func TestPage(t *testing.T) {
	w := get(t, Page, "/")
	if w.Code != 200 || w.Header().Get("Content-Type") != "text/html; charset=utf-8" || w.Header().Get("Content-Security-Policy") != CSP {
		t.Fatalf("GET / = %d %v", w.Code, w.Header())
	}
	body := w.Body.String()
	// Every script is a file of the server: the CSP allows no inline script.
	scripts := regexp.MustCompile(`<script[^>]*>[^<]*</script>`).FindAllString(body, -1)
	if len(scripts) != strings.Count(body, "<script") || len(scripts) != 4 {
		t.Errorf("the page has %d script elements, %d whole: %q", strings.Count(body, "<script"), len(scripts), scripts)
	}
	for _, s := range scripts {
		if !regexp.MustCompile(`^<script src="/playground/[a-z/.]+" defer></script>$`).MatchString(s) {
			t.Errorf("inline or foreign script: %s", s)
		}
	}
	if h := regexp.MustCompile(`\son[a-z]+\s*=`).FindString(body); h != "" {
		t.Errorf("the page has an inline handler %q", h)
	}
	for _, src := range []string{"/playground/app.js", "/playground/vendor/marked.js", "/playground/vendor/purify.js", "/playground/vendor/highlight.js", "/playground/app.css", "/playground/vendor/highlight.css"} {
		if !strings.Contains(body, `"`+src+`"`) {
			t.Errorf("the page does not load %s", src)
		}
		if w := get(t, Asset, src); w.Code != 200 || w.Body.Len() == 0 || w.Header().Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s = %d, %d bytes", src, w.Code, w.Body.Len())
		}
	}
}

func TestAssetNotFound(t *testing.T) {
	for _, p := range []string{"/playground/", "/playground/index.html", "/playground/nope.js", "/playground/vendor/VERSIONS",
		"/playground/vendor/LICENSE-marked.txt", "/playground/../web.go", "/playground/vendor/../app.js"} {
		if w := get(t, Asset, p); w.Code != 404 {
			t.Errorf("GET %s = %d, want 404", p, w.Code)
		}
	}
}
