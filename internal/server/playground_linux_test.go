//go:build linux

package server_test

// The playground page (internal/web) is tested as a person uses it: in
// Debian's chromium, driven with chromedp, against a real service whose
// model is the scripted fake. Each step saves a screenshot under the
// test's temp dir (the path is logged; -playground.dir keeps them
// elsewhere); with -playground.screenshot the
// chat view is also written to docs/playground.png for the README.

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"

	"codeexec/internal/config"
	"codeexec/internal/fakellm"
	"codeexec/internal/testenv"
	"codeexec/internal/web"
)

var (
	playgroundShot = flag.Bool("playground.screenshot", false, "write the chat view of TestPlayground to docs/playground.png")
	playgroundDir  = flag.String("playground.dir", "", "save TestPlayground's screenshots in this directory instead of a temp dir")
)

const chromiumPath = "/usr/bin/chromium"

// The spec checker reads the page and its assets as text.
func init() {
	for _, ct := range []string{"text/html", "text/javascript", "text/css"} {
		openapi3filter.RegisterBodyDecoder(ct, func(body io.Reader, _ http.Header, _ *openapi3.SchemaRef, _ openapi3filter.EncodingFn) (any, error) {
			b, err := io.ReadAll(body)
			return string(b), err
		})
	}
}

// browser starts a headless chromium that can reach loopback only: no
// background or first-run traffic, a proxy that does not exist for every
// other host, and no DNS.
func browser(t *testing.T) context.Context {
	t.Helper()
	testenv.File(t, chromiumPath, "chromium")
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.NoSandbox, // tests run as root, where chromium's own sandbox refuses to start
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
		chromedp.ProxyServer("http://127.0.0.1:9"),
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-domain-reliability", true),
		chromedp.Flag("no-pings", true),
		chromedp.Flag("disable-gpu", true),
	)
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelB := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	// A bound for the whole test, not an assertion on how fast it is.
	ctx, cancelC := context.WithTimeout(ctx, 4*time.Minute)
	t.Cleanup(func() { cancelC(); cancelB(); cancelA() })
	return ctx
}

// shooter saves numbered full-page screenshots in a temp dir.
type shooter struct {
	t   *testing.T
	ctx context.Context
	dir string
	n   int
}

func (s *shooter) shot(name string) []byte {
	s.t.Helper()
	png, err := chromedp.Run(s.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		s.t.Fatalf("screenshot %s: %v", name, err)
	}
	s.n++
	path := filepath.Join(s.dir, fmt.Sprintf("%02d-%s.png", s.n, strings.ReplaceAll(name, " ", "-")))
	if err := os.WriteFile(path, png, 0o644); err != nil {
		s.t.Fatal(err)
	}
	s.t.Logf("screenshot: %s", path)
	return png
}

// wait polls a JavaScript predicate until it holds; what says what a
// person waits to see.
func wait(t *testing.T, ctx context.Context, what, expr string) {
	t.Helper()
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(90*time.Second))); err != nil {
		body, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
		t.Fatalf("waiting for %s (%s): %v\npage text:\n%s", what, expr, err, body)
	}
}

func eval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

func do(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// typeCell types code into notebook cell n and runs it with Shift+Enter.
func typeCell(t *testing.T, ctx context.Context, n int, code string) {
	t.Helper()
	id := chromedp.ID("cell-" + itoa(n))
	do(t, ctx, "clear cell "+itoa(n), chromedp.WaitVisible(id))
	eval[bool](t, ctx, `(document.getElementById('cell-`+itoa(n)+`').value = '') === ''`)
	do(t, ctx, "type into cell "+itoa(n), chromedp.Click(id), chromedp.SendKeys(id, code),
		chromedp.KeyEvent("\r", chromedp.KeyModifiers(chromedp.ModifierShift)))
}

func itoa(n int) string { return strconv.Itoa(n) }

// out is the JavaScript for the output element of notebook cell n.
func out(n int) string { return `document.querySelector('.cell[data-cell="` + itoa(n) + `"] .out')` }

func TestPlayground(t *testing.T) {
	// The stop step holds the model's answer until the page gives up on it.
	env := startChatEnv(t, func(c *config.Config) { c.UpstreamTimeout = 10 * time.Minute })
	ctx := browser(t)
	sh := &shooter{t: t, ctx: ctx, dir: *playgroundDir}
	if sh.dir == "" {
		sh.dir = t.TempDir()
	}

	// The page loads without a key, then asks for one: the server has keys.
	do(t, ctx, "open the page", chromedp.Navigate(env.url+"/"))
	wait(t, ctx, "the API key form", `document.getElementById('key-input').checkVisibility()`)
	// From here on, anything its own CSP blocks is recorded. DOMPurify's
	// parse of the sandbox's HTML (inline style, an onerror handler) is
	// blocked there, in its working document: that is the CSP at work. The
	// page's own code, and the sanitised DOM it inserts, must cause none.
	eval[bool](t, ctx, `(window.cspViolations = [], document.addEventListener('securitypolicyviolation',
		e => window.cspViolations.push(e.violatedDirective + ' ' + e.blockedURI + ' ' + e.sourceFile + ':' + e.lineNumber + ' ' + e.sample)), true)`)
	if got := eval[string](t, ctx, `document.documentElement.outerHTML`); strings.Contains(got, keyA) || strings.Contains(got, keyB) {
		t.Fatal("the page embeds an API key")
	}
	sh.shot("key form")
	do(t, ctx, "enter the key", chromedp.SendKeys(chromedp.ID("key-input"), keyA), chromedp.Click(chromedp.CSS("#key-form button[type=submit]")))
	wait(t, ctx, "the model picker filled from /v1/models",
		`[...document.querySelectorAll('#model option')].map(o => o.value).join(',') === 'fake-alpha,fake-beta'`)
	if eval[bool](t, ctx, `document.getElementById('key-form').checkVisibility()`) {
		t.Error("the key form is still shown after the key was saved")
	}
	if got := eval[string](t, ctx, `localStorage.getItem('codeexec.apiKey')`); got != keyA {
		t.Fatalf("the key in localStorage is %q", got)
	}

	// Notebook: a cell that prints, run with Shift+Enter.
	do(t, ctx, "open the notebook", chromedp.Click(chromedp.ID("tab-notebook")))
	typeCell(t, ctx, 1, "print('hello from the sandbox', 6 * 7)")
	wait(t, ctx, "the printed line", out(1)+`.querySelector('.stdout')?.textContent === 'hello from the sandbox 42\n'`)
	wait(t, ctx, "a second cell focused", `document.activeElement.id === 'cell-2'`)
	sh.shot("notebook print")

	// A DataFrame: its HTML table, in the page.
	typeCell(t, ctx, 2, "import pandas as pd\ndf = pd.DataFrame({'city': ['Paris', 'Oslo'], 'temp': [21, 9]})\ndf")
	wait(t, ctx, "the DataFrame's table", out(2)+`.querySelector('.html-result table')`)
	cells := eval[[]string](t, ctx, `[...`+out(2)+`.querySelectorAll('table tbody td')].map(td => td.innerText)`)
	if strings.Join(cells, ",") != "Paris,21,Oslo,9" {
		t.Errorf("the table's cells are %q", cells)
	}
	if h := eval[float64](t, ctx, out(2)+`.querySelector('table').getBoundingClientRect().height`); h <= 0 {
		t.Errorf("the table is not visible: height %v", h)
	}
	sh.shot("notebook dataframe")

	// A plot: an <img> holding a PNG the browser decoded.
	typeCell(t, ctx, 3, "import matplotlib.pyplot as plt\nplt.plot([1, 4, 9, 16])\nplt.title('squares')\nplt.show()")
	wait(t, ctx, "the plot", `(() => { const i = `+out(3)+`.querySelector('img'); return i && i.complete && i.naturalWidth > 0 })()`)
	if src := eval[string](t, ctx, out(3)+`.querySelector('img').src.slice(0, 22)`); src != "data:image/png;base64," {
		t.Errorf("the plot's src starts %q", src)
	}
	sh.shot("notebook plot")

	// Upload a file to the session, see it in the files panel, read it.
	csv := filepath.Join(t.TempDir(), "sales.csv")
	if err := os.WriteFile(csv, []byte("month,sales\n1,100\n2,120\n3,150\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	do(t, ctx, "upload sales.csv", chromedp.SetUploadFiles(chromedp.ID("nb-upload"), []string{csv}))
	wait(t, ctx, "sales.csv in the files panel", `document.getElementById('nb-files').innerText.includes('sales.csv (30 B)')`)
	typeCell(t, ctx, 4, "print(pd.read_csv('/mnt/data/sales.csv')['sales'].sum())")
	wait(t, ctx, "the sum of the uploaded column", out(4)+`.querySelector('.stdout')?.textContent === '370\n'`)

	// What the sandbox returns cannot run script in the page: the HTML is
	// sanitised (no handlers, no script) and the page's CSP forbids inline
	// script anyway.
	typeCell(t, ctx, 5, "class Evil:\n    def _repr_html_(self):\n        return '<b id=\"evil\">bold</b><img src=x onerror=\"window.pwned=1\"><script>window.pwned=2</script>'\nEvil()")
	wait(t, ctx, "the sanitised HTML", out(5)+`.querySelector('.html-result b')?.textContent === 'bold'`)
	if got := eval[string](t, ctx, `String(window.pwned) + ' ' + `+out(5)+`.querySelector('.html-result').innerHTML`); strings.Contains(got, "onerror") || strings.Contains(got, "<script") || !strings.HasPrefix(got, "undefined ") {
		t.Errorf("sandbox HTML kept script: %s", got)
	}
	sh.shot("notebook upload and html")

	// Restart: a new session, where df is gone; the error shows its
	// traceback.
	do(t, ctx, "restart", chromedp.Click(chromedp.ID("nb-restart")))
	wait(t, ctx, "the restart", `document.getElementById('nb-status').innerText.startsWith('Restarted')`)
	typeCell(t, ctx, 6, "df")
	wait(t, ctx, "the NameError's traceback", out(6)+`.querySelector('.traceback')?.innerText.includes("NameError: name 'df' is not defined")`)
	if st := eval[string](t, ctx, out(6)+`.querySelector('.status').innerText`); !strings.HasPrefix(st, "status error") {
		t.Errorf("the failed cell's status line is %q", st)
	}

	// At phone width nothing overflows sideways.
	do(t, ctx, "phone width", chromedp.EmulateViewport(390, 844))
	if w := eval[[]float64](t, ctx, `[document.documentElement.scrollWidth, window.innerWidth]`); w[0] > w[1] {
		t.Errorf("at 390 px the page is %v px wide", w[0])
	}
	sh.shot("notebook phone")
	do(t, ctx, "desktop width", chromedp.EmulateViewport(1280, 900))

	// Chat: an answer that does not come is stopped.
	do(t, ctx, "open the chat", chromedp.Click(chromedp.ID("tab-chat")))
	env.router.def.QueueFaults(fakellm.Fault{Delay: time.Hour})
	do(t, ctx, "ask", chromedp.SendKeys(chromedp.ID("chat-input"), "What is the compound interest?"), chromedp.KeyEvent("\r"))
	wait(t, ctx, "Stop enabled while the answer runs", `!document.getElementById('chat-stop').disabled`)
	do(t, ctx, "stop", chromedp.Click(chromedp.ID("chat-stop")))
	wait(t, ctx, "the answer stopped", `document.querySelector('.msg.assistant')?.innerText.includes('Stopped.') && !document.getElementById('chat-send').disabled`)
	sh.shot("chat stopped")
	do(t, ctx, "new conversation", chromedp.Click(chromedp.ID("chat-clear")))

	// A file attached to the conversation is read by the model's code.
	do(t, ctx, "attach sales.csv", chromedp.SetUploadFiles(chromedp.ID("chat-files"), []string{csv}))
	wait(t, ctx, "the attachment listed", `document.getElementById('chat-attached').innerText === 'Attached: sales.csv'`)
	do(t, ctx, "ask about it", chromedp.SendKeys(chromedp.ID("chat-input"), "Summarise the attached file"), chromedp.KeyEvent("\r"))
	wait(t, ctx, "the analysis of the attached file",
		`[...document.querySelectorAll('.msg.assistant .text')].some(e => e.innerText.includes('sales sum: 370'))`)
	sh.shot("chat attached")

	// A second turn, sent with the first one's execution in its history, in
	// which the fake model runs code that saves and shows a chart.
	last := `[...document.querySelectorAll('.msg.assistant')].at(-1)`
	do(t, ctx, "ask", chromedp.SendKeys(chromedp.ID("chat-input"), "Save a bar chart of the languages"), chromedp.KeyEvent("\r"))
	wait(t, ctx, "the model's answer", last+`.querySelector('.text')?.innerText.includes('The chart is saved as chart.png.')`)
	wait(t, ctx, "the chart in the execution cell",
		`(() => { const i = `+last+`.querySelector('details.exec img'); return i && i.complete && i.naturalWidth > 0 })()`)
	if !eval[bool](t, ctx, last+`.querySelector('.text .md p') !== null`) {
		t.Error("the answer is not rendered as Markdown")
	}
	code := eval[string](t, ctx, last+`.querySelector('details.exec pre.code').innerText`)
	if !strings.Contains(code, `plt.savefig("/mnt/data/chart.png")`) {
		t.Errorf("the cell shows the code %q", code)
	}
	if n := eval[int](t, ctx, last+`.querySelectorAll('details.exec pre.code [class^="hljs-"]').length`); n == 0 {
		t.Error("the code is not highlighted")
	}
	if got := eval[string](t, ctx, last+`.querySelector('.files-out')?.innerText || ''`); !strings.Contains(got, "chart.png") {
		t.Errorf("no download for chart.png: %q", got)
	}
	if !eval[bool](t, ctx, `document.getElementById('chat-stop').disabled && !document.getElementById('chat-send').disabled`) {
		t.Error("after the answer, Send is not enabled again or Stop is still enabled")
	}
	for _, v := range eval[[]string](t, ctx, `window.cspViolations`) {
		if strings.Contains(v, "/playground/vendor/purify.js:") {
			t.Logf("blocked by the CSP while DOMPurify parsed sandbox HTML: %s", v)
		} else {
			t.Errorf("the page broke its own CSP: %s", v)
		}
	}
	if !historyHasExecution(env.router.def.DecodedRequests(), "sales sum: 370") {
		t.Error("the second turn's request did not carry the first turn's execution")
	}
	png := sh.shot("chat chart")
	if *playgroundShot {
		if err := os.WriteFile("../../docs/playground.png", png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// historyHasExecution reports whether the last request the fake model got
// holds a tool message with output: the page sent the earlier execution
// back in the history (the server turns it into a function call and its
// result).
func historyHasExecution(reqs []*fakellm.Request, output string) bool {
	if len(reqs) == 0 {
		return false
	}
	for _, m := range reqs[len(reqs)-1].Messages {
		if m.Role == "tool" && strings.Contains(m.Text(), output) {
			return true
		}
	}
	return false
}

// TestPlaygroundHeaders checks what the page is served with: no key
// needed, a CSP that allows script from the server only, and no asset
// outside static/.
func TestPlaygroundHeaders(t *testing.T) {
	s := startService(t, nil)
	resp, err := http.Get(s.url + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Security-Policy") != web.CSP {
		t.Fatalf("GET / = %d, CSP %q", resp.StatusCode, resp.Header.Get("Content-Security-Policy"))
	}
	if !strings.Contains(web.CSP, "script-src 'self';") || strings.Contains(web.CSP, "unsafe") {
		t.Errorf("the CSP is not strict: %s", web.CSP)
	}
	for path, want := range map[string]int{
		"/playground/app.js": 200, "/playground/vendor/purify.js": 200, "/playground/vendor/VERSIONS": 404,
		"/playground/nothing.js": 404, "/playground/index.html": 404,
	} {
		resp, err := http.Get(s.url + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s = %d, want %d", path, resp.StatusCode, want)
		}
	}
	// Other paths are still the API's 404.
	if code, body := s.call("GET", "/nope", "", nil); code != 404 || body["error"] == nil {
		t.Errorf("GET /nope = %d %v", code, body)
	}
}

// TestPlaygroundWithoutModel: on a server with no keys and no model
// provider, the page asks for no key, opens the notebook, which works, and
// the chat tab says what it needs.
func TestPlaygroundWithoutModel(t *testing.T) {
	s := startService(t, func(c *config.Config) { c.APIKeys = nil })
	ctx := browser(t)
	sh := &shooter{t: t, ctx: ctx, dir: t.TempDir()}
	do(t, ctx, "open the page", chromedp.Navigate(s.url+"/"))
	wait(t, ctx, "the notebook tab selected", `document.getElementById('tab-notebook').getAttribute('aria-selected') === 'true' && document.getElementById('notebook').checkVisibility()`)
	typeCell(t, ctx, 1, "1 + 1")
	wait(t, ctx, "the result", out(1)+`.querySelector('.result')?.textContent === '2'`)
	if eval[bool](t, ctx, `document.getElementById('key-form').checkVisibility()`) {
		t.Error("the page asks for a key on a server without keys")
	}
	do(t, ctx, "open the chat", chromedp.Click(chromedp.ID("tab-chat")))
	wait(t, ctx, "the notice", `document.getElementById('chat-unavailable').checkVisibility() && document.getElementById('chat-unavailable').innerText.includes('--upstream-url')`)
	if eval[bool](t, ctx, `document.getElementById('chat-form').checkVisibility()`) {
		t.Error("the chat form is shown without a model provider")
	}
	sh.shot("chat without model")
}
