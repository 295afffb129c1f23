package executor

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"codeexec/internal/testenv"
)

// newTestExecutor starts an executor for one test, closing it at the end.
func newTestExecutor(t *testing.T, cfg Config) *Executor {
	t.Helper()
	testenv.Root(t, "the executor needs root (namespaces with a uid range, cgroups)")
	testenv.Python(t)
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
