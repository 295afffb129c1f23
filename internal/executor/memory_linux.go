package executor

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// ZygoteMemory measures the zygote, which holds the preloaded libraries
// every child shares: its resident set (RSS) and its private dirty memory,
// in bytes, from /proc/PID/smaps_rollup (proc(5)).
func (e *Executor) ZygoteMemory() (rss, privateDirty int64, err error) {
	p := e.pool()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0, 0, ErrUnavailable
	}
	m, err := smapsRollup(p.cmd.Process.Pid)
	return m["Rss:"], m["Private_Dirty:"], err
}

// smapsRollup reads /proc/pid/smaps_rollup: field name (with its colon)
// to bytes.
func smapsRollup(pid int) (map[string]int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return nil, err
	}
	m := map[string]int64{}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || f[2] != "kB" {
			continue
		}
		kb, err := strconv.ParseInt(f[1], 10, 64)
		if err == nil {
			m[f[0]] = kb << 10
		}
	}
	return m, nil
}
