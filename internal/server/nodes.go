//go:build linux

package server

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"time"

	"codeexec/internal/ids"
	"codeexec/internal/store"
)

// Several servers (nodes) may share one store in PostgreSQL. Any node
// serves single-use executions and files; a session's sandbox runs in
// the process of the node that made it, which the session's record
// names. A request for a session that reaches another node is forwarded
// to its owner's --advertise-addr with httputil.ReverseProxy, streams
// included, signed with the shared --node-secret (nodeAuth); the owner
// checks the client's key again itself. Each node holds a lease in the
// store and renews it every third of --node-lease; when a node's lease
// lapses, any node ends its sessions (node_lost), which then answer 410
// while their stored files stay downloadable.

// node is this server's part in a set of nodes sharing the store.
type node struct {
	id     string
	addr   string // "" when it takes no forwarded requests
	secret []byte
	lease  time.Duration
	proxy  *httputil.ReverseProxy
	stop   chan struct{} // closed by Close
	done   chan struct{} // closed when keepLease returns
}

// nodeAuthHeader signs a forwarded request: "v1 <node id> <unix time>
// <hex HMAC-SHA256>" (see nodeMAC).
const nodeAuthHeader = "Codeexec-Node-Auth"

// nodeAuthSkew is how far a signature's time may be from the receiver's.
const nodeAuthSkew = time.Minute

// forwardKey's value in a request's context is the *store.Node it is
// being forwarded to; forwardedKey's marks a request forwarded here, which
// never goes on to another node.
type (
	forwardKey   struct{}
	forwardedKey struct{}
)

// StartNode takes the server's place among the nodes sharing its store,
// before it serves requests. With a store of its own (SQLite and no
// --advertise-addr) no session outlives the previous process: it ends
// those left live, as "restart". In a shared store it registers with a
// lease it keeps renewing until Close, and ends the sessions of nodes
// whose leases have lapsed (an earlier life of this one among them).
func (s *Server) StartNode(ctx context.Context) error {
	now := time.Now()
	if !s.store.Shared() && s.cfg.AdvertiseAddr == "" {
		n, err := s.store.EndLiveSessions(ctx, "restart", now)
		if n > 0 {
			s.log.Info("sessions ended by the restart", "count", n)
		}
		return err
	}
	nd := &node{id: ids.New("node_"), addr: s.cfg.AdvertiseAddr, secret: []byte(s.cfg.NodeSecret), lease: s.cfg.NodeLease,
		stop: make(chan struct{}), done: make(chan struct{})}
	if err := s.store.PutNode(ctx, store.Node{ID: nd.id, Addr: nd.addr, StartedAt: now, LeaseUntil: now.Add(nd.lease)}); err != nil {
		return err
	}
	nd.proxy = &httputil.ReverseProxy{
		Rewrite:        s.rewriteForward,
		FlushInterval:  -1, // event streams pass through as they are written
		ErrorHandler:   s.forwardFailed,
		ModifyResponse: func(resp *http.Response) error { resp.Header.Del("X-Request-Id"); return nil },
		Transport: &http.Transport{
			// Never a proxy from the environment: peers are reached directly.
			DialContext:         (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     90 * time.Second,
		},
	}
	s.node = nd
	s.endOrphans(ctx)
	s.log.Info("node registered", "node", nd.id, "advertise_addr", nd.addr, "lease", nd.lease.String())
	go s.keepLease(nd)
	return nil
}

// nodeID is the id sessions made here are recorded with.
func (s *Server) nodeID() string {
	if s.node == nil {
		return ""
	}
	return s.node.id
}

// endedExpiry is when the record and files of a session that ends at now
// expire.
func (s *Server) endedExpiry(now time.Time) time.Time {
	if s.cfg.FileTTL > 0 {
		return now.Add(s.cfg.FileTTL)
	}
	return time.Time{}
}

// endOrphans ends the sessions of nodes without a lease.
func (s *Server) endOrphans(ctx context.Context) {
	now := time.Now()
	if n, err := s.store.EndOrphanSessions(ctx, now, s.endedExpiry(now)); err != nil {
		s.log.Warn("end the sessions of lost nodes", "err", err)
	} else if n > 0 {
		s.log.Info("sessions of lost nodes ended", "count", n)
	}
}

// keepLease renews nd's lease until Close. If the lease lapsed (the
// process stalled, or the database was out of reach for a whole lease),
// the other nodes may have ended its sessions already: it ends them
// here too, then registers again.
func (s *Server) keepLease(nd *node) {
	defer close(nd.done)
	t := time.NewTicker(nd.lease / 3)
	defer t.Stop()
	for {
		select {
		case <-nd.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), nd.lease/3)
		now := time.Now()
		ok, err := s.store.RenewNode(ctx, nd.id, now, now.Add(nd.lease))
		switch {
		case err != nil:
			s.log.Warn("renew the node's lease", "node", nd.id, "err", err)
		case !ok:
			s.log.Error("the node's lease lapsed: its sessions are over", "node", nd.id)
			s.endAllSessions("node_lost")
			if err := s.store.PutNode(ctx, store.Node{ID: nd.id, Addr: nd.addr, StartedAt: now, LeaseUntil: now.Add(nd.lease)}); err != nil {
				s.log.Warn("register the node again", "node", nd.id, "err", err)
			}
		}
		if err == nil {
			s.endOrphans(ctx)
		}
		cancel()
	}
}

// leaveNodes stops renewing the lease and removes the node's record, once
// its sessions have ended.
func (s *Server) leaveNodes() {
	if s.node == nil {
		return
	}
	close(s.node.stop)
	<-s.node.done
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.store.RemoveNode(ctx, s.node.id); err != nil {
		s.log.Warn("remove the node's record", "node", s.node.id, "err", err)
	}
}

// elsewhere says whether owner's session (or container) id lives on
// another node: it returns an apiError to forward the request there
// (apiError.forward), or the 503 of a node that cannot be reached, or
// nil when the request is this node's to answer: the session is here,
// ended, unknown, or the request was forwarded here already. A session
// whose node has lost its lease is ended here and now, so the handler
// answers 410.
func (s *Server) elsewhere(ctx context.Context, owner, id string) *apiError {
	if s.node == nil || ctx.Value(forwardedKey{}) != nil {
		return nil
	}
	s.mu.Lock()
	ls := s.sessions[id]
	s.mu.Unlock()
	if ls != nil {
		return nil
	}
	rec, n, err := s.store.SessionNode(ctx, owner, id)
	if err != nil || !rec.EndedAt.IsZero() || rec.Node == s.node.id {
		return nil
	}
	if n.ID == "" || !n.LeaseUntil.After(time.Now()) {
		s.endOrphans(ctx)
		return nil
	}
	if n.Addr == "" {
		return &apiError{Status: http.StatusServiceUnavailable, Type: "server_error", Code: "node_unavailable",
			Message: "the session runs on node " + n.ID + ", which takes no forwarded requests (it has no --advertise-addr)"}
	}
	return &apiError{forward: &n}
}

// placed wraps a handler of a route whose {id} is a session or a
// container: a request for one that lives on another node goes there
// before its body is read.
func (s *Server) placed(h func(http.ResponseWriter, *http.Request, string) *apiError) func(http.ResponseWriter, *http.Request, string) *apiError {
	return func(w http.ResponseWriter, r *http.Request, owner string) *apiError {
		if e := s.elsewhere(r.Context(), owner, r.PathValue("id")); e != nil {
			return e
		}
		return h(w, r, owner)
	}
}

// bodyKey's value in a request's context keeps the body readBody read,
// for a request forwarded after its body was read (a chat request that
// names a session on another node).
type bodyKey struct{}

type readBodySlot struct{ data []byte }

// forward sends r to node n and copies its answer to w. body is r's body
// when readBody has read it already; otherwise r.Body is still unread.
func (s *Server) forward(w http.ResponseWriter, r *http.Request, n *store.Node, body []byte) {
	if body != nil {
		r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
	}
	s.metrics.forwarded.Inc()
	s.node.proxy.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), forwardKey{}, n)))
}

func (s *Server) rewriteForward(pr *httputil.ProxyRequest) {
	n := pr.In.Context().Value(forwardKey{}).(*store.Node)
	pr.SetURL(&url.URL{Scheme: "http", Host: n.Addr})
	pr.Out.Host = pr.In.Host
	if id, ok := pr.In.Context().Value(requestIDKey).(string); ok {
		pr.Out.Header.Set("X-Request-Id", id)
	}
	pr.Out.Header.Set(nodeAuthHeader, signNode(s.node.secret, s.node.id, pr.Out.Method, pr.In.URL.RequestURI(), time.Now()))
}

// forwardFailed answers a request its session's node did not take: that
// node is down or unreachable, and until its lease lapses its sessions
// cannot be said to have ended.
func (s *Server) forwardFailed(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		return // the client left
	}
	n := r.Context().Value(forwardKey{}).(*store.Node)
	s.log.Warn("forward to the session's node", "request_id", r.Context().Value(requestIDKey), "node", n.ID, "addr", n.Addr, "err", err)
	writeError(w, &apiError{Status: http.StatusServiceUnavailable, Type: "server_error", Code: "node_unavailable",
		Message: fmt.Sprintf("the node running this session does not answer; retry: if it is gone, its sessions end within %v", s.node.lease)})
}

// signNode is the nodeAuthHeader value of a request from node from.
func signNode(secret []byte, from, method, requestURI string, at time.Time) string {
	unix := strconv.FormatInt(at.Unix(), 10)
	return "v1 " + from + " " + unix + " " + hex.EncodeToString(nodeMAC(secret, from, unix, method, requestURI))
}

func nodeMAC(secret []byte, from, unix, method, requestURI string) []byte {
	m := hmac.New(sha256.New, secret)
	io.WriteString(m, "v1\n"+from+"\n"+unix+"\n"+method+"\n"+requestURI)
	return m.Sum(nil)
}

// verifyNode checks a nodeAuthHeader value of a request to method and
// requestURI at now against secret.
func verifyNode(secret []byte, header, method, requestURI string, now time.Time) bool {
	f := strings.Fields(header)
	if len(secret) == 0 || len(f) != 4 || f[0] != "v1" {
		return false
	}
	unix, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil {
		return false
	}
	if d := now.Sub(time.Unix(unix, 0)); d > nodeAuthSkew || d < -nodeAuthSkew {
		return false
	}
	mac, err := hex.DecodeString(f[3])
	return err == nil && hmac.Equal(mac, nodeMAC(secret, f[1], f[2], method, requestURI))
}
