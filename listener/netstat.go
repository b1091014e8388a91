package listener

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// parseNetstat returns the counters of the TcpExt section of
// /proc/net/netstat, which comes as two lines: "TcpExt:" and the names,
// then "TcpExt:" and the values in the same order.
func parseNetstat(data []byte) (map[string]uint64, error) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	var names []string
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || fields[0] != "TcpExt:" {
			names = nil
			continue
		}
		if names == nil {
			names = fields[1:]
			continue
		}
		vals := fields[1:]
		if len(vals) != len(names) {
			return nil, fmt.Errorf("netstat: %d TcpExt names but %d values", len(names), len(vals))
		}
		out := make(map[string]uint64, len(names))
		for i, v := range vals {
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("netstat: TcpExt %s: %w", names[i], err)
			}
			out[names[i]] = n
		}
		return out, nil
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("netstat: %w", err)
	}
	return nil, fmt.Errorf("netstat: no TcpExt values")
}
