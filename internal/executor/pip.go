package executor

import (
	"fmt"
	"net/url"
)

// pipEnv adds to env the variables that make the sandbox's pip use the
// package index at index (none when it is empty).
func pipEnv(index string, env map[string]string) error {
	if index == "" {
		return nil
	}
	u, err := url.Parse(index)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("pip index URL %q: want an http:// or https:// URL", index)
	}
	env["PIP_INDEX_URL"] = index
	if u.Scheme == "http" {
		// pip ignores a plain-http index it is not told to trust; the
		// operator who names one does.
		env["PIP_TRUSTED_HOST"] = u.Hostname()
	}
	return nil
}
