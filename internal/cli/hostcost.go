//go:build linux

package cli

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// hostCostScript forks a process that has written 128 MiB and has the
// child write every page again: what the kernel and, on a virtual machine,
// the hypervisor charge for the copy-on-write faults and the fork and exit
// that every single-use sandbox pays. It prints "pages cow_seconds
// fork_exit_seconds".
const hostCostScript = `import os, time
n = 128 << 20
pages = n // 4096
b = bytearray(n)
b[::4096] = b"\1" * pages
r, w = os.pipe()
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    t1 = time.perf_counter()
    b[::4096] = b"\2" * pages
    os.write(w, b"%f" % (time.perf_counter() - t1))
    os._exit(0)
os.waitpid(pid, 0)
total = time.perf_counter() - t0
cow = float(os.read(r, 64))
print(pages, cow, total - cow)`

// hostCost is what a page fault and a fork cost on this host.
type hostCost struct {
	cowFault time.Duration // one copy-on-write page fault
	forkExit time.Duration // fork, wait and exit of the 128 MiB process, copies excluded
}

// measureHostCost runs hostCostScript with python and keeps the median of
// runs runs.
func measureHostCost(ctx context.Context, python string, runs int) (hostCost, error) {
	var cows, forks []time.Duration
	for i := 0; i < runs; i++ {
		out, err := exec.CommandContext(ctx, python, "-c", hostCostScript).CombinedOutput()
		if err != nil {
			return hostCost{}, fmt.Errorf("%s: %v: %s", python, err, out)
		}
		c, err := parseHostCost(string(out))
		if err != nil {
			return hostCost{}, err
		}
		cows, forks = append(cows, c.cowFault), append(forks, c.forkExit)
	}
	return hostCost{newStats(cows).median, newStats(forks).median}, nil
}

// parseHostCost reads hostCostScript's line.
func parseHostCost(out string) (hostCost, error) {
	f := strings.Fields(out)
	if len(f) != 3 {
		return hostCost{}, fmt.Errorf("host cost script printed %q", out)
	}
	pages, err1 := strconv.Atoi(f[0])
	cow, err2 := strconv.ParseFloat(f[1], 64)
	fork, err3 := strconv.ParseFloat(f[2], 64)
	if err1 != nil || err2 != nil || err3 != nil || pages <= 0 || cow < 0 || fork < 0 {
		return hostCost{}, fmt.Errorf("host cost script printed %q", out)
	}
	sec := func(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
	return hostCost{cowFault: sec(cow / float64(pages)), forkExit: sec(fork)}, nil
}
