package plan

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/recordquery"
)

// Defaults of Split.
const (
	// DefaultSplitMinRecords is the least number of records on an
	// export's subject for which it is split: below it one exporter
	// finishes in seconds, and joining costs a read of the file.
	DefaultSplitMinRecords = 1_000_000
	// DefaultSplitParts is how many ranges a split export has: enough to
	// keep a few exporter replicas busy on one export, few enough that
	// each piece of a million-record export stays over S3's 5 MiB part
	// minimum and is composed server-side.
	DefaultSplitParts = 4
)

// Subjects tells how many messages a subject of the records stream holds
// and where they lie. StreamSubjects is the implementation.
type Subjects interface {
	// Span returns the number of messages on subject and the sequences
	// of its first and last; all zero for an empty subject.
	Span(ctx context.Context, subject string) (count, first, last uint64, err error)
}

// StreamSubjects reads subjects' spans from a stream (the records
// stream).
type StreamSubjects struct{ Stream jetstream.Stream }

// Span implements Subjects with a subject-filtered stream info and two
// direct reads; no message is read beyond the first and the last.
func (s StreamSubjects) Span(ctx context.Context, subject string) (count, first, last uint64, err error) {
	info, err := s.Stream.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		return 0, 0, 0, fmt.Errorf("stream info %s: %w", subject, err)
	}
	for _, n := range info.State.Subjects {
		count += n
	}
	if count == 0 {
		return 0, 0, 0, nil
	}
	firstMsg, err := s.Stream.GetMsg(ctx, info.State.FirstSeq, jetstream.WithGetMsgSubject(subject))
	if err != nil {
		return 0, 0, 0, fmt.Errorf("first message of %s: %w", subject, err)
	}
	lastMsg, err := s.Stream.GetLastMsgForSubject(ctx, subject)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("last message of %s: %w", subject, err)
	}
	return count, firstMsg.Sequence, lastMsg.Sequence, nil
}

// Split plans big record exports as several range parts of one file
// (ExportTask.record_range): each exporter replica takes a range of the
// stream, and the archiver joins the pieces. The zero value never splits.
//
// Room exports split the same way (RoomTasks), with the same threshold
// counted in messages and the same number of parts.
type Split struct {
	// Subjects counts the records of an export; nil: no split.
	Subjects Subjects
	// Rooms counts the messages of a room export's room (the chat
	// stream); nil: room exports are not split.
	Rooms Subjects
	// MinRecords is the least number of records on the export's subject
	// for a split (DefaultSplitMinRecords when 0).
	MinRecords uint64
	// Parts is the number of ranges (DefaultSplitParts when 0; 1: no
	// split).
	Parts int
}

// splittableFormats are the formats whose file is header, rows and
// closing bytes, each row rendered alone (recordrender's Splittable).
var splittableFormats = map[exportv1.Format]bool{
	exportv1.Format_FORMAT_CSV: true, exportv1.Format_FORMAT_JSON: true, exportv1.Format_FORMAT_JSON_API: true,
	exportv1.Format_FORMAT_XML: true, exportv1.Format_FORMAT_JSONL: true,
}

// RecordsTasks are the tasks of a record export (or of one run of a
// recurring one): RecordsTask's one task, or, for a single-file export of
// a records-stream resource whose subject holds at least MinRecords
// messages, Parts tasks over consecutive ranges of the subject's stream
// sequences, in stream order. Sorted, chunked and compressed exports and
// PDF keep one task: their files depend on rows across the whole stream.
//
// The ranges split the sequences between the subject's first and last
// message evenly; that balances the work when the subject's messages are
// spread evenly over that span (one big stream, or tenants publishing
// alike), and only makes some ranges shorter otherwise. An error is a
// failed look-up of the subject; the caller may submit RecordsTask's one
// task instead, which exports the same file.
func (s Split) RecordsTasks(ctx context.Context, job *exportv1.Job) ([]*exportv1.ExportTask, error) {
	one := []*exportv1.ExportTask{RecordsTask(job)}
	sc := job.GetRecords()
	parts := s.Parts
	if parts == 0 {
		parts = DefaultSplitParts
	}
	if s.Subjects == nil || parts < 2 || !splittableFormats[job.GetFormat()] ||
		sc.GetSort() != "" || sc.GetMaxRowsPerChunk() > 0 || sc.GetMaxBytesPerChunk() > 0 || sc.GetGzipChunks() {
		return one, nil
	}
	if def, ok := recordquery.Builtin(sc.GetResource()); ok && def.SourceOf() != recordquery.SourceRecords {
		return one, nil
	}
	subject, err := bus.RecordSubject(sc.GetResource(), job.GetScope().GetOrganizationId())
	if err != nil {
		// No organization: the exporter rejects the task with its reason.
		return one, nil
	}
	ranges, err := s.ranges(ctx, s.Subjects, subject)
	if err != nil || ranges == nil {
		return one, err
	}
	tasks := make([]*exportv1.ExportTask, len(ranges))
	for i, r := range ranges {
		t := RecordsTask(job)
		t.RecordRange = r
		tasks[i] = t
	}
	return tasks, nil
}

// splittableRoomFormats are the room formats the room exporter splits:
// every one it renders (HTML's thread excerpts and footer reach across
// ranges, and its render stage carries them over).
var splittableRoomFormats = map[exportv1.Format]bool{
	exportv1.Format_FORMAT_JSON: true, exportv1.Format_FORMAT_JSONL: true, exportv1.Format_FORMAT_CSV: true,
	exportv1.Format_FORMAT_HTML: true,
}

// RoomTasks are the tasks of a room export whose one task (RoomExport's)
// is task: that task, or, when the room's chat subject holds at least
// MinRecords messages and the format is JSON, JSON lines, csv.gz or HTML,
// Parts tasks over consecutive ranges of the subject's stream sequences
// (ExportTask.room_range), in stream order; job.Parts is planned again
// for them (room holds the name and type the parts show). Each range
// runs an index stage and a render stage (the room exporter's split.go)
// and the archiver joins the pieces into the one document.
//
// An error is a failed look-up of the subject; the caller may submit the
// one task, which exports the same document.
func (s Split) RoomTasks(ctx context.Context, job *exportv1.Job, room *sourcev1.Room, task *exportv1.ExportTask) ([]*exportv1.ExportTask, error) {
	one := []*exportv1.ExportTask{task}
	parts := s.Parts
	if parts == 0 {
		parts = DefaultSplitParts
	}
	if s.Rooms == nil || parts < 2 || !splittableRoomFormats[job.GetFormat()] || job.GetKind() != exportv1.JobKind_JOB_KIND_ROOM {
		return one, nil
	}
	subject, err := bus.ChatSubject(task.GetRoom().GetRoomId())
	if err != nil {
		return one, nil // the exporter rejects the task with its reason
	}
	ranges, err := s.ranges(ctx, s.Rooms, subject)
	if err != nil || ranges == nil {
		return one, err
	}
	tasks := make([]*exportv1.ExportTask, len(ranges))
	for i, r := range ranges {
		t := proto.CloneOf(task)
		t.RoomRange = r
		tasks[i] = t
	}
	job.Parts = Parts(tasks, map[string]*sourcev1.Room{room.GetId(): room})
	return tasks, nil
}

// ranges are the consecutive slices of subject's span of stream sequences
// a split export's parts take, or nil when the subject holds fewer than
// MinRecords messages (or fewer sequences than parts).
func (s Split) ranges(ctx context.Context, subjects Subjects, subject string) ([]*exportv1.RecordRange, error) {
	count, first, last, err := subjects.Span(ctx, subject)
	if err != nil {
		return nil, err
	}
	parts := s.Parts
	if parts == 0 {
		parts = DefaultSplitParts
	}
	minRecords := s.MinRecords
	if minRecords == 0 {
		minRecords = DefaultSplitMinRecords
	}
	if count < minRecords || last-first+1 < uint64(parts) {
		return nil, nil
	}
	span := last - first + 1
	ranges := make([]*exportv1.RecordRange, parts)
	for i := range ranges {
		ranges[i] = &exportv1.RecordRange{
			FirstSeq: first + span*uint64(i)/uint64(parts),
			LastSeq:  first + span*uint64(i+1)/uint64(parts) - 1,
		}
	}
	return ranges, nil
}
