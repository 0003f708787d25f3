package roomexport

import (
	"cmp"
	"context"
	"errors"
	"os"
	"time"

	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/shared/taskrun"
)

// A fresh room part does not wait for its history to be read before it
// renders. What goes at a position is only known at the end of the read
// (spool.go), but the answer can be known much earlier: republished ids
// are mostly published again soon after their first version. So the
// render runs beside the read, on every version as it leaves a bounded
// window of versions not yet rendered, where later versions are applied
// to their first (window.go), into a multipart upload of its own
// (speculate), and:
//
//   - if the read ends with every republished version applied in the
//     window (exactly: window.verify, or the window's counts against
//     the spool's plan, window.resolved), the speculative document is
//     the answer and is completed: one pass, and the render is done when
//     the read is;
//   - as soon as an id is known to be republished after its first
//     version left the window (the Bloom filter's hit is confirmed by a
//     table of recent ids), or when the read ends with a plan the window
//     did not resolve, the speculative render is abandoned: its upload is
//     aborted (no object, no pending multipart upload is left), and the
//     part is rendered from the spool and its plan as before, after the
//     read.
//
// Both paths write the same bytes: the speculative render feeds the
// renderer exactly the versions the planned render would, in the same
// order, with the same time printed.
//
// A speculative render checkpoints its parts like the planned one, with
// a version of its own (speculativeCheckpointVersion), covering only
// versions that left the window: its bytes are final only if the whole
// history is resolved by the window, so an attempt that resumes it reads
// the history again from its start (onto the spool, for the verdict and
// a possible fallback, and through the window, which is rebuilt as it
// was) but renders only what comes after the checkpoint, into the same
// upload. If the window does not resolve that history, the checkpointed
// upload is aborted and the part is rendered from the spool as planned,
// printing the first attempt's time: the same bytes as a clean run
// either way.

// errSpeculationFailed ends a speculative render whose history holds a
// republished id the window did not resolve; the part is then rendered
// from the spool.
var errSpeculationFailed = errors.New("roomexport: a message was republished; speculative render abandoned")

// feedBatch is how many versions the read hands to the render at once.
const feedBatch = 256

// version is what the render gets at one stream sequence: data is the
// message's own (nats.go copies every payload), so it may outlive the
// read's callback; it is a later version's when latest, that version's
// sequence, is not zero, and nil for a later version applied already.
type version struct {
	seq    uint64
	data   []byte
	latest uint64
}

// feed carries the versions the spool reads, through the window, to a
// speculative render on another goroutine. add, abandon and end are the
// reader's (one goroutine); each is the render's.
type feed struct {
	ctx  context.Context // the read's: a render that never starts taking cancels it
	ch   chan []version
	done chan struct{} // closed when the render takes no more versions
	// verdict is written before ch is closed: nil when the speculative
	// render is the answer, errSpeculationFailed, or the read's error.
	verdict error
	batch   []version
	ended   bool
	win     *window
	// verified: the window alone showed the speculative render right
	// (window.verify), so the spool needs no plan.
	verified bool
	// through is the stream sequence a resumed render's checkpoint
	// covers: versions up to it are in the uploaded parts already.
	through uint64
}

func newFeed(ctx context.Context, win *window) *feed {
	return &feed{ctx: ctx, ch: make(chan []version, 4), done: make(chan struct{}), batch: make([]version, 0, feedBatch), win: win}
}

// add puts the version read at seq into the window (see window.add for
// id, hid, keyed and seen) and hands the versions that leave it to the
// render, or abandons the feed when the version shows the speculation
// wrong.
func (f *feed) add(seq uint64, data, id []byte, hid idHash, keyed, seen bool) {
	if f.ended {
		return
	}
	if !f.win.add(seq, data, id, hid, keyed, seen) {
		f.abandon()
		return
	}
	for f.win.over() {
		f.send(f.win.pop())
	}
}

func (f *feed) send(v version) {
	if f.batch = append(f.batch, v); len(f.batch) == feedBatch {
		f.flush()
	}
}

func (f *feed) flush() {
	if len(f.batch) == 0 {
		return
	}
	select {
	case f.ch <- f.batch:
	case <-f.done:
	case <-f.ctx.Done():
	}
	f.batch = make([]version, 0, feedBatch)
}

// verify is called by the spool at the end of the read, with its id
// records, before it plans: true means the speculative render is the
// answer and no plan is needed.
func (f *feed) verify(ids *os.File) bool {
	f.verified = !f.ended && f.win.verify(ids)
	return f.verified
}

// unfiltered tells the feed that the spool has no Bloom filters: every
// version's id may have been seen, so the window could only tell a first
// version from a suspect with the whole history, and the plan's counts
// decide (window.resolved).
func (f *feed) unfiltered() { f.win.suspects, f.win.suspectsLost = nil, true }

// abandon ends the feed at once: a republished id was found. The read
// goes on without it.
func (f *feed) abandon() { f.end(errSpeculationFailed) }

// end delivers the rest of the versions, the window's too (only when
// verdict is nil), and the verdict; later calls do nothing.
func (f *feed) end(verdict error) {
	if f.ended {
		return
	}
	if verdict == nil {
		for f.win.n > 0 {
			f.send(f.win.pop())
		}
		f.flush()
	}
	f.win.drop()
	f.verdict, f.ended = verdict, true
	f.batch, f.win = nil, nil
	close(f.ch)
}

// each feeds the versions to fn as spool.each does (the speculation is
// that the window applied every later version), then returns the
// verdict. When fn stops early (the end of the range) each still waits
// for the verdict: a version after the range can change a message in it.
func (f *feed) each(fn func(seq uint64, data []byte, latest uint64) (bool, error)) error {
	defer close(f.done)
	taking := true
	for batch := range f.ch {
		for _, v := range batch {
			if !taking {
				break
			}
			if v.seq <= f.through {
				continue
			}
			more, err := fn(v.seq, v.data, v.latest)
			if err != nil {
				return err
			}
			taking = more
		}
	}
	return f.verdict
}

// speculate reads h's history onto local disk while rendering it into an
// upload of key (continuing cp's, a speculative checkpoint, when not
// nil), and falls back to the planned render from the spool when the
// history holds a republished id (see above). h.spool is set when it
// returns, for the caller to close.
func (e *Exporter) speculate(ctx context.Context, t *taskrun.Task, format Format, meta Meta,
	room *sourcev1.Room, h *history, key string, cp *checkpoint,
) (uploadResult, error) {
	readCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	win := newWindow(cmp.Or(e.opts.windowVersions, windowVersions), cmp.Or(e.opts.windowBytes, windowBytes), e.opts.recentIDs)
	fd := newFeed(readCtx, win)
	if cp != nil {
		fd.through = cp.Seq
	}
	// The ids a resumed checkpoint placed are the window's to find again
	// (and the render's, restored from cp): the spool is the whole
	// history, for the verdict and for a planned render from its start.
	h.emitted = nil
	spooled := make(chan error, 1)
	began := time.Now()
	go func() {
		sp, err := e.spoolHistory(readCtx, h, 0, fd)
		verdict := err
		if err == nil && !fd.verified && !win.resolved(sp.republished, sp.planned) {
			verdict = errSpeculationFailed
		}
		h.spool = sp
		fd.end(verdict)
		spooled <- err
	}()
	res, err := e.upload(ctx, t, format, meta, room, h, key, cp, fd.each, true)
	if err != nil && !errors.Is(err, errSpeculationFailed) {
		cancel(err)
	}
	serr := <-spooled
	abandoned := errors.Is(err, errSpeculationFailed)
	if serr == nil {
		t.Log.DebugContext(ctx, "history spooled", "from_seq", 0, "last_seq", h.lastSeq, "spool_bytes", h.spool.size,
			"planned", h.spool.planned, "filtered", h.spool.filtered, "plan_duration", h.spool.planTook.String(),
			"window_applied", win.applied, "window_verified", fd.verified, "speculative", !abandoned,
			"duration", time.Since(began).String())
	}
	switch {
	case abandoned && serr != nil:
		return uploadResult{}, serr
	case abandoned:
		return e.upload(ctx, t, format, meta, room, h, key, nil, h.spool.each, false)
	}
	return res, err
}

// speculative reports whether cp was saved by a speculative render.
func (cp *checkpoint) speculative() bool {
	return cp != nil && cp.Version == speculativeCheckpointVersion
}
