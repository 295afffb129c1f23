//go:build !linux

package cli

import (
	"context"
	"runtime"
)

// platformChecks reports that sandboxes need Linux: they are built from
// Linux namespaces, seccomp and cgroups.
func platformChecks(ctx context.Context, report func(finding)) {
	report(fail("Linux kernel", "codeexec sandboxes need Linux namespaces, seccomp and cgroups; this is "+runtime.GOOS,
		"run codeexec on a Linux host"))
}
