package store

import "syscall"

// childAttr makes a server the tests start run with cred (nil: as the
// tests) and get sig when the test binary dies, should TestMain not get to
// stop it.
func childAttr(sig syscall.Signal, cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: sig, Credential: cred}
}
