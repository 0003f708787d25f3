//go:build !race

package roomexport

const raceEnabled = false
