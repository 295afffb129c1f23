//go:build linux

package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"codeexec/internal/config"
	"codeexec/internal/egress"
)

// TestServeRefusesBeforeStarting: every bad setting, the egress ones
// included (they were checked only after the sandboxes had started), makes
// `codeexec serve` exit 2 naming it, and nothing is started: not even the
// data directory is created.
func TestServeRefusesBeforeStarting(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	headers := write("headers.json", `{"api.example.com": {"Authorization": "Bearer x"}}`)
	tests := []struct {
		name string
		args []string
		want []string // each must appear on stderr
	}{
		{"egress pattern *", []string{"--egress-allow", "*"}, []string{"invalid configuration", `egress pattern "*"`}},
		{"egress IP literal", []string{"--egress-allow", "api.example.com,169.254.169.254"}, []string{"IP addresses cannot be allowed"}},
		{"egress headers file missing", []string{"--egress-allow", "api.example.com", "--egress-headers-file", filepath.Join(dir, "missing.json")}, []string{"--egress-headers-file", "no such file"}},
		{"egress headers not JSON", []string{"--egress-allow", "api.example.com", "--egress-headers-file", write("bad.json", "Authorization: x")}, []string{"--egress-headers-file", "want {"}},
		{"egress header name invalid", []string{"--egress-allow", "api.example.com", "--egress-headers-file", write("name.json", `{"api.example.com": {"Bad Header": "x"}}`)}, []string{`invalid header "Bad Header"`}},
		{"egress header pattern invalid", []string{"--egress-allow", "api.example.com", "--egress-headers-file", write("pat.json", `{"10.0.0.1": {"X-Key": "x"}}`)}, []string{"egress headers", "IP addresses"}},
		{"egress headers without egress", []string{"--egress-headers-file", headers}, []string{"--egress-headers-file needs --egress-allow"}},
		{"port out of range", []string{"--addr", "127.0.0.1:65536"}, []string{"--addr", "bad port"}},
		{"keys file missing", []string{"--api-keys-file", filepath.Join(dir, "missing-keys")}, []string{"read API keys"}},
		{"short key from the keys file", []string{"--api-keys-file", write("keys", "# one key\nshort\n")}, []string{"at least 16 characters"}},
		{"every problem at once", []string{"--egress-allow", "*", "--pool-size", "0", "--log-level", "loud"}, []string{`egress pattern "*"`, "--pool-size", "--log-level"}},
		{"bad flag", []string{"--egress-tls-ports", "443,0"}, []string{`"0" is not a port`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := filepath.Join(t.TempDir(), "data")
			var stdout, stderr bytes.Buffer
			code := serveCmd(context.Background(), append([]string{"--data-dir", data}, tt.args...), &stdout, &stderr)
			if code != 2 {
				t.Errorf("serve %q = exit %d, want 2; stderr %q", tt.args, code, stderr.String())
			}
			for _, w := range tt.want {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("serve %q: stderr %q does not contain %q", tt.args, stderr.String(), w)
				}
			}
			if _, err := os.Stat(data); !os.IsNotExist(err) {
				t.Errorf("serve %q created the data directory (stat: %v): it started before refusing", tt.args, err)
			}
		})
	}
}

func TestEgressPolicy(t *testing.T) {
	headers := filepath.Join(t.TempDir(), "h.json")
	if err := os.WriteFile(headers, []byte(`{"api.example.com": {"Authorization": "Bearer x"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	c := config.Default()
	c.EgressAllow, c.EgressTLSPorts, c.EgressHeadersFile = []string{"api.example.com", "*.wiki.test"}, []int{443, 8443}, headers
	p, err := check(c)
	if err != nil {
		t.Fatal(err)
	}
	want := &egress.Policy{Allow: []string{"api.example.com", "*.wiki.test"}, TLSPorts: []int{443, 8443}, MaxBytes: 64 << 20,
		Headers: map[string]map[string]string{"api.example.com": {"Authorization": "Bearer x"}}}
	if diff := cmp.Diff(want, p); diff != "" {
		t.Errorf("check: egress policy (-want +got):\n%s", diff)
	}
	if p, err := check(config.Default()); p != nil || err != nil {
		t.Errorf("no allowlist: policy %v, err %v; want no policy (no network) and no error", p, err)
	}
}

func TestReadKeys(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name    string
		file    string
		want    []string
		wantErr bool
	}{
		{name: "no file", want: nil},
		{
			name: "comments and blank lines",
			file: write("keys", "# production keys\n\nkey-one-aaaaaaaaaaaa\n   \n  key-two-bbbbbbbbbbbb  \n\t# indented comment\r\nkey-three-cccccccccc\r\n"),
			want: []string{"key-one-aaaaaaaaaaaa", "key-two-bbbbbbbbbbbb", "key-three-cccccccccc"},
		},
		{name: "only comments", file: write("empty", "# none yet\n\n"), want: nil},
		{name: "missing file", file: filepath.Join(dir, "missing"), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readKeys(tt.file)
			if (err != nil) != tt.wantErr {
				t.Fatalf("readKeys(%q) = %v, want error %v", tt.file, err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("readKeys(%q) mismatch (-want +got):\n%s", tt.file, diff)
			}
		})
	}
}
