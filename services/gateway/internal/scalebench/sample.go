package scalebench

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Peak is the most a process held while a scenario ran.
type Peak struct {
	// RSS is the highest VmRSS sampled.
	RSS int64
	// Conns is the most established TCP connections to the process's
	// listening port: what the load generator held open, each of them a
	// goroutine and its buffers in the gateway whether or not a handler
	// runs for it.
	Conns int
}

// samplePeaks samples p's VmRSS and the established connections to port
// every interval until ctx ends, and returns a function that stops it and
// returns the peaks.
func samplePeaks(ctx context.Context, p *Process, port int, interval time.Duration) func() Peak {
	ctx, cancel := context.WithCancel(ctx)
	var (
		wg   sync.WaitGroup
		peak Peak
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			if m, err := p.Memory(); err == nil {
				peak.RSS = max(peak.RSS, m.RSS)
			}
			if n, err := establishedTo(port); err == nil {
				peak.Conns = max(peak.Conns, n)
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return func() Peak {
		cancel()
		wg.Wait()
		return peak
	}
}

// establishedTo counts the established IPv4 TCP connections whose local
// port is port, from /proc/net/tcp (the gateway listens on 127.0.0.1).
func establishedTo(port int) (int, error) {
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		return 0, err
	}
	defer func() { _ = f.Close() }()
	suffix := fmt.Sprintf(":%04X", port)
	n := 0
	sc := bufio.NewScanner(f)
	sc.Scan() // the header
	for sc.Scan() {
		// sl local_address rem_address st ...; state 01 is ESTABLISHED.
		f := strings.Fields(sc.Text())
		if len(f) > 3 && f[3] == "01" && strings.HasSuffix(f[1], suffix) {
			n++
		}
	}
	return n, sc.Err()
}

// portOf is the port of a host:port address.
func portOf(addr string) int {
	n, _ := strconv.Atoi(addr[strings.LastIndexByte(addr, ':')+1:])
	return n
}
