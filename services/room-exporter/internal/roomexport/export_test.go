package roomexport

// SetTestHooks installs the test seams of o: onReplay sees the stream
// sequence of every chat message the exporter reads (index and export
// passes), afterCheckpoint runs after each saved checkpoint with the
// number of parts it covers and may fail the attempt.
func SetTestHooks(o *Options, onReplay func(seq uint64), afterCheckpoint func(part int) error) {
	o.onReplay, o.afterCheckpoint = onReplay, afterCheckpoint
}
