// Package scalebench measures what a request costs when the projection
// holds many other owners' jobs: a user's list in each dialect, a create
// and a poll by id, each against the full router over a real NATS server.
// It has only benchmarks (make bench); DATAPORT_BENCH_JOBS sets how many
// jobs of other owners fill the projection (default 10,000), so runs at
// several sizes show whether a request's cost grows with them.
package scalebench
