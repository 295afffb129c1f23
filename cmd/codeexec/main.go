// Command codeexec is a self-hostable code execution service for language
// models. See `codeexec help` for its subcommands.
package main

import (
	"os"

	"codeexec/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args))
}
