//go:build linux

// Package cli implements codeexec's subcommands, one file each. main only
// calls Main. Like the server and the executor it drives, it builds only on
// Linux.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"
)

// command is one subcommand. run gets the arguments after the subcommand's
// name and returns the process exit code.
type command struct {
	summary string
	hidden  bool
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) int
}

// commands is filled by the init functions of this package's files.
var commands = map[string]command{}

func register(name string, c command) { commands[name] = c }

// Main runs the subcommand named by args[1] and returns the exit code.
func Main(args []string) int {
	if len(args) < 2 {
		usage(os.Stderr)
		return 2
	}
	name := args[1]
	if name == "help" || name == "-h" || name == "--help" {
		usage(os.Stdout)
		return 0
	}
	c, ok := commands[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "codeexec: unknown command %q\n\n", name)
		usage(os.Stderr)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return c.run(ctx, args[2:], os.Stdout, os.Stderr)
}

// parse parses a subcommand's flags. When ok is false the command exits
// with code: 0 after -h (the usage was printed), 2 for a bad flag.
func parse(fs *flag.FlagSet, args []string) (code int, ok bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, false
		}
		return 2, false
	}
	return 0, true
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "codeexec: a self-hostable code execution service for language models")
	fmt.Fprintln(w, "\nUsage: codeexec <command> [flags]\n\nCommands:")
	var names []string
	for n, c := range commands {
		if !c.hidden {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-8s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'codeexec <command> -h' for a command's flags.")
}
