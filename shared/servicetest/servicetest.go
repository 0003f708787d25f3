// Package servicetest builds Dataport's services and runs them as the
// processes they are in production, for benchmarks that measure the real
// binaries (each exporter a process of its own, as a one-CPU pod is). A
// process gets the environment it is given and a free health address,
// counts as started once its /readyz answers 200, and is interrupted
// (SIGINT, its graceful shutdown) when the test ends. Find, CPUTimes and
// PeakRSSLine read package procstat's figures of such processes, failing
// the test where procstat returns an error.
package servicetest

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"dataport.dev/shared/logtest"
	"dataport.dev/shared/procstat"
)

// readyWithin bounds a service's start: it connects to NATS and MinIO,
// which the test started already.
const readyWithin = time.Minute

// Build builds the named services (directories under services/) into a
// temporary directory and returns it; the binaries carry the services'
// names. Each is built in its own module's directory, so it builds with
// GOWORK=off too.
func Build(tb testing.TB, names ...string) string {
	tb.Helper()
	out := tb.TempDir()
	for _, name := range names {
		dir, err := serviceDir(name)
		if err != nil {
			tb.Fatal(err)
		}
		cmd := exec.Command("go", "build", "-o", filepath.Join(out, name), ".")
		cmd.Dir = dir
		if log, err := cmd.CombinedOutput(); err != nil {
			tb.Fatalf("build %s: %v\n%s", name, err, log)
		}
	}
	return out
}

// serviceDir is services/<name> in the nearest directory above the
// working directory (the package's, under go test) that has it.
func serviceDir(name string) (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		p := filepath.Join(dir, "services", name)
		if _, err := os.Stat(filepath.Join(p, "go.mod")); err == nil {
			return p, nil
		}
		if filepath.Dir(dir) == dir {
			return "", fmt.Errorf("service %s not found above %s", name, wd)
		}
	}
}

// Process is a running service.
type Process struct {
	// Name is the name Start was given, which benchmarks report it by.
	Name string
	cmd  *exec.Cmd
}

// Pid is the process's id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Start runs bin with env (added to the test's own environment) and a
// free DATAPORT_HEALTH_ADDR, and returns once the service is ready. Every
// line it logs on stdout goes to onLine (nil drops them), from one
// goroutine; stderr is shown if it never gets ready.
func Start(tb testing.TB, bin, name string, env []string, onLine func([]byte)) *Process {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cmd := exec.Command(bin)
	cmd.Env = append(append(os.Environ(), env...), "DATAPORT_HEALTH_ADDR="+addr)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	// Written by the command's copier while the wait below may read it.
	stderr := new(logtest.Buffer)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", name, err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if onLine != nil {
				onLine(sc.Bytes())
			}
		}
	})
	tb.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		wg.Wait()
		_ = cmd.Wait()
	})
	deadline := time.Now().Add(readyWithin)
	for {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return &Process{Name: name, cmd: cmd}
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s not ready within %v: %v\n%s", name, readyWithin, err, stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Find is procstat.Find for a process the test did not start itself (the
// test helpers' NATS and MinIO); it fails the test if there is none.
func Find(tb testing.TB, program, arg string) int {
	tb.Helper()
	pid, err := procstat.Find(program, arg)
	if err != nil {
		tb.Fatal(err)
	}
	return pid
}

// CPUTimes reads the CPU time each of ps has used so far; it fails the
// test if one cannot be read (a process that died).
func CPUTimes(tb testing.TB, ps procstat.Processes) procstat.Times {
	tb.Helper()
	t, err := ps.CPUTimes()
	if err != nil {
		tb.Fatal(err)
	}
	return t
}

// PeakRSSLine lists the peak resident memory of procs, in their order,
// as procstat.Sizes.Line does.
func PeakRSSLine(tb testing.TB, procs ...*Process) string {
	tb.Helper()
	ps, names := procstat.Processes{}, make([]string, len(procs))
	for i, p := range procs {
		ps[p.Name], names[i] = p.Pid(), p.Name
	}
	rss, err := ps.PeakRSS()
	if err != nil {
		tb.Fatal(err)
	}
	return rss.Line(names...)
}
