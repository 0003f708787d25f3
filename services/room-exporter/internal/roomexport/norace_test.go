//go:build !race

package roomexport_test

const raceEnabled = false
