// Package scalebench measures what a request costs when the projection
// holds many other owners' jobs (issue 13), two ways:
//
//   - The benchmarks (make bench) build the router in process over an
//     embedded NATS server and time each request kind one after the
//     other; DATAPORT_BENCH_JOBS sets how many jobs of other owners fill
//     the projection (default 10,000).
//   - Run (cmd/loadgen, make bench-scale) starts nats-server, MinIO and the
//     built gateway binary as separate processes, fills the projection
//     through the job store's write path to each size, sends each request
//     kind at a fixed rate with vegeta (an open model: a slow answer does
//     not hold the next request back) and reads the gateway's VmRSS and
//     VmHWM, so that figures at 10k, 100k and 1M jobs side by side show
//     whether a request's cost or the gateway's memory grows with them.
//
// Nothing here runs in make test.
package scalebench
