package jobstore

// AsPreviousVersion makes a store write as the version before summary
// blocks did: everything but the blocks.
func AsPreviousVersion() Option { return func(s *Store) { s.noBlocks = true } }
