//go:build linux

package server

import (
	"context"
	"net/http"
	"sync"
	"time"

	"codeexec/internal/python"
)

// The interpreters the sandbox runs: it binds the host's /usr read-only,
// so the host's are the sandbox's.
const (
	sandboxPython = "/usr/bin/python3"
	sandboxBash   = "/bin/bash"
)

// runtimes caches GET /v1/runtimes: what is installed does not change
// while the server runs. A failure is not cached.
var runtimes struct {
	mu sync.Mutex
	rt *python.Runtimes
}

func readRuntimes(ctx context.Context) (*python.Runtimes, error) {
	runtimes.mu.Lock()
	defer runtimes.mu.Unlock()
	if runtimes.rt != nil {
		return runtimes.rt, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	rt, err := python.ReadRuntimes(ctx, sandboxPython, sandboxBash)
	if err != nil {
		return nil, err
	}
	runtimes.rt = rt
	return rt, nil
}

// handleRuntimes answers GET /v1/runtimes: the languages an execution may
// name, with their versions, and the installed libraries.
func (s *Server) handleRuntimes(w http.ResponseWriter, r *http.Request, owner string) *apiError {
	rt, err := readRuntimes(r.Context())
	if err != nil {
		s.log.Error("read runtimes", "err", err)
		return errInternal
	}
	writeJSON(w, http.StatusOK, rt)
	return nil
}
