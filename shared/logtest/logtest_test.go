package logtest_test

import (
	"log/slog"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"

	"dataport.dev/shared/logtest"
)

func TestBufferConcurrentWritesAndRecords(t *testing.T) {
	t.Parallel()
	var logs logtest.Buffer
	logger := slog.New(slog.NewJSONHandler(&logs, nil))
	var wg sync.WaitGroup
	for _, job := range []string{"a", "b"} {
		wg.Go(func() {
			for range 50 {
				logger.Info("checkpoint saved", "job_id", job)
				_ = logs.String() // a reader while the writers run
			}
		})
	}
	logger.Info("resuming from chunk", "job_id", "a")
	wg.Wait()

	assert.Len(t, logs.Records(t, "checkpoint", "a"), 50)
	assert.Len(t, logs.Records(t, "checkpoint saved", "b"), 50)
	assert.Len(t, logs.Records(t, "checkpoint", ""), 100, "no job id: every job")
	assert.Len(t, logs.Records(t, "resuming", ""), 1)
	assert.Empty(t, logs.Records(t, "resuming", "b"))
	assert.Len(t, logs.Records(t, "", ""), 101)
}
