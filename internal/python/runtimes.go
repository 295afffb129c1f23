package python

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
)

// Runtimes describes what the sandbox runs: GET /v1/runtimes.
type Runtimes struct {
	Languages []Language `json:"languages"`
	// Libraries are the installed ones of Libraries, with their versions.
	Libraries []InstalledLibrary `json:"libraries"`
}

// Language is a value of an execution's language and its version.
type Language struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

// InstalledLibrary is a library of Libraries that the interpreter has.
type InstalledLibrary struct {
	Name    string `json:"name"`
	Import  string `json:"import"`
	Version string `json:"version"`
	// Preloaded says the zygote imports it before any request.
	Preloaded bool `json:"preloaded"`
}

// runtimesScript prints the interpreter's version and the distribution
// version of each library named in argv, without importing them.
const runtimesScript = `import importlib.metadata, json, platform, sys
libs = {}
for name in sys.argv[1:]:
    try:
        libs[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        pass
print(json.dumps({"python": platform.python_version(), "libraries": libs}))`

// ReadRuntimes asks interpreter (the sandbox's, /usr/bin/python3: the
// sandbox binds the host's /usr) and bash for their versions and those of
// Libraries.
func ReadRuntimes(ctx context.Context, interpreter, bash string) (*Runtimes, error) {
	args := []string{"-I", "-c", runtimesScript}
	for _, l := range Libraries {
		args = append(args, l.Name)
	}
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, interpreter, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s: %v: %s", interpreter, err, strings.TrimSpace(stderr.String()))
	}
	var got struct {
		Python    string            `json:"python"`
		Libraries map[string]string `json:"libraries"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		return nil, fmt.Errorf("%s: %v", interpreter, err)
	}
	bv, err := exec.CommandContext(ctx, bash, "-c", `printf %s "$BASH_VERSION"`).Output()
	if err != nil {
		return nil, fmt.Errorf("%s: %v", bash, err)
	}
	version, _, _ := strings.Cut(string(bv), "(") // 5.2.15(1)-release
	rt := &Runtimes{Languages: []Language{{"python", got.Python}, {"bash", version}}, Libraries: []InstalledLibrary{}}
	for _, l := range Libraries {
		if v, ok := got.Libraries[l.Name]; ok {
			rt.Libraries = append(rt.Libraries, InstalledLibrary{Name: l.Name, Import: l.Import, Version: v, Preloaded: l.Preload})
		}
	}
	return rt, nil
}
