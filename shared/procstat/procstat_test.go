package procstat_test

import (
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"dataport.dev/shared/procstat"
)

// TestReadsAProcess: a child that has worked and ended shows its CPU time
// as its parent's wait status counts it, and its peak memory; the test's
// own process is found by its command line.
func TestReadsAProcess(t *testing.T) {
	// A shell loop that burns CPU until it is killed: the figures of a
	// live process, then compared with what the kernel reports at exit.
	cmd := exec.Command("sh", "-c", "while :; do :; done")
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	pid := cmd.Process.Pid
	require.Eventually(t, func() bool {
		d, err := procstat.CPUTime(pid)
		return err == nil && d > 0
	}, 30*time.Second, 10*time.Millisecond, "the busy child uses CPU")
	rss, err := procstat.PeakRSS(pid)
	require.NoError(t, err)
	assert.Positive(t, rss)

	ps := procstat.Processes{"busy": pid, "self": os.Getpid()}
	before, err := ps.CPUTimes()
	require.NoError(t, err)
	require.NoError(t, cmd.Process.Kill())
	require.Error(t, cmd.Wait())
	used := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	assert.LessOrEqual(t, before["busy"], used+10*time.Millisecond, "no more than the kernel reports at exit")
	_, err = procstat.CPUTime(pid)
	assert.Error(t, err, "a process that is gone")

	self, err := procstat.Find(os.Args[0], "")
	require.NoError(t, err)
	assert.Equal(t, os.Getpid(), self)
	_, err = procstat.Find(os.Args[0], "no-such-argument-"+strconv.Itoa(os.Getpid()))
	assert.Error(t, err)
}

func TestLoadAverage(t *testing.T) {
	load := procstat.LoadAverage()
	_, err := strconv.ParseFloat(load, 64)
	assert.NoError(t, err, "a number: %q", load)
}

func TestLines(t *testing.T) {
	cpu := procstat.Times{"exporter-1": 12300 * time.Millisecond, "nats-server": time.Second, "minio": 2 * time.Second}
	before := procstat.Times{"exporter-1": 300 * time.Millisecond, "minio": 2 * time.Second}
	assert.Equal(t, "exporter-1 12.0, nats-server 1.0, minio 0.0",
		cpu.Since(before).Line("exporter-1", "exporter-2", "nats-server", "minio"))
	rss := procstat.Sizes{"archiver": 80 << 20, "exporter-1": 312 << 20}
	assert.Equal(t, "exporter-1 312 MiB, archiver 80 MiB", rss.Line("exporter-1", "archiver"))
	assert.Empty(t, procstat.Times{}.Line("x"), "nothing to list")
}
