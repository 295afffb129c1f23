package egress

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/textproto"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Resolver resolves host names; *net.Resolver implements it.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Options connect a Proxy to the world. The zero Options is for production.
type Options struct {
	// Resolver resolves allowed names (default net.DefaultResolver). It is
	// asked once per request, for the name with a trailing dot so that no
	// search domain applies.
	Resolver Resolver
	// Dial opens upstream connections (default a net.Dialer). It is called
	// only with network "tcp" and an "IP:port" address that passed every
	// check, never with a name.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// DenyAddrs judges each resolved address (default DefaultDeny). Tests
	// may use it to let their loopback servers through; production should
	// keep the default.
	DenyAddrs func(netip.Addr) (reason string, denied bool)
	// Timeout bounds resolving, dialling, reading a client's request
	// headers and waiting for an upstream's response headers; it is also
	// the idle timeout of client and upstream connections (no byte either
	// way for that long ends a tunnel). Default 30s. A client that stalls
	// in other ways is bounded by the execution: Close ends everything.
	Timeout time.Duration
	// Logger receives one debug record per attempt and the HTTP server's
	// errors, also at debug level: the sandboxed program can cause them at
	// will. Default: discard.
	Logger *slog.Logger
}

// Access is one attempt through the proxy, for the execution's result.
type Access struct {
	// Host is the requested host: canonical when it is a valid name, else
	// as sent (quoted if it holds anything but printable ASCII).
	Host string `json:"host"`
	Port int    `json:"port"`
	// BytesSent and BytesReceived count the bytes written to and read from
	// the upstream connection.
	BytesSent     int64 `json:"bytes_sent"`
	BytesReceived int64 `json:"bytes_received"`
	// Allowed reports whether the upstream connection was made.
	Allowed bool `json:"allowed"`
	// Reason says why the attempt was denied or failed, or why an allowed
	// connection was cut.
	Reason string `json:"reason,omitempty"`
}

// maxLogEntries bounds the Log of one execution; later attempts are still
// enforced but not recorded, so a looping program cannot grow host memory.
const maxLogEntries = 1000

// Proxy is the egress proxy of one execution. Its limits and log are per
// Proxy, so create one per execution. It speaks HTTP/1.1 to clients; it
// never intercepts TLS.
type Proxy struct {
	policy  Policy
	allow   []string                     // canonical patterns
	headers map[string]map[string]string // canonical pattern → canonical header key → value
	opts    Options
	srv     *http.Server
	ctx     context.Context // request contexts derive from it; Close cancels it
	cancel  context.CancelFunc
	used    atomic.Int64 // bytes moved, at most policy.maxBytes()

	mu       sync.Mutex
	closed   bool
	conns    int                   // upstream connections opened
	open     map[net.Conn]struct{} // upstream and hijacked client connections
	log      []*entry
	handlers sync.WaitGroup
}

// entry is the live form of an Access; the fields that change are atomic
// or guarded by Proxy.mu.
type entry struct {
	host           string // for display: canonical, else as sent
	port           int
	canon          string // canonical host, or "" with canonErr
	canonErr       error
	sent, received atomic.Int64
	allowed        bool   // guarded by Proxy.mu
	reason         string // guarded by Proxy.mu
}

// New returns a Proxy enforcing p. Patterns that fail ValidPattern never
// match; check p with Policy.Validate when it is configured.
func New(p Policy, opts Options) *Proxy {
	if opts.Resolver == nil {
		opts.Resolver = net.DefaultResolver
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 30 * time.Second
	}
	if opts.Dial == nil {
		opts.Dial = (&net.Dialer{Timeout: opts.Timeout}).DialContext
	}
	if opts.DenyAddrs == nil {
		opts.DenyAddrs = DefaultDeny
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	px := &Proxy{policy: p, opts: opts, open: map[net.Conn]struct{}{}, headers: map[string]map[string]string{}}
	for _, s := range p.Allow {
		if c, err := canonicalPattern(s); err == nil {
			px.allow = append(px.allow, c)
		}
	}
	for s, hdrs := range p.Headers {
		if c, err := canonicalPattern(s); err == nil {
			m := map[string]string{}
			for k, v := range hdrs {
				m[textproto.CanonicalMIMEHeaderKey(k)] = v
			}
			px.headers[c] = m
		}
	}
	px.ctx, px.cancel = context.WithCancel(context.Background())
	px.srv = &http.Server{
		Handler: http.HandlerFunc(px.serveHTTP),
		// "OPTIONS *" is for an origin server, not a proxy.
		DisableGeneralOptionsHandler: true,
		ReadHeaderTimeout:            opts.Timeout,
		IdleTimeout:                  opts.Timeout,
		BaseContext:                  func(net.Listener) context.Context { return px.ctx },
		ErrorLog:                     slog.NewLogLogger(opts.Logger.Handler(), slog.LevelDebug),
	}
	return px
}

// Serve accepts client connections on ln until ln or the Proxy is closed,
// then returns nil; it returns other accept errors. It may be called for
// several listeners at once. Closing ln stops new connections only: call
// Close to end those in flight.
func (p *Proxy) Serve(ln net.Listener) error {
	err := p.srv.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// Close closes the listeners and every connection the Proxy accepted or
// opened, and returns once every request handler has returned, so that
// Log is final.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	open := p.open
	p.open = nil
	p.mu.Unlock()

	p.cancel()
	err := p.srv.Close()
	for c := range open {
		c.Close()
	}
	p.handlers.Wait()
	if errors.Is(err, net.ErrClosed) {
		return nil // the caller closed a listener first
	}
	return err
}

// Log returns what happened so far, one Access per attempt in order (at
// most the first 1000).
func (p *Proxy) Log() []Access {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]Access, len(p.log))
	for i, e := range p.log {
		out[i] = Access{
			Host: e.host, Port: e.port,
			BytesSent: e.sent.Load(), BytesReceived: e.received.Load(),
			Allowed: e.allowed, Reason: e.reason,
		}
	}
	return out
}

func (p *Proxy) serveHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		http.Error(w, "codeexec egress: proxy closed", http.StatusServiceUnavailable)
		return
	}
	p.handlers.Add(1)
	p.mu.Unlock()
	defer p.handlers.Done()

	connect := r.Method == http.MethodConnect
	e, msg := p.newEntry(r)
	if !slices.Contains(methods, r.Method) {
		p.fail(w, r, e, http.StatusMethodNotAllowed, fmt.Sprintf("method %s is not allowed", display(r.Method)))
		return
	}
	if msg != "" {
		p.fail(w, r, e, http.StatusBadRequest, "bad request: "+msg)
		return
	}
	ports := p.policy.httpPorts()
	if connect {
		ports = p.policy.tlsPorts()
	}
	up, code, reason := p.dial(r.Context(), e, ports)
	if code != 0 {
		p.fail(w, r, e, code, reason)
		return
	}
	defer up.Close()
	if connect {
		p.tunnel(w, up)
	} else {
		p.forward(w, r, e, up)
	}
}

// methods are the request methods the proxy passes on: RFC 9110's less
// TRACE, plus PATCH (RFC 5789). A TRACE response echoes the request as
// the server received it, so it would hand the headers that forward injects
// back to the sandbox; TRACK and the methods of extensions (WebDAV's
// PROPFIND and the like) or of nothing at all are refused too, since what a
// server does with them is anyone's guess. Methods are case-sensitive
// (RFC 9110, section 9.1): "trace" or "get" is an unknown method, and is
// refused. OPTIONS stays: its response describes the server, not the
// request, and a server that echoes request headers can do so for GET as
// well. Max-Forwards and Via are passed on untouched: the proxy never
// answers in an upstream's place, so neither can make it reflect a request,
// and it cannot be its own upstream, since loopback and the host's
// addresses are denied.
var methods = []string{
	http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
	http.MethodPatch, http.MethodDelete, http.MethodOptions, http.MethodConnect,
}

// newEntry records the attempt r makes. It returns a message for the
// client if r is not a request a proxy serves.
func (p *Proxy) newEntry(r *http.Request) (*entry, string) {
	e := &entry{}
	defer func() {
		p.mu.Lock()
		if len(p.log) < maxLogEntries {
			p.log = append(p.log, e)
		}
		p.mu.Unlock()
	}()
	var defaultPort string
	switch {
	case r.Method == http.MethodConnect && r.URL.Host != "" && r.URL.Path == "":
	case r.Method != http.MethodConnect && r.URL.Scheme == "http" && r.URL.Host != "":
		defaultPort = "80"
	default:
		e.host = display(r.RequestURI)
		return e, "the proxy takes only CONNECT host:port and absolute http:// URLs"
	}
	host, port := splitHostPort(r.URL.Host)
	e.canon, e.canonErr = canonicalHost(host)
	e.host = e.canon
	if e.canonErr != nil {
		e.host = display(host)
	}
	if port == "" {
		port = defaultPort
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != port {
		return e, "invalid port"
	}
	e.port = n
	return e, ""
}

// splitHostPort splits "host:port", "[v6]:port", "host" or "[v6]",
// keeping the brackets so that canonicalHost sees an IP literal.
func splitHostPort(hostport string) (host, port string) {
	i := strings.LastIndexByte(hostport, ':')
	if i < 0 || strings.LastIndexByte(hostport, ']') > i {
		return hostport, ""
	}
	return hostport[:i], hostport[i+1:]
}

// display returns s for messages and the log: as is when it is printable
// ASCII, else quoted, so that no byte from the client can break a header
// or a status line.
func display(s string) string {
	if len(s) > 255 {
		s = s[:255]
	}
	for _, c := range []byte(s) {
		if c <= ' ' || c >= 0x7f {
			return strconv.QuoteToASCII(s)
		}
	}
	return s
}

// dial runs every check of the package doc in order and, when all pass,
// dials one checked address. Otherwise it returns the HTTP status and the
// reason for the client; nothing has been dialled then.
func (p *Proxy) dial(ctx context.Context, e *entry, ports []int) (_ *meteredConn, code int, reason string) {
	host := e.canon
	switch {
	case e.canonErr != nil:
		return nil, http.StatusForbidden, e.canonErr.Error()
	case !slices.ContainsFunc(p.allow, func(pat string) bool { return match(host, pat) }):
		return nil, http.StatusForbidden, "not in the allowlist"
	case !slices.Contains(ports, e.port):
		return nil, http.StatusForbidden, fmt.Sprintf("port %d is not allowed", e.port)
	case p.used.Load() >= p.policy.maxBytes():
		return nil, http.StatusForbidden, p.byteLimit()
	}

	rctx, cancel := context.WithTimeout(ctx, p.opts.Timeout)
	addrs, err := p.opts.Resolver.LookupNetIP(rctx, "ip", host+".")
	cancel()
	if err != nil || len(addrs) == 0 {
		p.opts.Logger.Debug("egress resolve", "host", host, "err", err)
		return nil, http.StatusBadGateway, "cannot resolve host"
	}
	for _, a := range addrs {
		if why, denied := p.opts.DenyAddrs(a); denied {
			return nil, http.StatusForbidden, fmt.Sprintf("resolves to %s (%s)", why, a)
		}
	}

	p.mu.Lock()
	full := p.conns >= p.policy.maxConns()
	if !full {
		p.conns++
	}
	p.mu.Unlock()
	if full {
		return nil, http.StatusForbidden, fmt.Sprintf("connection limit of %d reached", p.policy.maxConns())
	}

	addr := netip.AddrPortFrom(addrs[0].Unmap(), uint16(e.port)).String()
	dctx, cancel := context.WithTimeout(ctx, p.opts.Timeout)
	c, err := p.opts.Dial(dctx, "tcp", addr)
	cancel()
	if err != nil {
		p.opts.Logger.Debug("egress dial", "host", host, "addr", addr, "err", err)
		return nil, http.StatusBadGateway, "cannot connect"
	}
	if !p.track(c) {
		c.Close()
		return nil, http.StatusServiceUnavailable, "proxy closed"
	}
	p.mu.Lock()
	e.allowed = true
	p.mu.Unlock()
	p.opts.Logger.Debug("egress allowed", "host", host, "port", e.port, "addr", addr)
	mc := &meteredConn{Conn: c, p: p, e: e}
	mc.touch()
	return mc, 0, ""
}

func (p *Proxy) byteLimit() string {
	return fmt.Sprintf("byte limit of %d reached", p.policy.maxBytes())
}

// fail answers a request that was not served, with a one-line reason in the
// body and, for CONNECT, also in the status line, which is all that most
// clients (Python's http.client, Go's Transport) show of a failed tunnel.
func (p *Proxy) fail(w http.ResponseWriter, r *http.Request, e *entry, code int, reason string) {
	// Reasons are ours, but a custom DenyAddrs may say anything: keep the
	// status line and headers one line each.
	reason = strings.Map(func(c rune) rune {
		if c < ' ' || c == 0x7f {
			return ' '
		}
		return c
	}, reason)
	p.mu.Lock()
	if e.reason == "" {
		e.reason = reason
	}
	p.mu.Unlock()
	p.opts.Logger.Debug("egress refused", "host", e.host, "port", e.port, "code", code, "reason", reason)

	denied := code == http.StatusForbidden || code == http.StatusMethodNotAllowed
	msg := "codeexec egress: " + reason
	if code != http.StatusBadRequest {
		word := "error"
		if denied {
			word = "denied"
		}
		msg = fmt.Sprintf("codeexec egress %s: %s:%d: %s", word, e.host, e.port, reason)
	}
	h := http.Header{}
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	if denied {
		h.Set("X-Codeexec-Egress-Denied", reason)
	}
	if code == http.StatusMethodNotAllowed {
		h.Set("Allow", strings.Join(methods, ", ")) // RFC 9110, section 15.5.6
	}
	if r.Method == http.MethodConnect {
		if c, brw, err := http.NewResponseController(w).Hijack(); err == nil {
			defer c.Close()
			c.SetWriteDeadline(time.Now().Add(p.opts.Timeout))
			h.Set("Connection", "close")
			h.Set("Content-Length", strconv.Itoa(len(msg)+1))
			fmt.Fprintf(brw, "HTTP/1.1 %d %s\r\n", code, msg)
			h.Write(brw)
			fmt.Fprintf(brw, "\r\n%s\n", msg)
			brw.Flush()
			return
		}
	}
	for k, v := range h {
		w.Header()[k] = v
	}
	w.WriteHeader(code)
	io.WriteString(w, msg+"\n")
}

// track registers c to be closed by Close; it reports false if the Proxy
// is already closed.
func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.open[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.open, c)
	p.mu.Unlock()
}

// charge takes up to n bytes from the execution's budget and returns how
// many it got; on a shortfall it records the cut in e.
func (p *Proxy) charge(e *entry, n int) int {
	for {
		used := p.used.Load()
		got := min(int64(n), p.policy.maxBytes()-used)
		if !p.used.CompareAndSwap(used, used+got) {
			continue
		}
		if got < int64(n) {
			p.mu.Lock()
			e.reason = p.byteLimit()
			p.mu.Unlock()
		}
		return int(got)
	}
}

// hopHeaders are meaningful only on one hop (RFC 9110, section 7.6.1),
// plus Proxy-Authorization, which is meant for this proxy.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

func removeHopHeaders(h http.Header) {
	for _, v := range h.Values("Connection") {
		for name := range strings.SplitSeq(v, ",") {
			h.Del(strings.TrimSpace(name))
		}
	}
	for _, k := range hopHeaders {
		h.Del(k)
	}
}

// forward sends the plain-HTTP request r over up, which is used for this
// request only, and copies the response back. Redirects are returned to the
// client, not followed: the client's next request is checked afresh.
func (p *Proxy) forward(w http.ResponseWriter, r *http.Request, e *entry, up *meteredConn) {
	var dialled atomic.Bool
	tr := &http.Transport{
		DialContext: func(context.Context, string, string) (net.Conn, error) {
			if dialled.Swap(true) {
				return nil, errors.New("upstream connection already used")
			}
			return up, nil
		},
		DisableKeepAlives:      true,
		DisableCompression:     true, // pass Accept-Encoding and bodies through untouched
		ResponseHeaderTimeout:  p.opts.Timeout,
		MaxResponseHeaderBytes: 1 << 20,
	}
	defer tr.CloseIdleConnections()

	out := r.Clone(r.Context())
	out.RequestURI = ""
	out.Host = "" // the Host header follows the checked URL, not the client's Host
	out.URL.Host = e.host
	if e.port != 80 {
		out.URL.Host = net.JoinHostPort(e.host, strconv.Itoa(e.port))
	}
	if r.ContentLength == 0 {
		out.Body = nil
	}
	out.Close = false
	removeHopHeaders(out.Header)
	if _, ok := out.Header["User-Agent"]; !ok {
		out.Header.Set("User-Agent", "") // keep Go's default out
	}
	for k, v := range p.headersFor(e.host) {
		out.Header[k] = []string{v}
	}

	resp, err := tr.RoundTrip(out)
	if err != nil {
		code, reason := http.StatusBadGateway, "upstream request failed"
		if p.used.Load() >= p.policy.maxBytes() {
			code, reason = http.StatusForbidden, p.byteLimit()
		}
		p.opts.Logger.Debug("egress forward", "host", e.host, "err", err)
		p.fail(w, r, e, code, reason)
		return
	}
	defer resp.Body.Close()
	if left := p.policy.maxBytes() - p.used.Load(); resp.ContentLength > left {
		p.fail(w, r, e, http.StatusForbidden, fmt.Sprintf("response of %d bytes exceeds the byte limit of %d", resp.ContentLength, p.policy.maxBytes()))
		return
	}
	removeHopHeaders(resp.Header)
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)

	rc := http.NewResponseController(w)
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			rc.SetWriteDeadline(time.Now().Add(p.opts.Timeout))
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			rc.Flush() // stream: server-sent events, long polls
		}
		if err == io.EOF {
			return
		}
		if err != nil {
			// Cut the client connection so that it sees a truncated
			// response, not a complete one.
			panic(http.ErrAbortHandler)
		}
	}
}

// headersFor returns the configured headers of the most specific pattern
// matching the canonical host.
func (p *Proxy) headersFor(host string) map[string]string {
	if h, ok := p.headers[host]; ok {
		return h
	}
	best := ""
	for pat := range p.headers {
		if strings.HasPrefix(pat, "*.") && match(host, pat) && len(pat) > len(best) {
			best = pat
		}
	}
	return p.headers[best]
}

// tunnel answers a CONNECT with 200 and copies bytes both ways between the
// client and up until both directions end, either is idle for Timeout, or
// the byte budget is spent.
func (p *Proxy) tunnel(w http.ResponseWriter, up *meteredConn) {
	client, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, "codeexec egress: cannot hijack connection", http.StatusInternalServerError)
		return
	}
	if !p.track(client) {
		client.Close()
		return
	}
	defer func() {
		p.untrack(client)
		client.Close()
	}()
	client.SetDeadline(time.Time{}) // the server's header deadline must not cut the tunnel
	client.SetWriteDeadline(time.Now().Add(p.opts.Timeout))
	if _, err := io.WriteString(client, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	// Bytes the client sent after the CONNECT line, such as a TLS hello.
	if n := brw.Reader.Buffered(); n > 0 {
		b, _ := brw.Reader.Peek(n)
		if _, err := up.Write(b); err != nil {
			return
		}
	}

	half := func(dst, src net.Conn) {
		if p.pipe(dst, src, up) == nil {
			if cw, ok := dst.(interface{ CloseWrite() error }); ok {
				cw.CloseWrite()
				return
			}
		}
		dst.Close()
		src.Close()
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		half(up, client)
	}()
	half(client, up)
	<-done
}

// pipe copies src to dst until src ends (nil) or an error. A read that
// times out is retried while up, which sees both directions, has been
// active within Timeout.
func (p *Proxy) pipe(dst, src net.Conn, up *meteredConn) error {
	buf := make([]byte, 32<<10)
	for {
		src.SetReadDeadline(time.Now().Add(p.opts.Timeout))
		n, err := src.Read(buf)
		if n > 0 {
			dst.SetWriteDeadline(time.Now().Add(p.opts.Timeout))
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		switch {
		case err == io.EOF:
			return nil
		case errors.Is(err, os.ErrDeadlineExceeded) && up.active():
		case err != nil:
			return err
		}
	}
}

// meteredConn is an upstream connection: it charges every byte to the
// execution's budget and its Access, and closes itself when the budget runs
// out. Each Read or Write has an idle deadline of Timeout; a Read that
// times out is retried while a Write happened within Timeout, so a long
// upload is not mistaken for an idle connection.
type meteredConn struct {
	net.Conn
	p    *Proxy
	e    *entry
	last atomic.Int64 // UnixNano of the last byte either way
}

func (c *meteredConn) touch() { c.last.Store(time.Now().UnixNano()) }

func (c *meteredConn) active() bool {
	return time.Since(time.Unix(0, c.last.Load())) < c.p.opts.Timeout
}

func (c *meteredConn) Read(b []byte) (int, error) {
	for {
		c.Conn.SetReadDeadline(time.Now().Add(c.p.opts.Timeout))
		n, err := c.Conn.Read(b)
		if n == 0 && errors.Is(err, os.ErrDeadlineExceeded) && c.active() {
			continue
		}
		if n > 0 {
			c.touch()
		}
		got := c.p.charge(c.e, n)
		c.e.received.Add(int64(got))
		if got < n {
			c.Conn.Close()
			return got, errByteLimit
		}
		return n, err
	}
}

func (c *meteredConn) Write(b []byte) (int, error) {
	got := c.p.charge(c.e, len(b))
	// Count before writing: once the bytes are out, the response they
	// cause may reach the client, and the Log, before this goroutine runs
	// again.
	c.e.sent.Add(int64(got))
	c.Conn.SetWriteDeadline(time.Now().Add(c.p.opts.Timeout))
	n, err := c.Conn.Write(b[:got])
	c.e.sent.Add(int64(n - got))
	if n > 0 {
		c.touch()
	}
	if err == nil && got < len(b) {
		c.Conn.Close()
		err = errByteLimit
	}
	return n, err
}

// CloseWrite half-closes the connection when it can, so that a tunnel
// passes on the end of one direction.
func (c *meteredConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

func (c *meteredConn) Close() error {
	c.p.untrack(c.Conn)
	return c.Conn.Close()
}
