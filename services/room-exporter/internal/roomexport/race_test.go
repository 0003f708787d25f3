//go:build race

package roomexport

// raceEnabled is true under the race detector, whose instrumentation
// distorts allocation figures and slows large exports tenfold.
const raceEnabled = true
