//go:build linux

// Command codeexec is a self-hostable code execution service for language
// models. See `codeexec help` for its subcommands.
//
// It runs only on Linux: its sandboxes are Linux namespaces, seccomp filters
// and cgroups, and the packages behind its subcommands (cli, server,
// executor) build only there. Built for another system, it prints that it
// needs Linux and exits 1 (main_other.go).
package main

import (
	"os"

	"codeexec/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args))
}
