package executor

import (
	"fmt"
	"net"
	"os"
	"runtime"

	"golang.org/x/sys/unix"

	"codeexec/internal/egress"
)

// proxyPort is where sandboxed code finds the egress proxy, inside its own
// network namespace.
const proxyPort = 3128

// startEgress serves an egress proxy for one execution on a listener that
// the host creates inside the child's network namespace, after bringing its
// loopback up. The only way out of the namespace is that socket: the
// namespace has no other interface, and the proxy's own connections start
// in the host's namespace, from Go.
func (c *child) startEgress(p egress.Policy, opts egress.Options) (*egress.Proxy, map[string]string, error) {
	ln, err := listenInNetns(c.pidfd)
	if err != nil {
		return nil, nil, fmt.Errorf("egress for sandbox %d: %w", c.pid, err)
	}
	proxy := egress.New(p, opts)
	go proxy.Serve(ln)
	url := fmt.Sprintf("http://127.0.0.1:%d", proxyPort)
	env := map[string]string{"HTTP_PROXY": url, "HTTPS_PROXY": url, "http_proxy": url, "https_proxy": url,
		"NO_PROXY": "", "no_proxy": ""}
	return proxy, env, nil
}

// listenInNetns switches one locked thread into the network namespace of
// the process pidfd refers to (setns(2) with a pidfd, Linux 5.8), brings lo
// up there, opens a TCP listener on 127.0.0.1:proxyPort, and switches
// back. A pidfd, unlike /proc/<pid>, cannot come to name another process
// that reused the pid: if the sandbox is gone, setns fails with ESRCH. A
// socket stays in the namespace it was created in, so the listener serves
// the sandbox from any thread.
func listenInNetns(pidfd int) (net.Listener, error) {
	runtime.LockOSThread()
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	defer self.Close()
	if err := unix.Setns(pidfd, unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("enter network namespace: %w", err)
	}
	ln, lerr := loUpAndListen()
	if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
		// The thread is in the wrong namespace: leave it locked so that it
		// dies with this goroutine instead of serving others (no sandbox
		// dies with it: sandbox.Start forks from a thread of its own).
		if ln != nil {
			ln.Close()
		}
		return nil, fmt.Errorf("return to the host network namespace: %w", err)
	}
	runtime.UnlockOSThread()
	return ln, lerr
}

func loUpAndListen() (net.Listener, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return nil, err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return nil, fmt.Errorf("get flags of lo: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return nil, fmt.Errorf("bring lo up: %w", err)
	}
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", proxyPort))
	if err != nil {
		return nil, fmt.Errorf("listen for the egress proxy: %w", err)
	}
	return ln, nil
}
