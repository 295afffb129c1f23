package executor

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestBash(t *testing.T) {
	e := newTestExecutor(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	code0 := 0

	t.Run("output and exit code", func(t *testing.T) {
		res := execOK(t, e, Request{Language: LanguageBash, Code: "echo out; echo err >&2; printf 'a,b\\n1,2\\n' > t.csv; cut -d, -f2 t.csv"})
		if res.Stdout != "out\nb\n2\n" || res.Stderr != "err\n" {
			t.Errorf("stdout %q, stderr %q", res.Stdout, res.Stderr)
		}
		if res.ExitCode == nil || *res.ExitCode != code0 {
			t.Errorf("exit code %v, want 0", res.ExitCode)
		}
		wantFile(t, res, "t.csv", "text/")
	})
	t.Run("non-zero exit", func(t *testing.T) {
		res, err := e.Execute(ctx, Request{Language: LanguageBash, Code: "echo before; exit 3"})
		if err != nil {
			t.Fatal(err)
		}
		if res.Status != StatusError || res.ExitCode == nil || *res.ExitCode != 3 || res.Error == nil || res.Error.Name != "ExitCode" {
			t.Errorf("got status %s, exit code %v, error %+v; want error, 3, ExitCode", res.Status, res.ExitCode, res.Error)
		}
		if res.Stdout != "before\n" {
			t.Errorf("stdout %q", res.Stdout)
		}
	})
	t.Run("tools", func(t *testing.T) {
		// The tools a shell user reaches for, from the read-only /usr.
		res := execOK(t, e, Request{Language: LanguageBash, Code: `set -e
for c in ls cat head tail sort uniq wc cut tr grep sed awk find xargs unzip sqlite3 file python3; do command -v $c >/dev/null || { echo "missing $c"; exit 1; }; done
printf 'b\na\nb\n' | sort | uniq -c | awk '{print $2 "=" $1}' | tr '\n' ' '
echo
sqlite3 :memory: 'select 6*7;'
echo hi > x.txt && python3 -c 'import zipfile; zipfile.ZipFile("x.zip", "w").write("x.txt")' && unzip -p x.zip x.txt
file -b x.txt
find . -name '*.txt' | grep -c x
touch /usr/bin/nope 2>/dev/null || echo read-only`})
		want := "a=1 b=2 \n42\nhi\nASCII text\n1\nread-only\n"
		if res.Stdout != want {
			t.Errorf("stdout %q, want %q; stderr %q", res.Stdout, want, res.Stderr)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		res, err := e.Execute(ctx, Request{Language: LanguageBash, Code: "echo started; sleep 600", Limits: Limits{Timeout: time.Second}})
		if err != nil {
			t.Fatal(err)
		}
		if res.Status != StatusTimeout || res.Stdout != "started\n" {
			t.Errorf("status %s, stdout %q; want timeout after started", res.Status, res.Stdout)
		}
	})
	t.Run("unknown language", func(t *testing.T) {
		_, err := e.Execute(ctx, Request{Language: "ruby", Code: "puts 1"})
		var ie *InputError
		if !errors.As(err, &ie) || ie.Param != "language" {
			t.Errorf("err = %v, want an InputError for language", err)
		}
	})
}

// TestBashInSession runs bash and Python in turns in one session: they
// share /mnt/data, and a timed-out shell command is interrupted (its
// background jobs too) while the session lives on.
func TestBashInSession(t *testing.T) {
	e := newTestExecutor(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := e.NewSession(ctx, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	execOK(t, s, Request{Code: "import pandas as pd\npd.DataFrame({'n': [1, 2, 3]}).to_csv('n.csv', index=False)\nx = 41"})
	res := execOK(t, s, Request{Language: LanguageBash, Code: "pwd; tail -n +2 n.csv | paste -sd+ | bc 2>/dev/null || awk -F, 'NR>1{s+=$1} END{print s}' n.csv; echo from-bash > b.txt"})
	if res.Stdout != "/mnt/data\n6\n" {
		t.Errorf("stdout %q, want /mnt/data and 6", res.Stdout)
	}
	res = execOK(t, s, Request{Code: "print(open('b.txt').read().strip(), x + 1)"})
	if res.Stdout != "from-bash 42\n" {
		t.Errorf("stdout %q", res.Stdout)
	}

	res, err = s.Execute(ctx, Request{Language: LanguageBash, Code: "sleep 600 & echo bg; sleep 600", Limits: Limits{Timeout: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != StatusTimeout || res.SessionEnded {
		t.Fatalf("status %s, session ended %v; want a timeout the session survives", res.Status, res.SessionEnded)
	}
	// Nothing of the interrupted command is left running.
	res = execOK(t, s, Request{Language: LanguageBash, Code: "cat /proc/[0-9]*/comm | grep -c '^sleep$' || true"})
	if strings.TrimSpace(res.Stdout) != "0" {
		t.Errorf("sleeps left running: %q", res.Stdout)
	}
}
