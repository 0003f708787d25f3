package infratest

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/shared/bus"
)

// exporterTaskKey is the task key the exporters of StartExporter verify.
const exporterTaskKey = "main-test-task-key-0123456789abcdef"

// Exporter is an exporter service's run (infra.RunExporter) on a stack,
// and what a test needs to give it tasks as the gateway would.
type Exporter struct {
	*Process
	Publisher *bus.Publisher
	// Signer signs tasks with the key the exporter verifies.
	Signer *bus.TaskSigner

	stack *Stack
}

// StartExporter starts an exporter's run with its probes on a free
// address, waits until it is ready and checks the configuration it
// printed: the default concurrency, and no secret in clear.
func (s *Stack) StartExporter(t *testing.T, run RunFunc) *Exporter {
	t.Helper()
	addr := FreeAddr(t)
	p := Start(t, run, s.Env(map[string]string{
		"DATAPORT_HEALTH_ADDR": addr,
		"DATAPORT_TASK_SECRET": exporterTaskKey,
	}))
	p.WaitReady(t, addr)
	assert.Contains(t, p.Output(t), "DATAPORT_EXPORTER_CONCURRENCY=4\n")
	AssertMasked(t, p.Output(t), map[string]string{
		"DATAPORT_S3_SECRET_KEY": s.MinIO.Config.SecretKey,
		"DATAPORT_TASK_SECRET":   exporterTaskKey,
	})
	signer, err := bus.NewTaskSigner([]byte(exporterTaskKey))
	require.NoError(t, err)
	return &Exporter{Process: p, Publisher: bus.NewPublisher(s.NATS.JS, nil), Signer: signer, stack: s}
}

// RejectsExporterConfig checks that run goes through the exporters'
// validated configuration (infra.RunExporter's, whose cases shared/infra
// tests): a concurrency of 0 stops it before anything starts.
func RejectsExporterConfig(t *testing.T, run RunFunc) {
	t.Helper()
	RejectsConfig(t, run, map[string]string{"DATAPORT_EXPORTER_CONCURRENCY": "0"}, "DATAPORT_EXPORTER_CONCURRENCY")
}

// Submit publishes task on subject as the gateway publishes a job's first
// task: signed with the key the exporter verifies, with the message id of
// part 0.
func (e *Exporter) Submit(t *testing.T, subject string, task *exportv1.ExportTask) {
	t.Helper()
	require.NoError(t, e.Publisher.PublishTask(t.Context(), e.Signer, subject, task.GetJobId()+".task.0", task))
}

// WaitPart waits for the PartUploaded event of jobID and checks that its
// file is in the default exports bucket.
func (e *Exporter) WaitPart(t *testing.T, jobID string) *exportv1.PartUploaded {
	t.Helper()
	events, err := e.stack.NATS.JS.Stream(t.Context(), bus.StreamExportEvents)
	require.NoError(t, err)
	var raw *jetstream.RawStreamMsg
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		raw, err = events.GetLastMsgForSubject(t.Context(), "exports.status.part."+jobID)
		assert.NoError(c, err)
	}, 30*time.Second, 20*time.Millisecond)
	var part exportv1.PartUploaded
	require.NoError(t, proto.Unmarshal(raw.Data, &part))
	_, err = e.stack.MinIO.Store.Stat(t.Context(), "dataport-exports", part.GetFile().GetObjectKey())
	assert.NoError(t, err, "the part is in the default exports bucket")
	return &part
}
