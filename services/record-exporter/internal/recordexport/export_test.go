package recordexport

// SetTestHooks installs the test seams of o: onRead sees the stream
// sequence of every record read from a stream source, afterCheckpoint
// runs after each saved checkpoint with the number of finished chunks and
// may fail the attempt.
func SetTestHooks(o *Options, onRead func(seq uint64), afterCheckpoint func(chunks int) error) {
	o.onRead, o.afterCheckpoint = onRead, afterCheckpoint
}
