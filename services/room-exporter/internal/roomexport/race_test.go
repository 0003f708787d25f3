//go:build race

package roomexport_test

// raceEnabled is true under the race detector, whose instrumentation
// distorts allocation figures and slows large exports tenfold.
const raceEnabled = true
