package taskruntest_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/bustest"
	"dataport.dev/shared/taskrun/taskruntest"
)

// TestWaitOutcome: the job's completion or failure, whichever is stored.
func TestWaitOutcome(t *testing.T) {
	ns := bustest.Start(t)
	pub := bus.NewPublisher(ns.JS, nil)
	require.NoError(t, pub.PublishStatus(t.Context(), bus.EventCompleted, "j-done", "",
		&exportv1.ExportCompleted{JobId: "j-done", Files: []*exportv1.File{{Name: "a.csv"}}}))
	require.NoError(t, pub.PublishStatus(t.Context(), bus.EventFailed, "j-failed", "",
		&exportv1.ExportFailed{JobId: "j-failed", Reason: "No."}))

	done, failed := taskruntest.WaitOutcome(t, ns.JS, "j-done", time.Minute)
	require.NotNil(t, done)
	assert.Nil(t, failed)
	assert.Equal(t, "a.csv", done.GetFiles()[0].GetName())

	done, failed = taskruntest.WaitOutcome(t, ns.JS, "j-failed", time.Minute)
	assert.Nil(t, done)
	require.NotNil(t, failed)
	assert.Equal(t, "No.", failed.GetReason())
}
