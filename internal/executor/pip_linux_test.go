package executor

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"codeexec/internal/egress"
)

// buildWheel returns a pure-Python wheel of distribution name (with
// dashes) at version, whose module greets.
func buildWheel(t *testing.T, name, version string) (file string, data []byte) {
	t.Helper()
	mod := strings.ReplaceAll(name, "-", "_")
	distInfo := fmt.Sprintf("%s-%s.dist-info", mod, version)
	files := []struct{ path, body string }{
		{mod + "/__init__.py", "def greet():\n    return 'hello from " + name + " " + version + "'\n"},
		{distInfo + "/METADATA", fmt.Sprintf("Metadata-Version: 2.1\nName: %s\nVersion: %s\n", name, version)},
		{distInfo + "/WHEEL", "Wheel-Version: 1.0\nGenerator: codeexec-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"},
	}
	var record strings.Builder
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, f := range files {
		w, err := zw.Create(f.path)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(f.body))
		sum := sha256.Sum256([]byte(f.body))
		fmt.Fprintf(&record, "%s,sha256=%s,%d\n", f.path, base64.RawURLEncoding.EncodeToString(sum[:]), len(f.body))
	}
	fmt.Fprintf(&record, "%s/RECORD,,\n", distInfo)
	w, _ := zw.Create(distInfo + "/RECORD")
	w.Write([]byte(record.String()))
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%s-%s-py3-none-any.whl", mod, version), buf.Bytes()
}

// TestPipInstall installs, in a session, a wheel the test built from a
// package index the test serves on loopback (reached through the egress
// proxy, as index.test): the next cell imports it. Without network, pip
// install fails at once with a message that says so.
func TestPipInstall(t *testing.T) {
	wheel, data := buildWheel(t, "hello-codeexec", "1.0")
	sum := sha256.Sum256(data)
	var fetched atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/simple/hello-codeexec/":
			fmt.Fprintf(w, "<!DOCTYPE html><html><body><a href=\"/files/%s#sha256=%x\">%s</a></body></html>", wheel, sum, wheel)
		case "/files/" + wheel:
			fetched.Add(1)
			w.Write(data)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	loop := netip.MustParseAddr("127.0.0.1")
	e := newTestExecutor(t, Config{
		PipIndexURL: fmt.Sprintf("http://index.test:%d/simple/", port),
		Egress: egress.Options{
			Resolver: testResolver{"index.test": {loop}},
			Dial:     (&loopbackDialer{t: t}).dial,
			DenyAddrs: func(a netip.Addr) (string, bool) {
				if a == loop {
					return "", false // the test's index
				}
				return egress.DefaultDeny(a)
			},
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := e.NewSession(ctx, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	network := &egress.Policy{Allow: []string{"index.test"}, HTTPPorts: []int{port}, MaxBytes: 16 << 20}

	// Without network: a clear error, and nothing asked of the index.
	res, err := s.Execute(ctx, Request{Code: "pip install hello-codeexec"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != StatusError || res.Error == nil || res.Error.Name != "PipError" || !strings.Contains(res.Error.Value, "network") {
		t.Errorf("pip install without network: status %s, error %+v", res.Status, res.Error)
	}

	res = execOK(t, s, Request{Code: "%pip install hello-codeexec\nimport hello_codeexec\nprint(hello_codeexec.greet())", Network: network, Limits: Limits{Timeout: time.Minute}})
	if !strings.Contains(res.Stdout, "Successfully installed hello-codeexec-1.0") || !strings.HasSuffix(res.Stdout, "hello from hello-codeexec 1.0\n") {
		t.Errorf("stdout %q, stderr %q", res.Stdout, res.Stderr)
	}
	if fetched.Load() != 1 {
		t.Errorf("the wheel was fetched %d times, want 1", fetched.Load())
	}
	for _, f := range res.Files {
		t.Errorf("pip left a file in /mnt/data: %+v", f)
	}
	// The next cell, without network, imports it too; pip show sees it.
	res = execOK(t, s, Request{Code: "import hello_codeexec\nprint(hello_codeexec.__file__)\n!pip show hello-codeexec"})
	if !strings.HasPrefix(res.Stdout, "/tmp/.codeexec/site-packages/hello_codeexec/__init__.py\n") || !strings.Contains(res.Stdout, "Version: 1.0") {
		t.Errorf("stdout %q, stderr %q", res.Stdout, res.Stderr)
	}
	// Valid Python is never rewritten, even with a line that looks like pip.
	res = execOK(t, s, Request{Code: "s = '''\npip install x\n'''\nprint(len(s))"})
	if res.Stdout != "15\n" {
		t.Errorf("stdout %q", res.Stdout)
	}
}
