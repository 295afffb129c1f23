//go:build linux

package cli

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"codeexec/internal/executor"
)

func init() {
	register("run", command{summary: "run Python code once in a sandbox and print its output", run: runCmd})
}

// repeated collects a flag given more than once.
type repeated []string

func (r *repeated) String() string     { return strings.Join(*r, ",") }
func (r *repeated) Set(v string) error { *r = append(*r, v); return nil }

func runCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		code    = fs.String("c", "", "run this code instead of a file")
		asJSON  = fs.Bool("json", false, "print the result object (see docs/api.md) instead of the output")
		outDir  = fs.String("out", "", "save images and created files into this directory")
		files   repeated
		lim     = executor.DefaultLimits
		memMB   = fs.Int64("memory", lim.MemoryBytes>>20, "memory limit in MiB")
		timeout = fs.Duration("timeout", lim.Timeout, "wall-time limit")
		output  = fs.Int64("output-limit", lim.OutputBytes, "limit of stdout and of stderr, in bytes")
		fileLim = fs.Int64("file-limit", lim.FileBytes, "largest file the code may write, in bytes")
		procs   = fs.Int64("procs", lim.Procs, "most processes and threads")
		cpu     = fs.Int64("cpu", lim.CPUMillis, "CPU in thousandths of a core (1000 = one core)")
	)
	fs.Var(&files, "file", "upload a local file into /mnt/data (repeatable; LOCAL or LOCAL:PATH)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: codeexec run [flags] script.py | -c CODE | -")
		fmt.Fprintln(stderr, "\nRuns Python once in a fresh sandbox (numpy, pandas, matplotlib, scipy, sympy")
		fmt.Fprintln(stderr, "preloaded). Output streams as it is written; the exit code is 0 only when the")
		fmt.Fprintln(stderr, "status is ok. Needs root (see 'codeexec doctor').\n\nFlags:")
		fs.PrintDefaults()
	}
	if code, ok := parse(fs, reorder(args, fs)); !ok {
		return code
	}
	src, err := readSource(*code, fs.Args())
	if err != nil {
		fmt.Fprintf(stderr, "codeexec run: %v\n", err)
		return 2
	}
	req := executor.Request{Code: src, Limits: executor.Limits{
		Timeout: *timeout, MemoryBytes: *memMB << 20, OutputBytes: *output,
		FileBytes: *fileLim, Procs: *procs, CPUMillis: *cpu,
	}}
	for _, spec := range files {
		local, dest, _ := strings.Cut(spec, ":")
		if dest == "" {
			dest = filepath.Base(local)
		}
		data, err := os.ReadFile(local)
		if err != nil {
			fmt.Fprintf(stderr, "codeexec run: --file: %v\n", err)
			return 2
		}
		req.Files = append(req.Files, executor.DataFile(dest, data))
	}
	if err := checkLimits(fs, req.Limits); err != nil {
		fmt.Fprintf(stderr, "codeexec run: %v\n", err)
		return 2
	}
	var sink *dirSink
	if *outDir != "" {
		if err := os.MkdirAll(*outDir, 0o755); err != nil {
			fmt.Fprintf(stderr, "codeexec run: %v\n", err)
			return 2
		}
		sink = &dirSink{dir: *outDir}
		req.Sink = sink
	}
	if !*asJSON {
		req.OnEvent = func(ev executor.Event) {
			switch ev.Kind {
			case "stdout":
				stdout.Write(ev.Text)
			case "stderr":
				stderr.Write(ev.Text)
			}
		}
	}

	e, err := executor.New(ctx, executor.Config{PoolSize: 1})
	if err != nil {
		fmt.Fprintf(stderr, "codeexec run: %v\n", err)
		return 1
	}
	defer e.Close()
	res, err := e.Execute(ctx, req)
	if err != nil {
		var ie *executor.InputError
		if errors.As(err, &ie) {
			fmt.Fprintf(stderr, "codeexec run: %v\n", err)
			return 2
		}
		fmt.Fprintf(stderr, "codeexec run: %v\n", err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(res)
	} else {
		printSummary(stdout, stderr, res, sink)
	}
	if res.Status != executor.StatusOK {
		return 1
	}
	return 0
}

// reorder moves flags after the script name in front of it, so that
// `codeexec run script.py --json` works like `codeexec run --json script.py`.
func reorder(args []string, fs *flag.FlagSet) []string {
	var flags, rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			rest = append(rest, args[i+1:]...)
			break
		}
		if strings.HasPrefix(a, "-") && a != "-" {
			flags = append(flags, a)
			name := strings.TrimLeft(a, "-")
			if !strings.Contains(name, "=") {
				if f := fs.Lookup(name); f != nil {
					if bf, ok := f.Value.(interface{ IsBoolFlag() bool }); !(ok && bf.IsBoolFlag()) && i+1 < len(args) {
						i++
						flags = append(flags, args[i])
					}
				}
			}
			continue
		}
		rest = append(rest, a)
	}
	return append(flags, rest...)
}

// stdin is where `codeexec run -` reads the program; tests replace it.
var stdin io.Reader = os.Stdin

func readSource(code string, args []string) (string, error) {
	switch {
	case code != "" && len(args) > 0:
		return "", errors.New("give either -c CODE or a script, not both")
	case code != "":
		return code, nil
	case len(args) != 1:
		return "", errors.New("give one script, - for standard input, or -c CODE (see -h)")
	case args[0] == "-":
		b, err := io.ReadAll(stdin)
		return string(b), err
	default:
		b, err := os.ReadFile(args[0])
		return string(b), err
	}
}

// checkLimits rejects flags given as zero or negative: zero means "default"
// to the executor, which is not what someone typing --timeout 0 meant.
func checkLimits(fs *flag.FlagSet, l executor.Limits) error {
	var err error
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "memory", "timeout", "output-limit", "file-limit", "procs", "cpu":
			if strings.HasPrefix(f.Value.String(), "-") || f.Value.String() == "0" || f.Value.String() == "0s" {
				err = fmt.Errorf("--%s must be positive, got %s", f.Name, f.Value)
			}
		}
	})
	return err
}

// dirSink saves an execution's files into a local directory.
type dirSink struct {
	dir   string
	saved []string
}

func (d *dirSink) Put(ctx context.Context, path string, size int64, r io.Reader) (string, error) {
	dest := filepath.Join(d.dir, filepath.FromSlash(path))
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return "", err
	}
	f, err := os.Create(dest)
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return "", err
	}
	d.saved = append(d.saved, dest)
	return "", f.Close()
}

// printSummary prints what was not streamed: the value of the last
// expression on stdout, then the error, images and files on stderr.
func printSummary(stdout, w io.Writer, res *executor.Result, sink *dirSink) {
	if res.Result != nil {
		if s, ok := res.Result["text/plain"].(string); ok {
			fmt.Fprintln(stdout, s)
		}
	}
	if res.Error != nil {
		if res.Error.Traceback != "" {
			fmt.Fprint(w, res.Error.Traceback)
		} else {
			fmt.Fprintf(w, "%s: %s\n", res.Error.Name, res.Error.Value)
		}
	}
	images := 0
	for _, d := range res.Displays {
		if png, ok := d["image/png"].(string); ok {
			images++
			if sink == nil {
				fmt.Fprintf(w, "[image %d: PNG, use --out DIR to save it]\n", images)
				continue
			}
			data, err := base64.StdEncoding.DecodeString(png)
			if err != nil {
				continue
			}
			name := filepath.Join(sink.dir, fmt.Sprintf("image-%d.png", images))
			if err := os.WriteFile(name, data, 0o644); err != nil {
				fmt.Fprintf(w, "[image %d: %v]\n", images, err)
				continue
			}
			fmt.Fprintf(w, "saved %s (%d bytes)\n", name, len(data))
		} else if s, ok := d["text/plain"].(string); ok {
			fmt.Fprintln(w, s)
		}
	}
	for _, f := range res.Files {
		if sink != nil {
			fmt.Fprintf(w, "saved %s (%d bytes)\n", filepath.Join(sink.dir, filepath.FromSlash(f.Path)), f.Bytes)
		} else {
			fmt.Fprintf(w, "file /mnt/data/%s (%d bytes, %s; use --out DIR to save it)\n", f.Path, f.Bytes, f.MIMEType)
		}
	}
	if res.Status != executor.StatusOK {
		fmt.Fprintf(w, "status: %s (%.1f ms)\n", res.Status, res.DurationMS)
	}
}
