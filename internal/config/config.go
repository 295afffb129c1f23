// Package config holds and validates codeexec's one configuration struct.
// Every field is a flag and a CODEEXEC_* environment variable (the flag
// wins), with a safe default: loopback only without API keys, no network
// for sandboxes.
//
// The package does no I/O and depends on no other package of codeexec: the
// environment comes in as a function, and what needs a file or another
// package's rules (the keys of --api-keys-file, the egress policy built
// from the --egress-* flags) is `codeexec serve`'s, in internal/cli, which
// checks it with Validate before it starts anything.
package config

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Config configures `codeexec serve`.
type Config struct {
	// Addr is the listen address (default 127.0.0.1:8080).
	Addr string
	// AllowPublic permits listening beyond loopback without API keys.
	AllowPublic bool
	// APIKeys are accepted bearer keys (CODEEXEC_API_KEYS, comma-separated).
	// With none, the API is open: only allowed on loopback.
	APIKeys []string
	// APIKeysFile names a file with one key per line ('#' comments),
	// whose keys `codeexec serve` adds to APIKeys before Validate.
	APIKeysFile string
	// DataDir holds the metadata database and files (default
	// /var/lib/codeexec).
	DataDir string
	// Database is the URL of a PostgreSQL database for the metadata
	// (postgres:// or postgresql://); empty (the default) keeps it in
	// SQLite in DataDir.
	Database string
	// BlobStore is the URL of an S3-compatible bucket for the contents of
	// files (s3://bucket[/prefix]?endpoint=...&region=...), its
	// credentials in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; empty
	// (the default) keeps them in DataDir.
	BlobStore string
	// AdvertiseAddr is the host:port the other nodes sharing Database
	// reach this one at (in Kubernetes, the pod's IP and the API port).
	// A node forwards requests for a session that lives on another node
	// there. Empty: this node is alone, or takes no forwarded requests.
	AdvertiseAddr string
	// NodeSecret authenticates forwarded requests between nodes; it is
	// required with AdvertiseAddr, at least 32 characters, and the same
	// on every node.
	NodeSecret string
	// NodeLease is how long a node counts as alive after it last
	// renewed its lease in Database (it renews every third of it); when
	// it lapses, the node's sessions have ended (default 15s).
	NodeLease time.Duration

	// PoolSize is the number of warm sandboxes (default 4).
	PoolSize int
	// DataWarmup has warm sandboxes also warm up pandas while the pool
	// is not drained (default true).
	DataWarmup bool
	// PlotWarmup has that warm-up also render a small matplotlib figure
	// (default false: it costs memory in every warm sandbox).
	PlotWarmup bool
	// QueueSize is how many executions may wait for a sandbox before
	// requests get 429 (default 64).
	QueueSize int
	// KeyConcurrency caps the running executions of one key (default 16).
	KeyConcurrency int
	// KeySessions caps the live sessions of one key (default 100).
	KeySessions int
	// SessionIdle ends a session after this long without executions
	// (default 10m); SessionMaxLifetime ends it regardless (default 1h).
	SessionIdle, SessionMaxLifetime time.Duration
	// FileTTL is how long uploaded and generated files are kept (default
	// 24h; 0 keeps them forever).
	FileTTL time.Duration
	// MaxBodyBytes caps a JSON request body (default 32 MiB);
	// MaxUploadBytes caps an uploaded file (default 100 MiB).
	MaxBodyBytes, MaxUploadBytes int64
	// StreamWriteTimeout bounds each write to a client (an SSE event, a
	// response body): a streaming client that does not take an event
	// within it, or falls 256 events behind, is dropped and its execution
	// killed (default 10s).
	StreamWriteTimeout time.Duration
	// BodyReadTimeout bounds reading a JSON request body and
	// UploadReadTimeout an upload's (defaults 30s and 10m): a client that
	// sends slower is cut off, and what it held is free again.
	BodyReadTimeout, UploadReadTimeout time.Duration
	// DecodeConcurrency caps the JSON bodies read and decoded at once
	// (default 16), each of up to MaxBodyBytes; one key may use at most
	// half of them (and no more than KeyConcurrency).
	DecodeConcurrency int
	// KeyStorageMB and KeyFiles cap what one key keeps in the store
	// (defaults 10240 MiB and 10000 files, expired files not counted).
	KeyStorageMB int64
	KeyFiles     int
	// ShutdownGrace is how long running executions may finish after
	// SIGTERM before they are killed (default 30s).
	ShutdownGrace time.Duration

	// Timeout and MaxTimeout are the default and largest wall-time limit.
	Timeout, MaxTimeout time.Duration
	// MemoryMB and MaxMemoryMB are the default and largest memory limit.
	MemoryMB, MaxMemoryMB int64
	// OutputBytes and MaxOutputBytes limit stdout and stderr, each.
	OutputBytes, MaxOutputBytes int64
	// SandboxesMemoryMB caps the memory, swap included, of all sandboxes
	// and their zygote together, in MiB; SandboxesPids their processes and
	// threads together. 0 (the default) derives them from the machine:
	// MemTotal less a fifth (at least 1 GiB, at most half), and half of
	// the smaller of kernel.threads-max and kernel.pid_max.
	SandboxesMemoryMB, SandboxesPids int64

	// UpstreamURL and UpstreamAPIKey name the OpenAI-compatible model
	// provider behind /v1/chat/completions. Where UpstreamURL is empty,
	// XAI_API_KEY or OPENAI_API_KEY select that provider's public
	// endpoint (with that key unless UpstreamAPIKey is set); with none,
	// chat answers 503.
	UpstreamURL, UpstreamAPIKey string
	// UpstreamTimeout bounds each model call (default 120s).
	UpstreamTimeout time.Duration
	// MaxTurns bounds the model calls of one chat request that may use
	// tools (default 10); ToolTimeBudget bounds their total time (default
	// 5m). Then the model is asked to answer without tools.
	MaxTurns       int
	ToolTimeBudget time.Duration
	// SearXNGURL enables the web_search tool with a SearXNG instance.
	SearXNGURL string

	// EgressAllow lists the domains sandboxed code may reach over HTTP(S)
	// through the filtering proxy: exact names or "*.suffix". Empty (the
	// default): no network at all. A request may narrow it, never widen it.
	EgressAllow []string
	// EgressMaxBytes caps the bytes one execution moves through the proxy
	// (default 64 MiB).
	EgressMaxBytes int64
	// EgressHTTPPorts and EgressTLSPorts are the ports plain HTTP and
	// CONNECT may reach (default 80 and 443).
	EgressHTTPPorts, EgressTLSPorts []int
	// PipIndexURL is the package index (a private mirror) that pip in the
	// sandbox installs from; empty: pip's default. pip reaches it through
	// the egress proxy, so EgressAllow must name its host.
	PipIndexURL string
	// EgressHeadersFile names a JSON file {"domain pattern": {"Header":
	// "value"}} of headers the proxy adds to plain-HTTP requests, so that
	// a secret never enters the sandbox. `codeexec serve` reads it when it
	// builds the egress policy, before it starts anything.
	EgressHeadersFile string

	// LogLevel is debug, info, warn or error (default info).
	LogLevel string
}

// minSandboxesPids is the smallest SandboxesPids that can run anything: the
// zygote's cgroup allows 64 tasks, and so does a sandbox by default.
const minSandboxesPids = 128

// Default returns the configuration with every default filled in.
func Default() Config {
	return Config{
		Addr: "127.0.0.1:8080", DataDir: "/var/lib/codeexec",
		PoolSize: 4, DataWarmup: true, QueueSize: 64, KeyConcurrency: 16, KeySessions: 100,
		SessionIdle: 10 * time.Minute, SessionMaxLifetime: time.Hour, FileTTL: 24 * time.Hour,
		MaxBodyBytes: 32 << 20, MaxUploadBytes: 100 << 20, ShutdownGrace: 30 * time.Second, StreamWriteTimeout: 10 * time.Second,
		BodyReadTimeout: 30 * time.Second, UploadReadTimeout: 10 * time.Minute, DecodeConcurrency: 16,
		KeyStorageMB: 10 << 10, KeyFiles: 10000,
		Timeout: 30 * time.Second, MaxTimeout: 10 * time.Minute,
		MemoryMB: 512, MaxMemoryMB: 4096, OutputBytes: 1 << 20, MaxOutputBytes: 16 << 20,
		EgressMaxBytes:  64 << 20,
		UpstreamTimeout: 120 * time.Second, MaxTurns: 10, ToolTimeBudget: 5 * time.Minute,
		LogLevel: "info", NodeLease: 15 * time.Second,
	}
}

// stringList is a comma-separated flag value.
type stringList struct{ v *[]string }

func (s stringList) String() string {
	if s.v == nil {
		return ""
	}
	return strings.Join(*s.v, ",")
}

func (s stringList) Set(v string) error {
	*s.v = nil
	for _, k := range strings.Split(v, ",") {
		if k = strings.TrimSpace(k); k != "" {
			*s.v = append(*s.v, k)
		}
	}
	return nil
}

// intList is a comma-separated list of integers.
type intList struct{ v *[]int }

func (l intList) String() string {
	if l.v == nil {
		return ""
	}
	var parts []string
	for _, n := range *l.v {
		parts = append(parts, strconv.Itoa(n))
	}
	return strings.Join(parts, ",")
}

func (l intList) Set(v string) error {
	*l.v = nil
	for _, f := range strings.Split(v, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("%q is not a port", f)
		}
		*l.v = append(*l.v, n)
	}
	return nil
}

// Register defines c's flags on fs with c's current values as defaults.
// Call ApplyEnv after parsing to fill what no flag set from CODEEXEC_*.
func (c *Config) Register(fs *flag.FlagSet) {
	fs.StringVar(&c.Addr, "addr", c.Addr, "listen address")
	fs.BoolVar(&c.AllowPublic, "allow-public", c.AllowPublic, "allow listening beyond loopback without API keys (dangerous)")
	fs.Var(stringList{&c.APIKeys}, "api-keys", "comma-separated API keys (prefer the env var or --api-keys-file)")
	fs.StringVar(&c.APIKeysFile, "api-keys-file", c.APIKeysFile, "file with one API key per line")
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "directory for the metadata database and files")
	fs.StringVar(&c.Database, "database", c.Database, "PostgreSQL URL for the metadata, postgres://... (empty: SQLite in --data-dir; prefer the env var when it holds a password)")
	fs.StringVar(&c.BlobStore, "blob-store", c.BlobStore, "S3 bucket for file contents, s3://bucket[/prefix]?endpoint=...&region=... (keys from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; empty: --data-dir)")
	fs.StringVar(&c.AdvertiseAddr, "advertise-addr", c.AdvertiseAddr, "host:port the other nodes sharing --database reach this one at, e.g. the pod IP (empty: no forwarded requests)")
	fs.StringVar(&c.NodeSecret, "node-secret", c.NodeSecret, "shared secret, 32+ characters, authenticating requests forwarded between nodes (prefer the env var)")
	fs.DurationVar(&c.NodeLease, "node-lease", c.NodeLease, "a node whose lease in --database is not renewed for this long is gone, and its sessions with it")
	fs.IntVar(&c.PoolSize, "pool-size", c.PoolSize, "warm sandboxes kept ready")
	fs.BoolVar(&c.DataWarmup, "data-warmup", c.DataWarmup, "warm sandboxes also warm up pandas while the pool is not drained (faster first pandas call, about 8 MiB more memory each)")
	fs.BoolVar(&c.PlotWarmup, "plot-warmup", c.PlotWarmup, "with --data-warmup, also render a small matplotlib figure (first plot about 3x faster, about 12 MiB more memory each)")
	fs.IntVar(&c.QueueSize, "queue-size", c.QueueSize, "executions that may wait for a sandbox before 429")
	fs.IntVar(&c.KeyConcurrency, "key-concurrency", c.KeyConcurrency, "running executions per API key")
	fs.IntVar(&c.KeySessions, "key-sessions", c.KeySessions, "live sessions per API key")
	fs.DurationVar(&c.SessionIdle, "session-idle", c.SessionIdle, "end a session after this long without executions")
	fs.DurationVar(&c.SessionMaxLifetime, "session-max-lifetime", c.SessionMaxLifetime, "end a session after this long regardless")
	fs.DurationVar(&c.FileTTL, "file-ttl", c.FileTTL, "keep files this long (0 = forever)")
	fs.Int64Var(&c.MaxBodyBytes, "max-body-bytes", c.MaxBodyBytes, "largest JSON request body")
	fs.Int64Var(&c.MaxUploadBytes, "max-upload-bytes", c.MaxUploadBytes, "largest uploaded file")
	fs.DurationVar(&c.ShutdownGrace, "shutdown-grace", c.ShutdownGrace, "time running executions get to finish on SIGTERM")
	fs.DurationVar(&c.BodyReadTimeout, "body-read-timeout", c.BodyReadTimeout, "longest a client may take to send a JSON request body")
	fs.DurationVar(&c.UploadReadTimeout, "upload-read-timeout", c.UploadReadTimeout, "longest a client may take to send an uploaded file")
	fs.IntVar(&c.DecodeConcurrency, "decode-concurrency", c.DecodeConcurrency, "JSON request bodies read and decoded at once (one key: at most half, and at most --key-concurrency)")
	fs.Int64Var(&c.KeyStorageMB, "key-storage-mb", c.KeyStorageMB, "MiB of stored files (uploads and outputs) per API key")
	fs.IntVar(&c.KeyFiles, "key-files", c.KeyFiles, "stored files per API key")
	fs.DurationVar(&c.StreamWriteTimeout, "stream-write-timeout", c.StreamWriteTimeout, "longest a client may take to accept a write (an SSE event, a response); slower clients are dropped and their executions killed")
	fs.DurationVar(&c.Timeout, "timeout", c.Timeout, "default wall-time limit of an execution")
	fs.DurationVar(&c.MaxTimeout, "max-timeout", c.MaxTimeout, "largest wall-time limit a request may ask for")
	fs.Int64Var(&c.MemoryMB, "memory-mb", c.MemoryMB, "default memory limit in MiB")
	fs.Int64Var(&c.MaxMemoryMB, "max-memory-mb", c.MaxMemoryMB, "largest memory limit a request may ask for, in MiB")
	fs.Int64Var(&c.OutputBytes, "output-bytes", c.OutputBytes, "default limit of stdout and of stderr")
	fs.Int64Var(&c.MaxOutputBytes, "max-output-bytes", c.MaxOutputBytes, "largest output limit a request may ask for")
	fs.Int64Var(&c.SandboxesMemoryMB, "sandboxes-memory-mb", c.SandboxesMemoryMB, "memory limit of all sandboxes together in MiB (0 = the machine's memory less a fifth, at least 1 GiB)")
	fs.Int64Var(&c.SandboxesPids, "sandboxes-pids", c.SandboxesPids, "limit of the processes and threads of all sandboxes together (0 = half of the smaller of kernel.threads-max and kernel.pid_max)")
	fs.StringVar(&c.UpstreamURL, "upstream-url", c.UpstreamURL, "base URL of the OpenAI-compatible model provider (e.g. http://127.0.0.1:11434/v1)")
	fs.StringVar(&c.UpstreamAPIKey, "upstream-api-key", c.UpstreamAPIKey, "API key of the model provider (prefer the env var)")
	fs.DurationVar(&c.UpstreamTimeout, "upstream-timeout", c.UpstreamTimeout, "time limit of each model call")
	fs.IntVar(&c.MaxTurns, "max-turns", c.MaxTurns, "model calls with tools per chat request")
	fs.DurationVar(&c.ToolTimeBudget, "tool-time-budget", c.ToolTimeBudget, "total time for the tool calls of one chat request")
	fs.StringVar(&c.SearXNGURL, "searxng-url", c.SearXNGURL, "SearXNG instance for the web_search tool (empty: web_search is refused)")
	fs.Var(stringList{&c.EgressAllow}, "egress-allow", "comma-separated domains (exact or *.suffix) sandboxed code may reach over HTTP(S); empty: no network")
	fs.Int64Var(&c.EgressMaxBytes, "egress-max-bytes", c.EgressMaxBytes, "bytes one execution may move through the egress proxy")
	fs.Var(intList{&c.EgressHTTPPorts}, "egress-http-ports", "comma-separated ports plain HTTP may reach through the egress proxy (default 80)")
	fs.Var(intList{&c.EgressTLSPorts}, "egress-tls-ports", "comma-separated ports HTTPS (CONNECT) may reach through the egress proxy (default 443)")
	fs.StringVar(&c.PipIndexURL, "pip-index-url", c.PipIndexURL, "package index (a private mirror) for pip install in the sandbox; its host must be in --egress-allow")
	fs.StringVar(&c.EgressHeadersFile, "egress-headers-file", c.EgressHeadersFile, "JSON file of headers the egress proxy adds per domain pattern")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn or error")
}

// EnvName is the environment variable of a flag: CODEEXEC_ and the flag's
// name in upper case with '-' as '_'.
func EnvName(flagName string) string {
	return "CODEEXEC_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// ApplyEnv sets every flag of fs that was not given on the command line
// from its environment variable, if set.
func ApplyEnv(fs *flag.FlagSet, getenv func(string) string) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		if v := getenv(EnvName(f.Name)); v != "" {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %w", EnvName(f.Name), v, err))
			}
		}
	})
	return errors.Join(errs...)
}

// Validate checks the configuration and says what to change.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	host, port, err := net.SplitHostPort(c.Addr)
	if err != nil {
		bad("--addr %q: %v", c.Addr, err)
	} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		bad("--addr %q: bad port", c.Addr)
	} else if len(c.APIKeys) == 0 && !c.AllowPublic && !isLoopback(host) {
		bad("--addr %q listens beyond loopback without API keys: set CODEEXEC_API_KEYS or --api-keys-file, or pass --allow-public if an open service is really wanted", c.Addr)
	}
	for _, k := range c.APIKeys {
		if len(k) < 16 {
			bad("API keys must be at least 16 characters")
			break
		}
	}
	pos := map[string]int64{"--pool-size": int64(c.PoolSize), "--queue-size": int64(c.QueueSize), "--key-concurrency": int64(c.KeyConcurrency),
		"--key-sessions": int64(c.KeySessions), "--max-body-bytes": c.MaxBodyBytes, "--max-upload-bytes": c.MaxUploadBytes,
		"--timeout": int64(c.Timeout), "--max-timeout": int64(c.MaxTimeout), "--memory-mb": c.MemoryMB, "--max-memory-mb": c.MaxMemoryMB,
		"--output-bytes": c.OutputBytes, "--max-output-bytes": c.MaxOutputBytes, "--session-idle": int64(c.SessionIdle),
		"--session-max-lifetime": int64(c.SessionMaxLifetime), "--upstream-timeout": int64(c.UpstreamTimeout),
		"--max-turns": int64(c.MaxTurns), "--tool-time-budget": int64(c.ToolTimeBudget), "--egress-max-bytes": c.EgressMaxBytes,
		"--body-read-timeout": int64(c.BodyReadTimeout), "--upload-read-timeout": int64(c.UploadReadTimeout),
		"--decode-concurrency": int64(c.DecodeConcurrency), "--key-storage-mb": c.KeyStorageMB, "--key-files": int64(c.KeyFiles)}
	for name, v := range pos {
		if v <= 0 {
			bad("%s must be positive", name)
		}
	}
	if c.PlotWarmup && !c.DataWarmup {
		bad("--plot-warmup extends the warm-up of --data-warmup, which is off")
	}
	if c.StreamWriteTimeout <= 0 {
		bad("--stream-write-timeout must be positive")
	}
	if c.FileTTL < 0 || c.ShutdownGrace < 0 {
		bad("--file-ttl and --shutdown-grace must not be negative")
	}
	if c.Timeout > c.MaxTimeout || c.MemoryMB > c.MaxMemoryMB || c.OutputBytes > c.MaxOutputBytes {
		bad("a default limit is above its maximum (--timeout/--max-timeout, --memory-mb/--max-memory-mb, --output-bytes/--max-output-bytes)")
	}
	if c.MemoryMB < 16 {
		bad("--memory-mb must be at least 16")
	}
	if c.SandboxesMemoryMB < 0 || c.SandboxesPids < 0 {
		bad("--sandboxes-memory-mb and --sandboxes-pids must not be negative (0 derives them from the machine)")
	}
	if c.SandboxesMemoryMB > 0 && c.SandboxesMemoryMB < c.MaxMemoryMB {
		bad("--sandboxes-memory-mb %d is below --max-memory-mb %d: one execution could not get what it may ask for", c.SandboxesMemoryMB, c.MaxMemoryMB)
	}
	if c.SandboxesPids > 0 && c.SandboxesPids < minSandboxesPids {
		bad("--sandboxes-pids must be 0 or at least %d (the zygote's 64 tasks and one sandbox's 64)", minSandboxesPids)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("--log-level %q: want debug, info, warn or error", c.LogLevel)
	}
	for name, u := range map[string]string{"--upstream-url": c.UpstreamURL, "--searxng-url": c.SearXNGURL} {
		if u == "" {
			continue
		}
		if p, err := url.Parse(u); err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			bad("%s %q: want an http:// or https:// URL", name, u)
		}
	}
	if c.DataDir == "" {
		bad("--data-dir must be set")
	}
	for _, ports := range [][]int{c.EgressHTTPPorts, c.EgressTLSPorts} {
		for _, p := range ports {
			if p < 1 || p > 65535 {
				bad("--egress-http-ports and --egress-tls-ports: %d is not a port", p)
			}
		}
	}
	if c.EgressHeadersFile != "" && len(c.EgressAllow) == 0 {
		bad("--egress-headers-file needs --egress-allow")
	}
	// Only the form is checked here: the store reaches them at start-up.
	// The URLs may hold a password, so the messages show them redacted.
	if c.Database != "" {
		if p, err := url.Parse(c.Database); err != nil || (p.Scheme != "postgres" && p.Scheme != "postgresql") {
			bad("--database: want a postgres:// or postgresql:// URL")
		}
	}
	if c.AdvertiseAddr != "" {
		if c.Database == "" {
			bad("--advertise-addr needs --database: nodes find each other's sessions there")
		}
		if c.BlobStore == "" {
			bad("--advertise-addr needs --blob-store: a file made on one node must download from every other")
		}
		if h, p, err := net.SplitHostPort(c.AdvertiseAddr); err != nil || h == "" || p == "" || p == "0" {
			bad("--advertise-addr %q: want host:port", c.AdvertiseAddr)
		}
		if len(c.NodeSecret) < 32 {
			bad("--advertise-addr needs --node-secret (CODEEXEC_NODE_SECRET) of at least 32 characters, the same on every node")
		}
	}
	if c.NodeLease < 3*time.Second {
		bad("--node-lease must be at least 3s")
	}
	if c.BlobStore != "" {
		if p, err := url.Parse(c.BlobStore); err != nil || p.Scheme != "s3" || p.Host == "" {
			bad("--blob-store: want s3://bucket[/prefix]?endpoint=...&region=...")
		} else if p.User != nil {
			bad("--blob-store %q: the credentials come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, not the URL", p.Redacted())
		}
	}
	return errors.Join(errs...)
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
