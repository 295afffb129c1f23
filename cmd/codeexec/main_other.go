//go:build !linux

package main

import (
	"fmt"
	"os"
	"runtime"
)

// main says that codeexec needs Linux: see the package comment in main.go.
func main() {
	fmt.Fprintf(os.Stderr, "codeexec needs Linux (its sandboxes are Linux namespaces, seccomp filters and cgroups); this is %s\n", runtime.GOOS)
	os.Exit(1)
}
