package scalebench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Process is one server the benchmark started (nats-server, MinIO, the
// gateway), logging to a file of its own.
type Process struct {
	Name string
	cmd  *exec.Cmd
	done chan error
}

// Start runs bin with args and env (added to this process's environment)
// in its own process group, its output in logDir/<name>.log.
func Start(name, logDir string, env []string, bin string, args ...string) (*Process, error) {
	log, err := os.Create(filepath.Join(logDir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		_ = log.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Process{Name: name, cmd: cmd, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait(); _ = log.Close() }()
	return p, nil
}

// Pid is the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Stop sends SIGTERM and waits for the process to end, killing it after
// grace.
func (p *Process) Stop(grace time.Duration) error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return nil
		}
		return err
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not stop within %s; killed", p.Name, grace)
	}
}

// Memory is what /proc/<pid>/status says of a process's memory.
type Memory struct {
	// RSS is VmRSS, the resident set now; HWM is VmHWM, its peak.
	RSS, HWM int64
}

// MiB formats n bytes.
func MiB(n int64) string { return fmt.Sprintf("%.1f", float64(n)/(1<<20)) }

// Memory reads the process's VmRSS and VmHWM.
func (p *Process) Memory() (Memory, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.Pid()))
	if err != nil {
		return Memory{}, err
	}
	defer func() { _ = f.Close() }()
	var m Memory
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			return Memory{}, fmt.Errorf("%s: %q: %w", k, v, err)
		}
		if k == "VmRSS" {
			m.RSS = kb << 10
		} else {
			m.HWM = kb << 10
		}
	}
	return m, sc.Err()
}

// FreeAddr returns a loopback address with a port nobody listens on.
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer func() { _ = l.Close() }()
	return l.Addr().String(), nil
}

// WaitHTTP polls url until it answers 200, p exits, or ctx ends.
func WaitHTTP(ctx context.Context, p *Process, url string) error {
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if resp, err := http.DefaultClient.Do(req); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case err := <-p.done:
			p.done <- err
			return fmt.Errorf("%s exited before %s answered: %v", p.Name, url, err)
		case <-ctx.Done():
			return fmt.Errorf("%s: %s did not answer: %w", p.Name, url, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// cpuTime is the CPU time p has used (user and system), from
// /proc/<pid>/stat in clock ticks of 10 ms.
func (p *Process) cpuTime() (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.Pid()))
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces; the fields after it do not.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("%s: short /proc stat", p.Name)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond, nil
}

// Settle waits until p uses under a tenth of a core over a second (a
// NATS server still writing out a fill would slow the first requests
// down), or max has passed.
func (p *Process) Settle(ctx context.Context, max time.Duration) error {
	deadline := time.Now().Add(max)
	prev, err := p.cpuTime()
	if err != nil {
		return err
	}
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
		now, err := p.cpuTime()
		if err != nil {
			return err
		}
		if now-prev < 100*time.Millisecond {
			return nil
		}
		prev = now
	}
	return nil
}
