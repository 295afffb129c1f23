//go:build linux

package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// httpBench drives a running server over HTTP: print(1) round trips,
// sustained throughput with concurrent clients, and optionally how many
// idle sessions the machine holds.
type httpBench struct {
	url, key string
	client   *http.Client
}

func (b *httpBench) post(ctx context.Context, path string, body any) (map[string]any, error) {
	data, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, "POST", b.url+path, bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	if b.key != "" {
		req.Header.Set("Authorization", "Bearer "+b.key)
	}
	resp, err := b.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, fmt.Errorf("%s: status %d: %w", path, resp.StatusCode, err)
	}
	if resp.StatusCode != 200 {
		return out, fmt.Errorf("%s: status %d: %v", path, resp.StatusCode, out["error"])
	}
	return out, nil
}

// isLoopback reports whether u names this machine (localhost or a
// loopback address), where this machine's CPU time includes the server's.
func isLoopback(u string) bool {
	pu, err := url.Parse(u)
	if err != nil {
		return false
	}
	h := pu.Hostname()
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// waitReady polls /readyz until a sandbox is warm (at most 5 s).
func (b *httpBench) waitReady(ctx context.Context) {
	for i := 0; i < 1000 && ctx.Err() == nil; i++ {
		resp, err := b.client.Get(b.url + "/readyz")
		if err == nil {
			var v struct {
				Warm int `json:"warm_sandboxes"`
			}
			json.NewDecoder(resp.Body).Decode(&v)
			resp.Body.Close()
			if v.Warm >= 1 {
				return
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (b *httpBench) run(ctx context.Context, stdout io.Writer, n, clients int, dur time.Duration, sessions int) error {
	var d []time.Duration
	for i := 0; i < n && ctx.Err() == nil; i++ {
		b.waitReady(ctx)
		t0 := time.Now()
		res, err := b.post(ctx, "/v1/execute", map[string]any{"code": "print(1)"})
		if err != nil {
			return err
		}
		if res["status"] != "ok" {
			return fmt.Errorf("print(1): %v", res)
		}
		d = append(d, time.Since(t0))
	}
	s := newStats(d)
	fmt.Fprintf(stdout, "HTTP print(1) round trip: %d runs, median %s, p99 %s, mean %s  target <= 3 ms median\n", s.n, ms(s.median), ms(s.p99), ms(s.mean))

	var ok, failed atomic.Int64
	var lat []time.Duration
	var mu sync.Mutex
	tctx, cancel := context.WithTimeout(ctx, dur)
	defer cancel()
	var wg sync.WaitGroup
	busy0, _ := cpuBusy()
	t0 := time.Now()
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for tctx.Err() == nil {
				r0 := time.Now()
				res, err := b.post(tctx, "/v1/execute", map[string]any{"code": "print(1)"})
				switch {
				case tctx.Err() != nil:
				case err != nil || res["status"] != "ok":
					failed.Add(1)
				default:
					ok.Add(1)
					mu.Lock()
					lat = append(lat, time.Since(r0))
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	el := time.Since(t0)
	ls := newStats(lat)
	fmt.Fprintf(stdout, "sustained, %d clients: %.0f requests/s (%d ok, %d failed in %s), latency median %s p99 %s  target >= 200/s\n",
		clients, float64(ok.Load())/el.Seconds(), ok.Load(), failed.Load(), el.Round(time.Millisecond), ms(ls.median), ms(ls.p99))
	if busy1, err := cpuBusy(); err == nil && ok.Load() > 0 && busy1 > busy0 && isLoopback(b.url) {
		per := (busy1 - busy0) / time.Duration(ok.Load())
		fmt.Fprintf(stdout, "CPU per request: %s (this machine, /proc/stat, the server included); %d CPUs give at most %.0f/s at that cost\n",
			ms(per), runtime.NumCPU(), float64(runtime.NumCPU())*float64(time.Second)/float64(per))
	}

	if sessions > 0 {
		return b.sessions(ctx, stdout, sessions)
	}
	return nil
}

// sessions creates n idle sessions, reports the host memory they take
// (MemAvailable before and after, so run it on the server's machine) and
// checks that each still answers.
func (b *httpBench) sessions(ctx context.Context, stdout io.Writer, n int) error {
	before := memAvailable()
	var ids []string
	t0 := time.Now()
	for i := 0; i < n && ctx.Err() == nil; i++ {
		res, err := b.post(ctx, "/v1/sessions", map[string]any{})
		if err != nil {
			fmt.Fprintf(stdout, "sessions: stopped at %d: %v\n", i, err)
			break
		}
		id, _ := res["id"].(string)
		ids = append(ids, id)
		if _, err := b.post(ctx, "/v1/sessions/"+id+"/execute", map[string]any{"code": "x = 1"}); err != nil {
			fmt.Fprintf(stdout, "sessions: session %d failed: %v\n", i, err)
			break
		}
		if (i+1)%100 == 0 {
			fmt.Fprintf(stdout, "  %d sessions live (%s)\n", i+1, time.Since(t0).Round(time.Second))
		}
	}
	after := memAvailable()
	answered := 0
	for _, id := range ids {
		if res, err := b.post(ctx, "/v1/sessions/"+id+"/execute", map[string]any{"code": "print(x)"}); err == nil && res["stdout"] == "1\n" {
			answered++
		}
	}
	used := before - after
	fmt.Fprintf(stdout, "idle sessions: %d live, %d still answering; host memory used %.2f GiB (%.2f MiB each)  target 1000 within 16 GiB\n",
		len(ids), answered, float64(used)/(1<<30), float64(used)/float64(max(len(ids), 1))/(1<<20))
	for _, id := range ids {
		req, _ := http.NewRequestWithContext(ctx, "DELETE", b.url+"/v1/sessions/"+id, nil)
		if b.key != "" {
			req.Header.Set("Authorization", "Bearer "+b.key)
		}
		if resp, err := b.client.Do(req); err == nil {
			resp.Body.Close()
		}
	}
	return nil
}

// memAvailable reads MemAvailable from /proc/meminfo, in bytes.
func memAvailable() int64 {
	data, _ := os.ReadFile("/proc/meminfo")
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemAvailable:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}
