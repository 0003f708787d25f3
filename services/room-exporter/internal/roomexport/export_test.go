package roomexport

import (
	"io"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
)

// SetTestHooks installs the test seams of o: onReplay sees the stream
// sequence of every chat message the exporter reads (index and export
// passes), afterCheckpoint runs after each saved checkpoint with the
// number of parts it covers and may fail the attempt.
func SetTestHooks(o *Options, onReplay func(seq uint64), afterCheckpoint func(part int) error) {
	o.onReplay, o.afterCheckpoint = onReplay, afterCheckpoint
}

// SetSpeculation sets the speculative render's test seams of o: off
// renders every part from the spool after the read; recent, when not
// zero, is the size of the table of recent ids that confirms a
// republished id during the read (1 leaves the verdict to the read's end).
func SetSpeculation(o *Options, off bool, recent int) {
	o.noSpeculation, o.recentIDs = off, recent
}

// SetSpeculationWindow bounds the speculative render's window of versions
// not yet rendered, in which later versions of an id are applied to its
// first, to versions and bytes (the defaults when zero).
func SetSpeculationWindow(o *Options, versions, bytes int) {
	o.windowVersions, o.windowBytes = versions, bytes
}

// SetBloomMaxIDs sets the size of the largest room whose spool builds its
// Bloom filters; a bigger one sorts every id record (spool.go).
func SetBloomMaxIDs(o *Options, n int) { o.bloomMaxIDs = n }

// Pseudonym is how username reads in job's personal download when it is
// someone else's.
func Pseudonym(job, username string) string { return newPseudonyms(job, "").name(username) }

// NewPersonalRenderer is the renderer of a room file in job's personal
// download of self's data, in JSON (lines) or HTML.
func NewPersonalRenderer(w io.Writer, job, self string, json bool) Renderer {
	f := formats()[exportv1.Format_FORMAT_HTML]
	f, _ = personalFormat(f, json, job, self)
	return f.New(w, Meta{})
}

// MaxThreadRoots is how many thread roots an HTML page keeps excerpts of
// for later replies.
const MaxThreadRoots = maxThreadRoots

// RaceEnabled is raceEnabled, for the package's external tests.
const RaceEnabled = raceEnabled
