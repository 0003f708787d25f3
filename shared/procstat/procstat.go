// Package procstat reads what Linux's /proc says of processes and of the
// machine: a process's CPU time and peak resident memory, which process
// runs a given command line, and the load average; and, for in-process
// benchmarks, this process's live heap (SampleHeap). Benchmarks that run
// Dataport as its real processes (the services, NATS, MinIO) report with
// it what each process spent on a case and how busy the shared machine
// was meanwhile, the figures docs/BENCHMARKS.md puts beside every timing.
package procstat

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// userHZ is the unit of the times in /proc/<pid>/stat (USER_HZ), 100 on
// every Linux architecture Go supports whatever the kernel's own tick.
const userHZ = 100

// CPUTime is the user and system CPU time process pid has used so far.
func CPUTime(pid int) (time.Duration, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("cpu time of process %d: %w", pid, err)
	}
	// The command name, in parentheses, may hold spaces and parentheses:
	// the fields that count come after its last ')'.
	end := bytes.LastIndexByte(raw, ')')
	if end < 0 || end+2 > len(raw) {
		return 0, fmt.Errorf("cpu time of process %d: unexpected stat %q", pid, raw)
	}
	f := strings.Fields(string(raw[end+2:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("cpu time of process %d: unexpected stat %q", pid, raw)
	}
	// utime and stime, fields 14 and 15 of stat(5).
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("cpu time of process %d: %w", pid, err)
	}
	return time.Duration(utime+stime) * time.Second / userHZ, nil
}

// PeakRSS is the most resident memory process pid has held, in bytes
// (VmHWM).
func PeakRSS(pid int) (uint64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("peak memory of process %d: %w", pid, err)
	}
	for line := range strings.SplitSeq(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("peak memory of process %d: %w", pid, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("peak memory of process %d: no VmHWM in its status", pid)
}

// LoadAverage is the machine's 1-minute load average as /proc/loadavg
// writes it (e.g. "1.42"), or "?" when it cannot be read: a figure printed
// beside results, where a missing one must not end the run.
func LoadAverage() string {
	raw, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(raw)); err == nil && len(f) > 0 {
		return f[0]
	}
	return "?"
}

// Find returns the process whose command line holds program and arg
// (e.g. "nats-server" and "-p 4222": the server on that port), for a
// process the caller did not start itself (a test helper's MinIO or NATS).
func Find(program, arg string) (int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, fmt.Errorf("find %s: %w", program, err)
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue // it ended meanwhile, or is not ours to read
		}
		cmdline := strings.ReplaceAll(string(raw), "\x00", " ")
		if strings.Contains(cmdline, program) && strings.Contains(cmdline, arg) {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("no %s process with %q", program, arg)
}

// Processes names the processes a benchmark measures by their ids.
type Processes map[string]int

// CPUTimes reads the CPU time of every process.
func (ps Processes) CPUTimes() (Times, error) { return each(ps, CPUTime) }

// PeakRSS reads the peak resident memory of every process.
func (ps Processes) PeakRSS() (Sizes, error) { return each(ps, PeakRSS) }

// each reads one figure of every process.
func each[V any](ps Processes, read func(pid int) (V, error)) (map[string]V, error) {
	out := make(map[string]V, len(ps))
	for name, pid := range ps {
		v, err := read(pid)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		out[name] = v
	}
	return out, nil
}

// Times are CPU times by process name.
type Times map[string]time.Duration

// Since is what each process used after before: t minus before, for the
// processes in t (one started meanwhile counts from zero).
func (t Times) Since(before Times) Times {
	out := make(Times, len(t))
	for name, d := range t {
		out[name] = d - before[name]
	}
	return out
}

// Line lists the CPU seconds of the named processes, in that order, as
// "exporter-1 12.3, nats-server 1.0"; a name t lacks is left out.
func (t Times) Line(names ...string) string {
	return line(t, names, func(d time.Duration) string { return fmt.Sprintf("%.1f", d.Seconds()) })
}

// Sizes are byte counts by process name.
type Sizes map[string]uint64

// Line lists the sizes of the named processes in MiB, in that order, as
// "exporter-1 312 MiB, archiver 80 MiB"; a name s lacks is left out.
func (s Sizes) Line(names ...string) string {
	return line(s, names, func(n uint64) string { return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20)) })
}

// line lists "name value" of the names m has, in the order of names.
func line[V any](m map[string]V, names []string, value func(V) string) string {
	var parts []string
	for _, name := range names {
		if v, ok := m[name]; ok {
			parts = append(parts, name+" "+value(v))
		}
	}
	return strings.Join(parts, ", ")
}
