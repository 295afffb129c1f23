//go:build !linux

package store

import "syscall"

// childAttr makes a server the tests start run with cred (nil: as the
// tests). Off Linux there is no parent-death signal: a server outlives a
// test binary that dies before TestMain stops it.
func childAttr(_ syscall.Signal, cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: cred}
}
