package executor

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"
)

// newTestExecutor starts an executor for one test, closing it at the end.
func newTestExecutor(t *testing.T, cfg Config) *Executor {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("CI runs as root, but this test does not")
		}
		t.Skip("the executor needs root (namespaces with a uid range, cgroups)")
	}
	if _, err := os.Stat("/usr/bin/python3"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("/usr/bin/python3 is missing on CI: make test installs it")
		}
		t.Skip("/usr/bin/python3 is missing: apt-get install python3 python3-numpy python3-pandas python3-matplotlib python3-scipy python3-sympy")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	if cfg.PoolSize == 0 {
		cfg.PoolSize = 2
	}
	e, err := New(ctx, cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return e
}

func TestExecutePrint(t *testing.T) {
	e := newTestExecutor(t, Config{})
	for i := 0; i < 3; i++ {
		res, err := e.Execute(context.Background(), Request{Code: "print(1)\n1+1"})
		if err != nil {
			t.Fatalf("Execute: %v", err)
		}
		t.Logf("%+v", res)
		if res.Status != StatusOK || res.Stdout != "1\n" || res.Result["text/plain"] != "2" {
			t.Errorf("Execute(print(1)) = %+v", res)
		}
	}
}
