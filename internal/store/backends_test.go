package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"codeexec/internal/testenv"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// The store's tests run against every backend: forEachBackend runs a test
// once for each pairing of a metadata database (SQLite in the test's
// directory, or PostgreSQL) with a content store (the directory, or an
// S3-compatible bucket). PostgreSQL (Debian's postgresql) and SeaweedFS's
// S3 server (built from the module pinned in testdata/seaweedfs) are
// started once per test binary on demand, each in a temporary directory and
// reachable only through a unix socket or loopback, and stopped by
// TestMain.

type backend struct {
	meta  string // "sqlite" or "postgres"
	blobs string // "disk" or "s3"
}

func (b backend) String() string { return b.meta + "+" + b.blobs }

var backends = []backend{{"sqlite", "disk"}, {"postgres", "disk"}, {"sqlite", "s3"}, {"postgres", "s3"}}

// forEachBackend runs test as a subtest for each of backends.
func forEachBackend(t *testing.T, test func(t *testing.T, b backend)) {
	for _, b := range backends {
		t.Run(b.String(), func(t *testing.T) { test(t, b) })
	}
}

// env is the state of one store of the tests: a new directory and, as the
// backend needs, a new PostgreSQL database and a new prefix in the bucket.
type env struct {
	b      backend
	dir    string
	opts   Options
	prefix string // of the contents in the bucket, with its "/"
}

var envs atomic.Int64

// newEnv returns an empty env of b. It fails t (or, without CI, skips it)
// if b's servers cannot be had.
func (b backend) newEnv(t testing.TB) *env {
	t.Helper()
	e := &env{b: b, dir: t.TempDir()}
	n := envs.Add(1)
	if b.meta == "postgres" {
		e.opts.Database = postgresDatabase(t, fmt.Sprintf("t%d", n))
	}
	if b.blobs == "s3" {
		srv := s3(t)
		e.prefix = fmt.Sprintf("t%d/", n)
		e.opts.BlobStore = fmt.Sprintf("s3://%s/%s?endpoint=http://%s&region=us-east-1", s3Bucket, strings.TrimSuffix(e.prefix, "/"), srv.addr)
	}
	return e
}

// open opens e's store and closes it when t ends.
func (e *env) open(t testing.TB) *Store {
	t.Helper()
	s, err := Open(t.Context(), e.dir, e.opts)
	if err != nil {
		t.Fatalf("Open(%s) = %v", e.b, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// contents returns the ids of the contents stored in e, in no order.
func (e *env) contents(t testing.TB) []string {
	t.Helper()
	var names []string
	if e.b.blobs == "disk" {
		ents, err := os.ReadDir(filepath.Join(e.dir, "files"))
		if err != nil {
			t.Fatal(err)
		}
		for _, ent := range ents {
			names = append(names, ent.Name())
		}
		return names
	}
	for o := range s3(t).client.ListObjects(t.Context(), s3Bucket, minio.ListObjectsOptions{Prefix: e.prefix, Recursive: true}) {
		if o.Err != nil {
			t.Fatalf("list the bucket: %v", o.Err)
		}
		names = append(names, strings.TrimPrefix(o.Key, e.prefix))
	}
	return names
}

// contentKey is where e keeps the content id, for writeRaw and readRaw.
func (e *env) contentKey(id string) string {
	if e.b.blobs == "disk" {
		return "files/" + id
	}
	return e.prefix + id
}

// writeRaw puts data at key, a path under e's directory or a key in the
// bucket, behind the store's back.
func (e *env) writeRaw(t *testing.T, key, data string) {
	t.Helper()
	if e.b.blobs == "disk" {
		if err := os.WriteFile(filepath.Join(e.dir, key), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		return
	}
	if _, err := s3(t).client.PutObject(t.Context(), s3Bucket, key, strings.NewReader(data), int64(len(data)), minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
}

// readRaw returns what is at key, as writeRaw names it.
func (e *env) readRaw(t *testing.T, key string) (string, error) {
	t.Helper()
	if e.b.blobs == "disk" {
		b, err := os.ReadFile(filepath.Join(e.dir, key))
		return string(b), err
	}
	o, err := s3(t).client.GetObject(t.Context(), s3Bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return "", err
	}
	defer o.Close()
	b, err := io.ReadAll(o)
	return string(b), err
}

func TestMain(m *testing.M) {
	code := m.Run()
	stopServers()
	os.Exit(code)
}

var (
	stopMu sync.Mutex
	stops  []func()
)

func atStop(f func()) {
	stopMu.Lock()
	defer stopMu.Unlock()
	stops = append(stops, f)
}

func stopServers() {
	stopMu.Lock()
	defer stopMu.Unlock()
	for i := len(stops) - 1; i >= 0; i-- {
		stops[i]()
	}
}

// A server is a process the tests start once and share. On Linux it dies
// with the test binary (childAttr) should TestMain not get to stop it.
type server struct {
	once sync.Once
	need string // what is missing, for testenv.Missing
	err  error  // why it did not start
}

// get starts the server with start the first time, and then stops t as
// the first time told: testenv.Missing when something was missing, a
// failure when it did not start.
func (s *server) get(t testing.TB, start func() (need string, err error)) {
	t.Helper()
	s.once.Do(func() { s.need, s.err = start() })
	if s.need != "" {
		testenv.Missing(t, s.need)
	}
	if s.err != nil {
		t.Fatal(s.err)
	}
}

// runAs makes cmd run as u, when the tests run as root: PostgreSQL refuses
// to run as root.
func runAs(cmd *exec.Cmd, u *user.User) {
	var cred *syscall.Credential
	if u != nil {
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	// SIGQUIT is PostgreSQL's immediate shutdown.
	cmd.SysProcAttr = childAttr(syscall.SIGQUIT, cred)
}

// waitFor calls ready until it succeeds, exited reports the process gone,
// or a minute passes (a server that takes that long is broken, not slow).
func waitFor(ready func() error, exited <-chan struct{}) error {
	deadline := time.Now().Add(time.Minute)
	for {
		err := ready()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("it exited: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after a minute: %v", err)
		}
	}
}

// tail returns the end of the file at path, for an error message.
func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// PostgreSQL runs in a temporary directory, with fsync off, listening on a
// unix socket there only (no TCP at all).
var (
	pgServer server
	pgAdmin  *sql.DB
	pgSocket string
)

const pgUser = "codeexec"

func startPostgres() (need string, err error) {
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	if len(bins) == 0 {
		return "PostgreSQL's server, /usr/lib/postgresql/*/bin/postgres (Debian package postgresql; scripts/deps.sh installs it)", nil
	}
	sort.Slice(bins, func(i, j int) bool { // the newest version
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(bins[i]))))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(bins[j]))))
		return vi < vj
	})
	bin := filepath.Dir(bins[len(bins)-1])
	var as *user.User
	if os.Geteuid() == 0 {
		if as, err = user.Lookup("postgres"); err != nil {
			return "the user postgres to run PostgreSQL as, since it refuses root (the Debian package postgresql makes it; scripts/deps.sh installs it)", nil
		}
	}
	dir, err := os.MkdirTemp("", "codeexec-pg-")
	if err != nil {
		return "", err
	}
	atStop(func() { os.RemoveAll(dir) })
	if as != nil {
		uid, _ := strconv.Atoi(as.Uid)
		gid, _ := strconv.Atoi(as.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			return "", err
		}
	}
	data := filepath.Join(dir, "data")
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "--auth=trust", "--username="+pgUser,
		"--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions")
	runAs(initdb, as)
	if out, err := initdb.CombinedOutput(); err != nil {
		return "", fmt.Errorf("initdb: %v\n%s", err, out)
	}
	logPath := filepath.Join(dir, "log")
	logf, err := os.Create(logPath)
	if err != nil {
		return "", err
	}
	defer logf.Close()
	cmd := exec.Command(filepath.Join(bin, "postgres"), "-D", data, "-k", dir,
		"-c", "listen_addresses=", "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
		"-c", "max_connections=300", "-c", "shared_buffers=32MB")
	cmd.Stdout, cmd.Stderr = logf, logf
	runAs(cmd, as)
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start postgres: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	atStop(func() {
		cmd.Process.Signal(syscall.SIGINT) // fast shutdown
		<-exited
	})
	pgSocket = dir
	admin, err := sql.Open("pgx", pgURL("postgres"))
	if err != nil {
		return "", err
	}
	atStop(func() { admin.Close() })
	if err := waitFor(func() error { return admin.Ping() }, exited); err != nil {
		return "", fmt.Errorf("postgres: %v\n%s", err, tail(logPath))
	}
	pgAdmin = admin
	return "", nil
}

// pgURL is the URL of the test server's database name.
func pgURL(name string) string {
	return fmt.Sprintf("postgres:///%s?host=%s&user=%s", name, pgSocket, pgUser)
}

// postgresDatabase creates the empty database name and returns its URL.
func postgresDatabase(t testing.TB, name string) string {
	t.Helper()
	pgServer.get(t, startPostgres)
	// The name is ours: t and a number.
	if _, err := pgAdmin.ExecContext(t.Context(), "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	return pgURL(name)
}

// The S3 server is SeaweedFS's weed, with one bucket and one identity whose
// keys the tests put in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
type s3Server struct {
	server
	addr   string // host:port of its S3 API
	client *minio.Client
}

var s3Srv s3Server

const s3Bucket = "codeexec-test"

func s3(t testing.TB) *s3Server {
	t.Helper()
	s3Srv.get(t, startS3)
	return &s3Srv
}

// freePorts returns n distinct ports free on 127.0.0.1 just now.
func freePorts(n int) ([]int, error) {
	var ports []int
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func startS3() (need string, err error) {
	weed, need, err := weedBinary()
	if need != "" || err != nil {
		return need, err
	}
	dir, err := os.MkdirTemp("", "codeexec-s3-")
	if err != nil {
		return "", err
	}
	atStop(func() { os.RemoveAll(dir) })
	key, secret := randomHex(10), randomHex(20)
	identities, _ := json.Marshal(map[string]any{"identities": []any{map[string]any{
		"name":        "codeexec",
		"credentials": []any{map[string]string{"accessKey": key, "secretKey": secret}},
		"actions":     []string{"Admin", "Read", "Write", "List", "Tagging"},
	}}})
	config := filepath.Join(dir, "s3.json")
	if err := os.WriteFile(config, identities, 0o600); err != nil {
		return "", err
	}
	ports, err := freePorts(8)
	if err != nil {
		return "", err
	}
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		return "", err
	}
	p := func(i int) string { return strconv.Itoa(ports[i]) }
	// Every address is 127.0.0.1; what it would send beyond is turned off.
	cmd := exec.Command(weed, weedArgs(data, config, p)...)
	logPath := filepath.Join(dir, "log")
	logf, err := os.Create(logPath)
	if err != nil {
		return "", err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr, cmd.Dir = logf, logf, dir
	cmd.SysProcAttr = childAttr(syscall.SIGKILL, nil)
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start weed: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	atStop(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	addr := "127.0.0.1:" + p(0)
	client, err := minio.New(addr, &minio.Options{Creds: credentials.NewStaticV4(key, secret, ""), Region: "us-east-1"})
	if err != nil {
		return "", err
	}
	ctx := context.Background()
	ready := func() error {
		if err := client.MakeBucket(ctx, s3Bucket, minio.MakeBucketOptions{Region: "us-east-1"}); err != nil {
			return err
		}
		// The bucket is usable once an object goes in and comes out.
		if _, err := client.PutObject(ctx, s3Bucket, "ready", strings.NewReader("ok"), 2, minio.PutObjectOptions{}); err != nil {
			client.RemoveBucket(ctx, s3Bucket)
			return err
		}
		return client.RemoveObject(ctx, s3Bucket, "ready", minio.RemoveObjectOptions{})
	}
	if err := waitFor(ready, exited); err != nil {
		return "", fmt.Errorf("weed: %v\n%s", err, tail(logPath))
	}
	s3Srv.addr, s3Srv.client = addr, client
	os.Setenv("AWS_ACCESS_KEY_ID", key)
	os.Setenv("AWS_SECRET_ACCESS_KEY", secret)
	return "", nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// weedBinary returns SeaweedFS's weed at the version testdata/seaweedfs
// pins, building it with the go command into the user's cache directory
// the first time (that takes minutes; the build cache makes later builds
// quick).
func weedBinary() (path, need string, err error) {
	mod, err := os.ReadFile(filepath.Join("testdata", "seaweedfs", "go.mod"))
	if err != nil {
		return "", "", err
	}
	var version string
	for _, line := range strings.Split(string(mod), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "github.com/seaweedfs/seaweedfs" {
			version = f[1]
		}
	}
	if version == "" {
		return "", "", errors.New("testdata/seaweedfs/go.mod requires no github.com/seaweedfs/seaweedfs")
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", "", err
	}
	path = filepath.Join(cache, "codeexec", "seaweedfs-"+version, "weed")
	if _, err := os.Stat(path); err == nil {
		return path, "", nil
	}
	goCmd, err := exec.LookPath("go")
	if err != nil {
		if goCmd, err = exec.LookPath("/usr/local/go/bin/go"); err != nil {
			return "", "the go command, to build SeaweedFS's S3 server (on PATH or in /usr/local/go/bin)", nil
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", "", err
	}
	tmp := path + ".tmp" + randomHex(4)
	build := exec.Command(goCmd, "build", "-ldflags=-s -w", "-o", tmp, "github.com/seaweedfs/seaweedfs/weed")
	build.Dir = filepath.Join("testdata", "seaweedfs")
	build.Env = append(os.Environ(), "GOFLAGS=-mod=readonly")
	if out, err := build.CombinedOutput(); err != nil {
		os.Remove(tmp)
		return "", "", fmt.Errorf("build SeaweedFS %s: %v\n%s", version, err, out)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", "", err
	}
	return path, "", nil
}

// The backends serve the tests' stores in every test below: this checks
// what is particular to each.

func TestRebindDollar(t *testing.T) {
	tests := []struct{ in, want string }{
		{"SELECT 1", "SELECT 1"},
		{"a = ? AND b = ?", "a = $1 AND b = $2"},
		{"(? = '' OR s = ?)", "($1 = '' OR s = $2)"},
		{`x = '?' AND "we?rd" = ? AND y = 'it''s ?' AND z = ?`, `x = '?' AND "we?rd" = $1 AND y = 'it''s ?' AND z = $2`},
	}
	for _, tt := range tests {
		if got := rebindDollar(tt.in); got != tt.want {
			t.Errorf("rebindDollar(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// Nodes that start at once on a new database all come up, one of them
// migrates it, and they then share its records.
func TestConcurrentOpenPostgres(t *testing.T) {
	e := backend{"postgres", "disk"}.newEnv(t)
	const n = 4
	stores := make([]*Store, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { stores[i], errs[i] = Open(t.Context(), filepath.Join(e.dir, strconv.Itoa(i)), e.opts) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Open %d of %d at once = %v", i, n, err)
		}
		t.Cleanup(func() { stores[i].Close() })
	}
	var v int
	if err := stores[0].db.QueryRowContext(t.Context(), `SELECT version FROM schema_version`).Scan(&v); err != nil || v != len(migrations) {
		t.Errorf("schema version = %d, %v, want %d", v, err, len(migrations))
	}
	var rows int
	stores[0].db.QueryRowContext(t.Context(), `SELECT COUNT(*) FROM schema_version`).Scan(&rows)
	if rows != 1 {
		t.Errorf("schema_version has %d rows, want 1", rows)
	}
	if err := stores[1].PutSession(t.Context(), Session{ID: "sess_x", Owner: "k"}); err != nil {
		t.Fatal(err)
	}
	if _, err := stores[n-1].Session(t.Context(), "k", "sess_x"); err != nil {
		t.Errorf("a session put by one store, read by another = %v", err)
	}
}

// Open says what is wrong with a database or bucket it cannot use, without
// the secrets.
func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"database unreachable", Options{Database: "postgres://codeexec:topsecret@/codeexec?host=" + filepath.Join(dir, "nowhere")}, "codeexec"},
		{"database URL unparsable", Options{Database: "postgres://codeexec:topsecret@db.invalid:port/codeexec"}, "port"},
		{"blob store of another scheme", Options{BlobStore: "gs://files"}, "s3://bucket"},
		{"blob store with keys", Options{BlobStore: "s3://AKIA:topsecret@files"}, "AWS_ACCESS_KEY_ID"},
		{"blob store parameter unknown", Options{BlobStore: "s3://files?endpoint=http://127.0.0.1:1&regoin=x"}, `"regoin"`},
		{"blob store endpoint with a path", Options{BlobStore: "s3://files?endpoint=http://127.0.0.1:1/x"}, "endpoint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Open(t.Context(), dir, tt.opts)
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded, want an error")
			}
			if !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "topsecret") {
				t.Errorf("Open = %q, want it to name %q and not the password", err, tt.want)
			}
		})
	}

	t.Run("bucket missing", func(t *testing.T) {
		srv := s3(t)
		_, err := Open(t.Context(), dir, Options{BlobStore: "s3://no-such-bucket?endpoint=http://" + srv.addr + "&region=us-east-1"})
		if err == nil || !strings.Contains(err.Error(), "does not exist") {
			t.Errorf("Open of a missing bucket = %v, want it to say so", err)
		}
	})
	t.Run("credentials missing", func(t *testing.T) {
		srv := s3(t)
		t.Setenv("AWS_ACCESS_KEY_ID", "")
		_, err := Open(t.Context(), dir, Options{BlobStore: "s3://" + s3Bucket + "?endpoint=http://" + srv.addr})
		if err == nil || !strings.Contains(err.Error(), "AWS_ACCESS_KEY_ID") {
			t.Errorf("Open without credentials = %v, want it to name AWS_ACCESS_KEY_ID", err)
		}
	})
	t.Run("credentials wrong", func(t *testing.T) {
		srv := s3(t)
		t.Setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
		_, err := Open(t.Context(), dir, Options{BlobStore: "s3://" + s3Bucket + "?endpoint=http://" + srv.addr})
		if err == nil {
			t.Errorf("Open with a wrong secret key succeeded, want an error")
		}
	})
}

// A content larger than an upload's part goes up in parts and reads back
// whole, from any offset; one past its limit leaves nothing behind, not
// even parts.
func TestLargeContent(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		e := b.newEnv(t)
		s := e.open(t)
		ctx := t.Context()
		content := make([]byte, 2*s3PartSize+12345)
		rand.Read(content)
		f, err := s.PutFile(ctx, File{Owner: "k", Filename: "big"}, bytes.NewReader(content), Limits{MaxBytes: int64(len(content))})
		if err != nil {
			t.Fatalf("PutFile(%d bytes) = %v", len(content), err)
		}
		if f.Bytes != int64(len(content)) {
			t.Errorf("Bytes = %d, want %d", f.Bytes, len(content))
		}
		c, _, err := s.OpenFile(ctx, "k", f.ID)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if got, err := io.ReadAll(c); err != nil || !bytes.Equal(got, content) {
			t.Errorf("content read back: %d bytes, %v; want the %d put", len(got), err, len(content))
		}
		off := int64(s3PartSize + 7)
		if _, err := c.Seek(off, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		part := make([]byte, 1000)
		if _, err := io.ReadFull(c, part); err != nil || !bytes.Equal(part, content[off:off+1000]) {
			t.Errorf("1000 bytes at %d: %v, or not the content's", off, err)
		}
		if end, err := c.Seek(0, io.SeekEnd); err != nil || end != int64(len(content)) {
			t.Errorf("Seek to the end = %d, %v, want %d", end, err, len(content))
		}

		_, err = s.PutFile(ctx, File{Owner: "k", Filename: "bigger"}, bytes.NewReader(append(content, 'x')), Limits{MaxBytes: int64(len(content))})
		if !errors.Is(err, ErrTooLarge) {
			t.Errorf("PutFile one byte past the limit = %v, want ErrTooLarge", err)
		}
		if names := e.contents(t); len(names) != 1 || names[0] != f.ID {
			t.Errorf("contents = %q, want only %s", names, f.ID)
		}
		if b.blobs == "s3" {
			for u := range s3(t).client.ListIncompleteUploads(ctx, s3Bucket, e.prefix, true) {
				t.Errorf("an upload left incomplete: %+v", u)
			}
		}
	})
}

// weedArgs are the arguments of `weed server` with its master, volume,
// filer and S3 servers, data in data, identities in config, and the ports
// p(0) (S3) to p(7). Everything listens on 127.0.0.1 only, or on unix
// sockets under data; the telemetry it reports by default and every
// listener the tests do not need are off.
func weedArgs(data, config string, p func(int) string) []string {
	return []string{"server",
		"-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-dir=" + data,
		"-master.telemetry=false", "-master.telemetry.url=",
		"-master.port=" + p(1), "-master.port.grpc=" + p(2), "-master.volumeSizeLimitMB=64",
		"-volume.port=" + p(3), "-volume.port.grpc=" + p(4), "-volume.max=20", "-volume.preStopSeconds=0",
		"-filer", "-filer.port=" + p(5), "-filer.port.grpc=" + p(6), "-filer.localSocket=" + filepath.Join(data, "filer.sock"),
		"-s3", "-s3.port=" + p(0), "-s3.port.grpc=" + p(7), "-s3.config=" + config, "-s3.localSocket=" + filepath.Join(data, "s3.sock"),
		"-s3.port.iceberg=0", "-s3.port.lance=0", "-s3.iam=false", "-s3.autoCreateBucket=false",
	}
}

// What PostgreSQL runs of each migration.
func TestPostgresMigration(t *testing.T) {
	d := &postgresDialect{}
	got := d.migration(0)
	for _, want := range []string{
		"CREATE TABLE sessions (\n\t\trowid BIGINT GENERATED ALWAYS AS IDENTITY,",
		"CREATE TABLE files (\n\t\trowid BIGINT GENERATED ALWAYS AS IDENTITY,",
		"created_at BIGINT NOT NULL",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("migration 1 for PostgreSQL lacks %q:\n%s", want, got)
		}
	}
	for i := range migrations {
		got := d.migration(i)
		for _, sqliteOnly := range []string{"STRICT", "INTEGER", "BLOB"} {
			if strings.Contains(got, sqliteOnly) {
				t.Errorf("migration %d for PostgreSQL has %s:\n%s", i+1, sqliteOnly, got)
			}
		}
	}
}

// The time one PutFile and one read of its content take on each backend,
// for a small file (an execution's output) and a larger one.
func BenchmarkPutOpenFile(b *testing.B) {
	for _, bk := range backends {
		for _, size := range []int{1 << 10, 1 << 20} {
			b.Run(fmt.Sprintf("%s/%dKiB", bk, size>>10), func(b *testing.B) {
				s := bk.newEnv(b).open(b)
				content := make([]byte, size)
				rand.Read(content)
				ctx := b.Context()
				for b.Loop() {
					f, err := s.PutFile(ctx, File{Owner: "k", Filename: "out.bin"}, bytes.NewReader(content), Limits{MaxBytes: 1 << 30, OwnerBytes: 1 << 40})
					if err != nil {
						b.Fatal(err)
					}
					c, _, err := s.OpenFile(ctx, "k", f.ID)
					if err != nil {
						b.Fatal(err)
					}
					if n, err := io.Copy(io.Discard, c); err != nil || n != int64(size) {
						b.Fatalf("read %d bytes, %v", n, err)
					}
					c.Close()
				}
			})
		}
	}
}
