//go:build race

package fs

// raceEnabled: this test binary runs under the race detector, which
// slows every step of a test some tenfold.
const raceEnabled = true
