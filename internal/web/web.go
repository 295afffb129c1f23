// Package web is the playground: the page codeexec serve shows at / so that
// a person can try the service in a browser with nothing else installed. It
// is static files embedded in the binary (static/): index.html, app.js and
// app.css, plus pinned releases of marked (Markdown), DOMPurify (sanitising)
// and highlight.js (code), vendored by scripts/vendor-web.sh with their
// licences. No Node step builds it.
//
// The page talks only to the server's own API: notebook mode through
// /v1/sessions, chat mode through /v1/chat/completions with code_execution,
// with the API key a person types (kept in the browser's localStorage, never
// in the page). Everything sandboxed code produced is treated as hostile:
// Markdown and text/html results are sanitised by DOMPurify (no script,
// handlers, forms, styles or clobbering ids) before they reach the DOM, the
// rest is inserted as text or as data: images (an SVG only as an <img>),
// and the page's own Content-Security-Policy (CSP) allows script from 'self'
// only, with no inline script, so a sanitiser miss still cannot run code.
package web

import (
	"embed"
	"io/fs"
	"net/http"
	"path"
	"strings"
)

//go:embed static
var static embed.FS

// CSP is the Content-Security-Policy of the page and its assets: script and
// style only from the server itself (no inline script or style attribute),
// images also from data: and blob: URLs (the sandbox's PNGs arrive as
// base64), connections only to the server, and nothing else: no frames,
// plugins, forms or <base>, and no framing of the page by another.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; " +
	"connect-src 'self'; font-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"

// AssetPrefix is the path the page's assets are served under.
const AssetPrefix = "/playground/"

var types = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
}

// Page serves the playground page (GET /).
func Page(w http.ResponseWriter, r *http.Request) { serve(w, "index.html") }

// Asset serves one file of the page (GET /playground/{name}): name is a
// file of static/ or vendor/NAME; anything else is 404.
func Asset(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, AssetPrefix)
	if name == "index.html" {
		name = ""
	}
	serve(w, name)
}

func serve(w http.ResponseWriter, name string) {
	h := w.Header()
	h.Set("Content-Security-Policy", CSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	typ, ok := types[path.Ext(name)]
	var b []byte
	var err error
	if ok && name != "" && !strings.Contains(name, "..") {
		b, err = fs.ReadFile(static, "static/"+name)
	}
	if !ok || b == nil || err != nil {
		h.Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusNotFound)
		w.Write([]byte("not found\n"))
		return
	}
	h.Set("Content-Type", typ)
	h.Set("Cache-Control", "no-cache")
	w.Write(b)
}
