package jobstore

import (
	"cmp"
	"context"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
)

// LazySummary is a summary (see Summary) as EachLazySummary hands it:
// from a summary block, its protobuf, of which only the fields a listing
// filters, sorts and scopes by most often are read (by walking the wire
// format, without allocating), and the whole decoded only when Job asks
// for it. A list that filters by status and sorts by time decoded every
// one of an owner's thousand summaries (proto.Unmarshal, about 1.8 ms of
// a list's 6.4 in process) to render a hundred of them, which it reads
// in full anyway (docs/BENCHMARKS.md, "Summaries decoded lazily"). A
// LazySummary not from a block holds its decoded job.
type LazySummary struct {
	job *exportv1.Job
	raw []byte
	id  string
	f   lazyFields
	// failed is set once decoding raw failed.
	failed bool
}

// lazyFields are the fields of a summary that a LazySummary reads
// without decoding it, as views of its protobuf.
type lazyFields struct {
	id, clientID, owner, dialect, org, parent []byte
	kind                                      exportv1.JobKind
	state                                     exportv1.JobState
	created, updated                          lazyTime
}

type lazyTime struct {
	secs  int64
	nanos int32
}

// LazyOf is job (a summary, or a job) as a LazySummary.
func LazyOf(job *exportv1.Job) *LazySummary { return &LazySummary{job: job, id: job.GetId()} }

// scan reads l.raw's fields; false if raw is not well-formed protobuf
// at its top level or in the times it reads, which proto.Unmarshal
// rejects too. As proto.Unmarshal does, it takes a scalar field's last
// occurrence, merges a message field's occurrences, and treats a known
// field of another wire type as unknown.
func (l *LazySummary) scan() bool {
	b := l.raw
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		switch {
		case typ == protowire.BytesType && (num == 1 || num == 2 || num == 9 || num == 10 || num == 12 || num == 22 || num == 23 || num == 33):
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return false
			}
			b = b[n:]
			switch num {
			case 1:
				l.f.id = v
			case 2:
				l.f.owner = v
			case 9:
				if !l.f.created.merge(v) {
					return false
				}
			case 10:
				if !l.f.updated.merge(v) {
					return false
				}
			case 12:
				l.f.dialect = v
			case 22:
				l.f.parent = v
			case 23:
				l.f.org = v
			case 33:
				l.f.clientID = v
			}
		case typ == protowire.VarintType && (num == 3 || num == 5):
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return false
			}
			b = b[n:]
			if num == 3 {
				l.f.kind = exportv1.JobKind(int32(v))
			} else {
				l.f.state = exportv1.JobState(int32(v))
			}
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return false
			}
			b = b[n:]
		}
	}
	return true
}

// merge reads a google.protobuf.Timestamp's fields from b into t.
func (t *lazyTime) merge(b []byte) bool {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		if typ == protowire.VarintType && (num == 1 || num == 2) {
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return false
			}
			b = b[n:]
			if num == 1 {
				t.secs = int64(v)
			} else {
				t.nanos = int32(v)
			}
			continue
		}
		if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
			return false
		}
		b = b[n:]
	}
	return true
}

// Job is the summary decoded (once); nil if it does not decode.
func (l *LazySummary) Job() *exportv1.Job {
	if l.job != nil || l.failed {
		return l.job
	}
	job := &exportv1.Job{}
	if proto.Unmarshal(l.raw, job) != nil || job.GetId() != l.id {
		l.failed = true
		return nil
	}
	l.job = job
	return job
}

// ID is the job's id.
func (l *LazySummary) ID() string { return l.id }

// State is the job's state.
func (l *LazySummary) State() exportv1.JobState {
	if l.job != nil {
		return l.job.GetState()
	}
	return l.f.state
}

// Owned reports whether owner owns the job.
func (l *LazySummary) Owned(owner string) bool {
	if l.job != nil {
		return l.job.GetOwnerId() == owner
	}
	return string(l.f.owner) == owner
}

// OwnerID is the job's owner.
func (l *LazySummary) OwnerID() string {
	if l.job != nil {
		return l.job.GetOwnerId()
	}
	return string(l.f.owner)
}

// In reports whether the job is of dialect and organization org.
func (l *LazySummary) In(dialect, org string) bool {
	if l.job != nil {
		return l.job.GetDialect() == dialect && l.job.GetOrganizationId() == org
	}
	return string(l.f.dialect) == dialect && string(l.f.org) == org
}

// HasParent reports whether the job is a schedule's run.
func (l *LazySummary) HasParent() bool {
	if l.job != nil {
		return l.job.GetParentId() != ""
	}
	return len(l.f.parent) > 0
}

// ClientIDOr is the job's client id, or id if it has none.
func (l *LazySummary) ClientIDOr(id string) string {
	switch {
	case l.job != nil && l.job.GetClientId() != "":
		return l.job.GetClientId()
	case l.job == nil && len(l.f.clientID) > 0:
		return string(l.f.clientID)
	}
	return id
}

// CreatedAt and UpdatedAt are the job's times, as the timestamps'
// AsTime gives them.
func (l *LazySummary) CreatedAt() time.Time {
	if l.job != nil {
		return l.job.GetCreatedAt().AsTime()
	}
	return time.Unix(l.f.created.secs, int64(l.f.created.nanos)).UTC()
}

func (l *LazySummary) UpdatedAt() time.Time {
	if l.job != nil {
		return l.job.GetUpdatedAt().AsTime()
	}
	return time.Unix(l.f.updated.secs, int64(l.f.updated.nanos)).UTC()
}

// stamp is stamp of the job.
func (l *LazySummary) stamp() int64 {
	if l.job != nil {
		return stamp(l.job)
	}
	ts := timestamppb.Timestamp{Seconds: l.f.created.secs, Nanos: l.f.created.nanos}
	if !ts.IsValid() {
		return 0
	}
	return max(ts.AsTime().UnixNano(), 0)
}

// LazyNewestFirst is NewestFirst of two summaries.
func LazyNewestFirst(a, b *LazySummary) int {
	if c := cmp.Compare(b.stamp(), a.stamp()); c != 0 {
		return c
	}
	return cmp.Compare(b.ID(), a.ID())
}

// matchesLazy is sc.matches of l.
func (sc Scope) matchesLazy(l *LazySummary) bool {
	if l.job != nil {
		return sc.matches(l.job)
	}
	switch {
	case sc.Parent != "" && string(l.f.parent) != sc.Parent:
		return false
	case sc.Owner != "" && string(l.f.owner) != sc.Owner:
		return false
	case sc.Dialect != "" && (string(l.f.dialect) != sc.Dialect || string(l.f.org) != sc.Organization):
		return false
	case sc.Kind != exportv1.JobKind_JOB_KIND_UNSPECIFIED && l.f.kind != sc.Kind:
		return false
	}
	return true
}

// EachSummary calls fn with the summary (see Summary) of each of sc's
// jobs, once each, in no particular order, and stops at fn's first
// error; see EachLazySummary, of which it is the summaries decoded.
func (s *Store) EachSummary(ctx context.Context, sc Scope, fn func(sum *exportv1.Job) error) error {
	return s.EachLazySummary(ctx, sc, func(l *LazySummary) error {
		if sum := l.Job(); sum != nil {
			return fn(sum)
		}
		return nil
	})
}
