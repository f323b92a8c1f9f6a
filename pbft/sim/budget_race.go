//go:build race

package sim

// The race detector slows the simulator down about tenfold, so `go test -race` covers fewer seeds (the
// plain run covers 1000): still every fault mix at n=4 and n=7, and every targeted scenario once.
const (
	ciSeeds       = 150
	scenarioSeeds = 1
)
