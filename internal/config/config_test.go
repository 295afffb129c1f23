package config

import (
	"flag"
	"go/parser"
	"go/token"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// parse builds a Config the way `codeexec serve` does: defaults, then
// flags from args, then the environment env for every flag not given.
func parse(args []string, env map[string]string) (Config, error) {
	c := Default()
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	c.Register(fs)
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	err := ApplyEnv(fs, func(name string) string { return env[name] })
	return c, err
}

func TestDefaultValidates(t *testing.T) {
	c := Default()
	if err := c.Validate(); err != nil {
		t.Errorf("Default().Validate() = %v, want nil", err)
	}
}

func TestConfigPrecedence(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want func(*Config) // applied to Default()
	}{
		{
			name: "defaults",
			want: func(*Config) {},
		},
		{
			name: "env over default",
			env: map[string]string{
				"CODEEXEC_ADDR":                "127.0.0.1:9000",
				"CODEEXEC_POOL_SIZE":           "8",
				"CODEEXEC_SESSION_IDLE":        "90s",
				"CODEEXEC_ALLOW_PUBLIC":        "true",
				"CODEEXEC_API_KEYS":            "aaaaaaaaaaaaaaaa, bbbbbbbbbbbbbbbb,",
				"CODEEXEC_MAX_BODY_BYTES":      "1024",
				"CODEEXEC_SANDBOXES_MEMORY_MB": "16384",
				"CODEEXEC_SANDBOXES_PIDS":      "2000",
			},
			want: func(c *Config) {
				c.Addr, c.PoolSize, c.SessionIdle, c.AllowPublic = "127.0.0.1:9000", 8, 90*time.Second, true
				c.APIKeys = []string{"aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb"}
				c.MaxBodyBytes = 1024
				c.SandboxesMemoryMB, c.SandboxesPids = 16384, 2000
			},
		},
		{
			name: "flag over env",
			args: []string{"--addr", "127.0.0.1:9001", "--pool-size=2", "--api-keys", "cccccccccccccccc"},
			env: map[string]string{
				"CODEEXEC_ADDR":      "127.0.0.1:9000",
				"CODEEXEC_POOL_SIZE": "8",
				"CODEEXEC_API_KEYS":  "aaaaaaaaaaaaaaaa",
				"CODEEXEC_LOG_LEVEL": "debug",
			},
			want: func(c *Config) {
				c.Addr, c.PoolSize, c.APIKeys = "127.0.0.1:9001", 2, []string{"cccccccccccccccc"}
				c.LogLevel = "debug" // no flag: the env still applies
			},
		},
		{
			name: "flag given as its default still beats env",
			args: []string{"--pool-size", "4"},
			env:  map[string]string{"CODEEXEC_POOL_SIZE": "8"},
			want: func(*Config) {},
		},
		{
			name: "bad env value ignored when the flag is given",
			args: []string{"--timeout", "1m"},
			env:  map[string]string{"CODEEXEC_TIMEOUT": "soon"},
			want: func(c *Config) { c.Timeout = time.Minute },
		},
		{
			name: "egress lists",
			args: []string{"--egress-allow", "api.example.com, *.wiki.test", "--egress-tls-ports", "443,8443"},
			env:  map[string]string{"CODEEXEC_EGRESS_HTTP_PORTS": "8080"},
			want: func(c *Config) {
				c.EgressAllow, c.EgressHTTPPorts, c.EgressTLSPorts = []string{"api.example.com", "*.wiki.test"}, []int{8080}, []int{443, 8443}
			},
		},
		{
			name: "empty env value is unset",
			env:  map[string]string{"CODEEXEC_DATA_DIR": ""},
			want: func(*Config) {},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parse(tt.args, tt.env)
			if err != nil {
				t.Fatalf("parse(%q, %v) error = %v, want nil", tt.args, tt.env, err)
			}
			want := Default()
			tt.want(&want)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("parse(%q, %v) mismatch (-want +got):\n%s", tt.args, tt.env, diff)
			}
		})
	}
}

func TestApplyEnvBadValue(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want []string // each must appear in the error
	}{
		{"int", map[string]string{"CODEEXEC_POOL_SIZE": "many"}, []string{"CODEEXEC_POOL_SIZE", `"many"`}},
		{"duration", map[string]string{"CODEEXEC_SESSION_IDLE": "10"}, []string{"CODEEXEC_SESSION_IDLE"}},
		{"bool", map[string]string{"CODEEXEC_ALLOW_PUBLIC": "yes please"}, []string{"CODEEXEC_ALLOW_PUBLIC"}},
		{"int64", map[string]string{"CODEEXEC_MAX_UPLOAD_BYTES": "1e9"}, []string{"CODEEXEC_MAX_UPLOAD_BYTES"}},
		{"port zero", map[string]string{"CODEEXEC_EGRESS_HTTP_PORTS": "80,0"}, []string{"CODEEXEC_EGRESS_HTTP_PORTS", `"0" is not a port`}},
		{"named port", map[string]string{"CODEEXEC_EGRESS_TLS_PORTS": "https"}, []string{"CODEEXEC_EGRESS_TLS_PORTS"}},
		{
			name: "every bad variable is named",
			env:  map[string]string{"CODEEXEC_QUEUE_SIZE": "x", "CODEEXEC_FILE_TTL": "y"},
			want: []string{"CODEEXEC_QUEUE_SIZE", "CODEEXEC_FILE_TTL"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parse(nil, tt.env)
			if err == nil {
				t.Fatalf("parse(nil, %v) error = nil, want one naming %q", tt.env, tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("parse(nil, %v) error = %q, want it to contain %q", tt.env, err, w)
				}
			}
		})
	}
}

func TestEnvName(t *testing.T) {
	tests := []struct{ flag, want string }{
		{"addr", "CODEEXEC_ADDR"},
		{"api-keys-file", "CODEEXEC_API_KEYS_FILE"},
		{"session-max-lifetime", "CODEEXEC_SESSION_MAX_LIFETIME"},
	}
	for _, tt := range tests {
		if got := EnvName(tt.flag); got != tt.want {
			t.Errorf("EnvName(%q) = %q, want %q", tt.flag, got, tt.want)
		}
	}
}

func TestValidate(t *testing.T) {
	key := "0123456789abcdef" // 16 characters: the shortest accepted
	tests := []struct {
		name string
		mod  func(*Config)
		want []string // substrings of the error; nil means valid
	}{
		{"default", func(*Config) {}, nil},
		{"localhost", func(c *Config) { c.Addr = "localhost:8080" }, nil},
		{"ipv6 loopback", func(c *Config) { c.Addr = "[::1]:8080" }, nil},
		{"public without keys", func(c *Config) { c.Addr = "0.0.0.0:8080" }, []string{"beyond loopback", "--allow-public"}},
		{"all interfaces without keys", func(c *Config) { c.Addr = ":8080" }, []string{"beyond loopback"}},
		{"ipv6 any without keys", func(c *Config) { c.Addr = "[::]:8080" }, []string{"beyond loopback"}},
		{"private address without keys", func(c *Config) { c.Addr = "10.0.0.1:8080" }, []string{"beyond loopback"}},
		{"public with a key", func(c *Config) { c.Addr, c.APIKeys = "0.0.0.0:8080", []string{key} }, nil},
		{"public with allow-public", func(c *Config) { c.Addr, c.AllowPublic = "0.0.0.0:8080", true }, nil},
		{"short key", func(c *Config) { c.APIKeys = []string{key[:15]} }, []string{"at least 16"}},
		{"short key among good ones", func(c *Config) { c.APIKeys = []string{key, "short"} }, []string{"at least 16"}},
		{"short key does not open a public address", func(c *Config) { c.Addr, c.APIKeys = "0.0.0.0:8080", []string{"short"} }, []string{"at least 16"}},
		{"no port", func(c *Config) { c.Addr = "127.0.0.1" }, []string{"--addr"}},
		{"named port", func(c *Config) { c.Addr = "127.0.0.1:http" }, []string{"bad port"}},
		{"port out of range", func(c *Config) { c.Addr = "127.0.0.1:65536" }, []string{"bad port"}},
		{"negative port", func(c *Config) { c.Addr = "127.0.0.1:-1" }, []string{"bad port"}},
		{"any port", func(c *Config) { c.Addr = "127.0.0.1:0" }, nil},
		{"egress", func(c *Config) {
			c.EgressAllow, c.EgressHeadersFile, c.EgressTLSPorts = []string{"a.test"}, "/h.json", []int{443, 8443}
		}, nil},
		{"egress headers without egress", func(c *Config) { c.EgressHeadersFile = "/h.json" }, []string{"--egress-headers-file needs --egress-allow"}},
		{"egress port zero", func(c *Config) { c.EgressAllow, c.EgressHTTPPorts = []string{"a.test"}, []int{80, 0} }, []string{"0 is not a port"}},
		{"egress port too large", func(c *Config) { c.EgressAllow, c.EgressTLSPorts = []string{"a.test"}, []int{65536} }, []string{"65536 is not a port"}},
		{"zero pool", func(c *Config) { c.PoolSize = 0 }, []string{"--pool-size must be positive"}},
		{"negative queue", func(c *Config) { c.QueueSize = -1 }, []string{"--queue-size must be positive"}},
		{"zero key concurrency", func(c *Config) { c.KeyConcurrency = 0 }, []string{"--key-concurrency must be positive"}},
		{"zero key sessions", func(c *Config) { c.KeySessions = 0 }, []string{"--key-sessions must be positive"}},
		{"zero body", func(c *Config) { c.MaxBodyBytes = 0 }, []string{"--max-body-bytes must be positive"}},
		{"zero upload", func(c *Config) { c.MaxUploadBytes = 0 }, []string{"--max-upload-bytes must be positive"}},
		{"zero session idle", func(c *Config) { c.SessionIdle = 0 }, []string{"--session-idle must be positive"}},
		{"zero session lifetime", func(c *Config) { c.SessionMaxLifetime = 0 }, []string{"--session-max-lifetime must be positive"}},
		{"zero timeout", func(c *Config) { c.Timeout = 0 }, []string{"--timeout must be positive"}},
		{"zero output", func(c *Config) { c.OutputBytes = 0 }, []string{"--output-bytes must be positive"}},
		{"zero file ttl keeps forever", func(c *Config) { c.FileTTL = 0 }, nil},
		{"zero grace", func(c *Config) { c.ShutdownGrace = 0 }, nil},
		{"negative file ttl", func(c *Config) { c.FileTTL = -time.Second }, []string{"--file-ttl"}},
		{"negative grace", func(c *Config) { c.ShutdownGrace = -time.Second }, []string{"--shutdown-grace"}},
		{"timeout above max", func(c *Config) { c.Timeout = c.MaxTimeout + time.Second }, []string{"above its maximum"}},
		{"memory above max", func(c *Config) { c.MemoryMB = c.MaxMemoryMB + 1 }, []string{"above its maximum"}},
		{"output above max", func(c *Config) { c.OutputBytes = c.MaxOutputBytes + 1 }, []string{"above its maximum"}},
		{"default equal to max", func(c *Config) { c.Timeout, c.MemoryMB, c.OutputBytes = c.MaxTimeout, c.MaxMemoryMB, c.MaxOutputBytes }, nil},
		{"tiny memory", func(c *Config) { c.MemoryMB = 8 }, []string{"--memory-mb must be at least 16"}},
		{"sandbox ceilings set", func(c *Config) { c.SandboxesMemoryMB, c.SandboxesPids = 8192, 4096 }, nil},
		{"sandbox ceilings at their minimum", func(c *Config) { c.SandboxesMemoryMB, c.SandboxesPids = c.MaxMemoryMB, 128 }, nil},
		{"negative sandboxes memory", func(c *Config) { c.SandboxesMemoryMB = -1 }, []string{"--sandboxes-memory-mb and --sandboxes-pids must not be negative"}},
		{"negative sandboxes pids", func(c *Config) { c.SandboxesPids = -1 }, []string{"must not be negative"}},
		{"sandboxes memory below one execution's", func(c *Config) { c.SandboxesMemoryMB = c.MaxMemoryMB - 1 }, []string{"--sandboxes-memory-mb 4095 is below --max-memory-mb 4096"}},
		{"too few sandboxes pids", func(c *Config) { c.SandboxesPids = 64 }, []string{"--sandboxes-pids must be 0 or at least 128"}},
		{"bad log level", func(c *Config) { c.LogLevel = "verbose" }, []string{`--log-level "verbose"`}},
		{"upper-case log level", func(c *Config) { c.LogLevel = "INFO" }, []string{"--log-level"}},
		{"no data dir", func(c *Config) { c.DataDir = "" }, []string{"--data-dir"}},
		{"postgres database", func(c *Config) { c.Database = "postgres://codeexec@db.internal:5432/codeexec?sslmode=require" }, nil},
		{"postgresql database", func(c *Config) { c.Database = "postgresql:///codeexec?host=/run/postgresql" }, nil},
		{"mysql database", func(c *Config) { c.Database = "mysql://db/codeexec" }, []string{"--database: want a postgres://"}},
		{"database without a scheme", func(c *Config) { c.Database = "host=db dbname=codeexec" }, []string{"--database"}},
		{"s3 blob store", func(c *Config) { c.BlobStore = "s3://files/codeexec?endpoint=https://s3.internal:9000&region=eu-1" }, nil},
		{"blob store of another scheme", func(c *Config) { c.BlobStore = "gs://files" }, []string{"--blob-store: want s3://bucket"}},
		{"blob store without a bucket", func(c *Config) { c.BlobStore = "s3:///x" }, []string{"--blob-store"}},
		{"blob store with keys", func(c *Config) { c.BlobStore = "s3://AKIA:topsecret@files" }, []string{"--blob-store", "AWS_ACCESS_KEY_ID"}},
		{"a node among others", func(c *Config) {
			c.Database, c.BlobStore, c.AdvertiseAddr, c.NodeSecret = "postgres:///db", "s3://files", "10.1.2.3:8080", strings.Repeat("s", 32)
		}, nil},
		{"advertise alone", func(c *Config) { c.AdvertiseAddr = "10.1.2.3:8080" },
			[]string{"--advertise-addr needs --database", "--advertise-addr needs --blob-store", "--node-secret"}},
		{"short node secret", func(c *Config) {
			c.Database, c.BlobStore, c.AdvertiseAddr, c.NodeSecret = "postgres:///db", "s3://files", "10.1.2.3:8080", "short"
		}, []string{"--node-secret (CODEEXEC_NODE_SECRET) of at least 32"}},
		{"advertise without a port", func(c *Config) {
			c.Database, c.BlobStore, c.AdvertiseAddr, c.NodeSecret = "postgres:///db", "s3://files", "10.1.2.3", strings.Repeat("s", 32)
		}, []string{`--advertise-addr "10.1.2.3": want host:port`}},
		{"short node lease", func(c *Config) { c.NodeLease = time.Second }, []string{"--node-lease must be at least 3s"}},
		{"plot warm-up", func(c *Config) { c.PlotWarmup = true }, nil},
		{"plot warm-up without data warm-up", func(c *Config) { c.PlotWarmup, c.DataWarmup = true, false }, []string{"--plot-warmup", "--data-warmup"}},
		{
			name: "every problem is reported",
			mod:  func(c *Config) { c.Addr, c.PoolSize, c.LogLevel = "0.0.0.0:8080", 0, "loud" },
			want: []string{"beyond loopback", "--pool-size", "--log-level"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.mod(&c)
			err := c.Validate()
			if tt.want == nil {
				if err != nil {
					t.Errorf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want an error containing %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q, want it to contain %q", err, w)
				}
			}
		})
	}
}

func TestValidateNeverEchoesKeys(t *testing.T) {
	c := Default()
	c.APIKeys = []string{"tooshort-secret"}
	err := c.Validate()
	if err == nil || strings.Contains(err.Error(), "tooshort-secret") {
		t.Errorf("Validate() = %v, want an error that does not contain the key", err)
	}
}

// The URLs of the database and the blob store may hold a password, which
// no message may show.
func TestValidateNeverEchoesPasswords(t *testing.T) {
	c := Default()
	c.Database = "mysql://codeexec:topsecret@db/codeexec"
	c.BlobStore = "s3://AKIA:topsecret@files"
	err := c.Validate()
	if err == nil || strings.Contains(err.Error(), "topsecret") {
		t.Errorf("Validate() = %v, want an error that does not contain the password", err)
	}
}

func TestIsLoopback(t *testing.T) {
	tests := []struct {
		host string
		want bool
	}{
		{"127.0.0.1", true},
		{"127.1.2.3", true},
		{"::1", true},
		{"localhost", true},
		{"::ffff:127.0.0.1", true},
		{"10.0.0.1", false},
		{"192.168.1.1", false},
		{"0.0.0.0", false},
		{"::", false},
		{"", false}, // ":8080" listens on every interface
		{"example.com", false},
		{"localhost.example.com", false},
	}
	for _, tt := range tests {
		if got := isLoopback(tt.host); got != tt.want {
			t.Errorf("isLoopback(%q) = %v, want %v", tt.host, got, tt.want)
		}
	}
}

// TestConfigDocumented keeps docs/configuration.md in step with the flags:
// every flag and its environment variable must appear there.
func TestConfigDocumented(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "configuration.md"))
	if err != nil {
		t.Fatalf("read docs/configuration.md: %v", err)
	}
	c := Default()
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	c.Register(fs)
	fs.VisitAll(func(f *flag.Flag) {
		for _, s := range []string{"`--" + f.Name + "`", "`" + EnvName(f.Name) + "`"} {
			if !strings.Contains(string(doc), s) {
				t.Errorf("docs/configuration.md does not mention %s", s)
			}
		}
	})
}

// TestNoIOOrDependencies keeps the package what its doc comment says: it
// holds and checks settings, reads no file and depends on no other package
// of codeexec.
func TestNoIOOrDependencies(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			checked++
			switch {
			case strings.HasPrefix(path, "codeexec/"):
				t.Errorf("%s imports %s: config depends on no other package of codeexec", name, path)
			case path == "os" || path == "io/ioutil" || path == "io/fs" || path == "os/exec" || path == "net/http":
				t.Errorf("%s imports %s: config does no I/O", name, path)
			}
		}
	}
	if checked == 0 {
		t.Error("found no import to check")
	}
}
